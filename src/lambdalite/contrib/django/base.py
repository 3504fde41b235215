"""The Django database backend: Django's SQLite backend on a lambdalite connection.

:class:`DatabaseWrapper` subclasses ``django.db.backends.sqlite3.base.DatabaseWrapper`` and
overrides only the hooks that open the connection and its cursors; SQL generation,
introspection, the schema editor and transaction handling are Django's own (``vendor`` stays
``"sqlite"``, so everything that checks for SQLite keeps working). The DB-API module is
:mod:`lambdalite.dbapi`, whose exceptions are ``sqlite3``'s: Django wraps lambdalite's
:class:`~lambdalite.errors.ConflictError`, ``StorageError`` and ``LockError`` (all
``sqlite3.OperationalError``) into ``django.db.utils.OperationalError``, with the original as
``__cause__``.

Nothing happens at import or construction: the settings are read and checked when the first
connection opens (or by ``manage.py check``), and the remote is first contacted by the first
statement. ``settings.DATABASES`` is never changed. See ``docs/django.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from itertools import tee
from typing import Any, ClassVar

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.sqlite3 import base as sqlite_base
from django.db.backends.sqlite3 import features as sqlite_features
from django.db.backends.sqlite3._functions import register as register_functions
from django.utils.asyncio import async_unsafe

import lambdalite
from lambdalite import dbapi
from lambdalite.contrib.django.config import Flavor, Resolved, resolve
from lambdalite.contrib.django.creation import DatabaseCreation
from lambdalite.contrib.django.middleware import connect_request_signals
from lambdalite.errors import ConfigurationError

__all__ = ["DatabaseFeatures", "DatabaseWrapper", "LambdaliteCursorWrapper"]

log = logging.getLogger("lambdalite.contrib.django")


class LambdaliteCursorWrapper(dbapi.Cursor):
    """Django's ``SQLiteCursorWrapper`` for a lambdalite cursor: ``%s``/``%(name)s`` parameters
    become ``?``/``:name`` (the conversion is Django's own ``convert_query``)."""

    convert_query = sqlite_base.SQLiteCursorWrapper.convert_query

    def execute(self, query: str, params: Any = None, /) -> LambdaliteCursorWrapper:
        if params is None:
            sql, params = query, ()
        else:
            names = list(params) if isinstance(params, Mapping) else None
            sql = self.convert_query(query, param_names=names)
        super().execute(sql, params)
        return self

    def executemany(self, query: str, param_list: Iterable[Any], /) -> LambdaliteCursorWrapper:
        peek, param_list = tee(iter(param_list))
        first = next(peek, None)
        names = list(first) if first and isinstance(first, Mapping) else None
        super().executemany(self.convert_query(query, param_names=names), param_list)
        return self


class DatabaseFeatures(sqlite_features.DatabaseFeatures):  # type: ignore[misc]
    # The test database is a real database (not ``:memory:``): other connections and threads
    # (LiveServerTestCase) may open it.
    test_db_allows_multiple_connections = True


class DatabaseWrapper(sqlite_base.DatabaseWrapper):  # type: ignore[misc]
    """``ENGINE = "lambdalite.contrib.django"`` (see ``docs/django.md``)."""

    vendor = "sqlite"
    Database = dbapi
    creation_class = DatabaseCreation
    features_class = DatabaseFeatures
    #: How NAME and the legacy keys are read: "lambdalite" (everything), "s3sqlite" (BUCKET
    #: required) or "efs" (an absolute path and a DynamoDB lock required).
    flavor: ClassVar[Flavor] = "lambdalite"

    def lambdalite_resolve(self, name: object | None = None) -> Resolved:
        """This database's target and options (with ``NAME`` replaced by ``name`` if given);
        no I/O. Raises ``ImproperlyConfigured`` naming the bad setting."""
        entry: Mapping[str, Any] = self.settings_dict
        if name is not None:
            entry = {**entry, "NAME": name}
        options = dict(entry.get("OPTIONS") or {})
        for key in ("init_command", "transaction_mode"):  # Django's own: checked by Django
            options.pop(key, None)
        return resolve(
            self.alias,
            entry,
            options,
            flavor=self.flavor,
            django_settings=django_settings if django_settings.configured else None,
        )

    def get_connection_params(self) -> dict[str, Any]:
        # Django checks transaction_mode and takes init_command (and NAME's presence); what it
        # returns is a new dict (the OPTIONS mapping itself is never changed).
        params: dict[str, Any] = super().get_connection_params()
        name = params.pop("database")
        for key in ("uri", "check_same_thread"):  # Django's: uri=True, check_same_thread=False
            params.pop(key, None)
        resolved = resolve(
            self.alias,
            {**self.settings_dict, "NAME": name},
            params,
            flavor=self.flavor,
            django_settings=django_settings if django_settings.configured else None,
        )
        # detect_types: Django's default or the user's; thread sharing is checked by Django.
        return {**resolved.connect_params(), "check_same_thread": False}

    @async_unsafe  # type: ignore[untyped-decorator]
    def get_new_connection(self, conn_params: dict[str, Any]) -> dbapi.Connection:
        # Django's own get_new_connection() calls sqlite3.connect() by name, so it is repeated
        # here with lambdalite.connect(): same functions, same PRAGMAs, same init_command.
        params = dict(conn_params)
        target = params.pop("target")
        connect_request_signals()  # one freshness check per request, middleware or not
        try:
            conn = lambdalite.connect(target, isolation_level=None, **params)
        except ConfigurationError as exc:
            raise ImproperlyConfigured(
                f"settings.DATABASES[{self.alias!r}]: {exc}"
            ) from exc
        try:
            register_functions(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA legacy_alter_table = OFF")
            for init_command in self.init_commands:
                if init_command := init_command.strip():
                    conn.execute(init_command)
        except BaseException:
            conn.close()
            raise
        log.debug("connected %r to %s", self.alias, target)
        return conn

    def create_cursor(self, name: str | None = None) -> LambdaliteCursorWrapper:
        cursor: LambdaliteCursorWrapper = self.connection.cursor(factory=LambdaliteCursorWrapper)
        return cursor

    def is_usable(self) -> bool:
        # Django's SQLite backend always says True; a closed lambdalite connection says no.
        try:
            self.connection.cursor().close()
        except dbapi.Error:
            return False
        return True

    def is_in_memory_db(self) -> bool:
        return False

