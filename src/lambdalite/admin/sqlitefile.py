"""Local SQLite files: recognise them, check them, switch their journal format.

Byte 18 and 19 of a SQLite header are the file format write and read
versions: 1 for a rollback-journal database, 2 for WAL. Everything the remote
stores is a local copy in WAL mode (2), so an image leaving lambdalite is set
to 1 (a plain ``sqlite3`` then opens it without looking for a ``-wal`` file),
and a database coming in is set to WAL first.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from typing import Literal

from lambdalite.errors import LambdaliteError

__all__ = [
    "SQLITE_MAGIC",
    "NotADatabaseError",
    "copy_for_import",
    "integrity_check",
    "page_size_of",
    "set_journal_format",
]

SQLITE_MAGIC = b"SQLite format 3\0"
_FORMAT_BYTES = {"rollback": b"\x01\x01", "wal": b"\x02\x02"}
_HEADER = 100


class NotADatabaseError(LambdaliteError, ValueError):
    """The file is not a healthy SQLite database (foreign, empty, or failing integrity_check)."""


def _uri(path: str, **params: str) -> str:
    query = urllib.parse.urlencode(params)
    return f"file:{urllib.parse.quote(os.path.abspath(path))}?{query}"


def page_size_of(path: str) -> int:
    """The page size in the header of database file ``path``."""
    with open(path, "rb") as f:
        header = f.read(_HEADER)
    if len(header) < _HEADER or not header.startswith(SQLITE_MAGIC):
        raise NotADatabaseError(f"{path} is not a SQLite database (no SQLite header)")
    size = int.from_bytes(header[16:18], "big")
    return 65536 if size == 1 else size


def set_journal_format(path: str, mode: Literal["rollback", "wal"]) -> None:
    """Set the header's format bytes (18, 19) of a closed database file with no ``-wal``."""
    page_size_of(path)  # refuses a file that is not a database
    with open(path, "r+b") as f:
        f.seek(18)
        f.write(_FORMAT_BYTES[mode])
        f.flush()
        os.fsync(f.fileno())


def integrity_check(path: str) -> list[str]:
    """``PRAGMA integrity_check`` of a closed database file, read-only: ``["ok"]`` when healthy.

    The file is opened ``immutable`` so nothing (no ``-wal``, no ``-shm``) is created next to it.
    """
    conn = sqlite3.connect(_uri(path, mode="ro", immutable="1"), uri=True)
    try:
        return [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def copy_for_import(src: str, dest: str) -> int:
    """Copy database ``src`` into a new WAL-format file ``dest``, checked; its page size.

    The copy goes through SQLite's backup API, so a source in WAL mode is read with
    its ``-wal`` (the committed state, as a checkpoint would give) and the source is
    never modified. Refuses (:class:`NotADatabaseError`) a file without a SQLite
    header, an empty one, or one whose ``PRAGMA integrity_check`` is not ``ok``.
    """
    if not os.path.isfile(src):
        raise FileNotFoundError(f"no such file: {src}")
    if os.path.getsize(src) == 0:
        raise NotADatabaseError(f"{src} is empty: there is no database to import")
    page_size_of(src)
    try:
        source = sqlite3.connect(_uri(src, mode="ro"), uri=True)
        try:
            target = sqlite3.connect(dest, isolation_level=None)
            try:
                source.backup(target)
            finally:
                target.close()
        finally:
            source.close()
        problems = integrity_check(dest)
        if problems != ["ok"]:
            shown = "; ".join(problems[:5])
            raise NotADatabaseError(f"{src} fails PRAGMA integrity_check: {shown}")
        target = sqlite3.connect(dest, isolation_level=None)
        try:  # closing the only connection checkpoints and removes the -wal
            mode = target.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
        finally:
            target.close()
    except sqlite3.DatabaseError as exc:
        raise NotADatabaseError(f"{src} is not a readable SQLite database: {exc}") from exc
    if str(mode).lower() != "wal":
        raise NotADatabaseError(f"{src}: its copy could not switch to WAL ({mode})")
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            if suffix == "-shm" or os.path.getsize(dest + suffix) == 0:
                os.unlink(dest + suffix)
    if os.path.exists(dest + "-wal"):
        raise NotADatabaseError(f"{src}: the copy kept a non-empty WAL after its checkpoint")
    page_size = page_size_of(dest)
    with open(dest, "rb") as f:
        if f.read(_HEADER)[18:20] != _FORMAT_BYTES["wal"]:
            raise NotADatabaseError(f"{src}: the copy is not in WAL format")
    if os.path.getsize(dest) % page_size:
        raise NotADatabaseError(f"{src}: the copy is not a whole number of pages")
    return page_size
