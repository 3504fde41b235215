"""lambdalite as a PEP 249 module: the ``sqlite3`` module's interface, lambdalite's connections.

SQLAlchemy and Django use this module where they would use ``sqlite3``:
``paramstyle``, the exception classes (``sqlite3``'s own, so every lambdalite
error that a database call raises is a ``sqlite3.OperationalError``), the type
constructors, and :func:`connect`. The connection itself is
:class:`lambdalite.connection.Connection` (its module docstring explains how
transactions work), the cursor :class:`lambdalite.cursor.Cursor`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from lambdalite.connection import LEGACY_TRANSACTION_CONTROL, Connection, Engine
from lambdalite.cursor import Cursor

__all__ = ["LEGACY_TRANSACTION_CONTROL", "Connection", "Cursor", "Engine", "connect"]

# PEP 249 module interface, the same as sqlite3's.
apilevel = "2.0"
threadsafety = 1
paramstyle = "qmark"
sqlite_version = sqlite3.sqlite_version
sqlite_version_info = sqlite3.sqlite_version_info
Binary = sqlite3.Binary
Date = sqlite3.Date
Time = sqlite3.Time
Timestamp = sqlite3.Timestamp  # type: ignore[attr-defined]
DateFromTicks = sqlite3.DateFromTicks
TimeFromTicks = sqlite3.TimeFromTicks
TimestampFromTicks = sqlite3.TimestampFromTicks
PARSE_DECLTYPES = sqlite3.PARSE_DECLTYPES
PARSE_COLNAMES = sqlite3.PARSE_COLNAMES
Warning = sqlite3.Warning
Error = sqlite3.Error
InterfaceError = sqlite3.InterfaceError
DatabaseError = sqlite3.DatabaseError
DataError = sqlite3.DataError
OperationalError = sqlite3.OperationalError
IntegrityError = sqlite3.IntegrityError
InternalError = sqlite3.InternalError
ProgrammingError = sqlite3.ProgrammingError
NotSupportedError = sqlite3.NotSupportedError
register_adapter = sqlite3.register_adapter
register_converter = sqlite3.register_converter
complete_statement = sqlite3.complete_statement


def connect(target: Any, **kwargs: Any) -> Connection:
    """PEP 249 ``connect``: the same as :func:`lambdalite.connect`."""
    import lambdalite

    return lambdalite.connect(target, **kwargs)
