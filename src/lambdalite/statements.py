"""What a statement does, asked of SQLite rather than guessed from its text.

SQLite compiles every statement to a program; ``EXPLAIN`` returns that program
without running it. A statement writes the main database exactly when its
program opens a write transaction on database 0 (``Transaction 0 P2>0``), which
is what ``sqlite3_stmt_readonly()`` reports. Transaction control shows up as
``AutoCommit`` (BEGIN, COMMIT, ROLLBACK) and ``Savepoint`` (SAVEPOINT, RELEASE,
ROLLBACK TO); schema changes as ``ParseSchema``/``CreateBtree``/``Drop*``. The
answer is cached per statement text, so a statement is classified once.
"""

from __future__ import annotations

import enum
import itertools
import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Kind", "StatementInfo", "classify", "split_script"]

_SCHEMA_OPCODES = frozenset(
    {
        "ParseSchema",
        "CreateBtree",
        "Destroy",
        "DropTable",
        "DropIndex",
        "DropTrigger",
        "SetCookie",
        "IncrVacuum",
        "VCreate",
        "VDestroy",
        "JournalMode",
    }
)
_texts = itertools.count()
_WAL_MODE = 5
_QUERY_MODE = -1


class Kind(enum.Enum):
    READ = "read"  # reads (or writes only TEMP or attached databases)
    DML = "dml"  # writes rows of the main database
    DDL = (
        "ddl"  # writes the main database's schema or header (CREATE, DROP, PRAGMA user_version=...)
    )
    VACUUM = "vacuum"  # rewrites the database and commits by itself; not allowed in a transaction
    BEGIN = "begin"
    COMMIT = "commit"
    ROLLBACK = "rollback"
    SAVEPOINT = "savepoint"
    RELEASE = "release"
    ROLLBACK_TO = "rollback_to"


@dataclass(frozen=True, slots=True)
class StatementInfo:
    kind: Kind
    immediate: bool = False  # BEGIN IMMEDIATE / EXCLUSIVE
    savepoint: str | None = None
    forbidden: str | None = None  # why lambdalite refuses to run it
    renames: bool = False  # changes what names resolve to (DDL on any database, ATTACH, DETACH)
    guarded: bool = False  # not explainable: run with writes to the main database refused
    setting: bool = False  # a PRAGMA that sets up the connection (replayed when it is reopened)
    local: bool = False  # reads nothing of the main database (SELECT 1, connection PRAGMAs)
    reset: str | None = None  # SQL undoing what preparing a forbidden statement already did

    @property
    def writes(self) -> bool:
        return self.kind in (Kind.DML, Kind.DDL, Kind.VACUUM)


def classify(raw: sqlite3.Connection, sql: str, params: Any = ()) -> StatementInfo:
    """Compile ``sql`` with EXPLAIN on ``raw`` and say what it would do."""
    # A fresh text every time keeps the prepared EXPLAIN out of the sqlite3 module's
    # statement cache: SQLite 3.40 can crash when it re-prepares a cached EXPLAIN of an
    # INSERT ... RETURNING after the schema changed (tests/test_statements.py reproduces it).
    try:
        rows = raw.execute(f"/* lambdalite {next(_texts)} */ EXPLAIN {sql}", params).fetchall()
    except sqlite3.OperationalError as exc:
        message = str(exc).lower()
        if 'near "explain"' in message:
            return StatementInfo(Kind.READ)  # the statement is an EXPLAIN itself: never writes
        if "logic error" in message:
            # SQLite cannot explain some statements it can run (PRAGMA temp.* before the
            # connection used its TEMP schema): run them with writes to main refused
            return StatementInfo(Kind.READ, guarded=True)
        raise
    return _from_program(rows)


def _from_program(rows: Sequence[Sequence[Any]]) -> StatementInfo:
    info = _kind_of(rows)
    opcodes = {row[1] for row in rows}
    if info.kind is Kind.READ and not any(r[1] == "Transaction" and r[2] == 0 for r in rows):
        info = replace(info, local=True)  # no snapshot of the main database: no pull needed
    if "Expire" in opcodes and "Transaction" not in opcodes:
        # a PRAGMA acting on the connection only; SQLite applies most of them while
        # preparing the statement, so EXPLAIN itself already did what it says
        if any(row[1] == "String8" and str(row[5]).lower() == "exclusive" for row in rows):
            return StatementInfo(
                Kind.READ,
                forbidden="lambdalite shares the local copy between the connections of a "
                "process and pulls other instances' commits into it, which "
                "PRAGMA locking_mode=EXCLUSIVE would lock out (remove the PRAGMA; the "
                "connection was left in locking_mode=NORMAL)",
                reset="PRAGMA locking_mode=NORMAL",
            )
        info = replace(info, setting=True)
    if any(_renames(row) for row in rows):
        return replace(info, renames=True)
    return info


def _renames(row: Sequence[Any]) -> bool:
    """Whether this instruction can change which table a name means (TEMP shadowing, ATTACH)."""
    if row[1] in _SCHEMA_OPCODES:
        return True
    return row[1] == "Function" and any(n in str(row[5]) for n in ("attach", "detach"))


def _kind_of(rows: Sequence[Sequence[Any]]) -> StatementInfo:
    writes_main = False
    schema = False
    for row in rows:
        opcode, p1, p2, p3 = row[1], row[2], row[3], row[4]
        if opcode == "AutoCommit":
            if p1 == 0:
                return StatementInfo(Kind.BEGIN, immediate=_opens_write(rows))
            return StatementInfo(Kind.ROLLBACK if p2 else Kind.COMMIT)
        if opcode == "Savepoint":
            name = str(row[5]) if row[5] is not None else None
            kind = (Kind.SAVEPOINT, Kind.RELEASE, Kind.ROLLBACK_TO)[p1]
            return StatementInfo(kind, savepoint=name)
        if opcode == "Vacuum":
            if p2 == 0 and p1 == 0:
                return StatementInfo(Kind.VACUUM)
            continue  # VACUUM INTO another file, or of an attached database
        if opcode == "Transaction" and p1 == 0 and p2:
            writes_main = True
        if opcode == "SqlExec":  # runs SQL it builds at run time (PRAGMA optimize): may write
            writes_main = schema = True
        if opcode == "JournalMode" and p1 == 0 and p3 not in (_WAL_MODE, _QUERY_MODE):
            return StatementInfo(
                Kind.DDL,
                forbidden="lambdalite keeps the local copy in WAL mode; changing journal_mode "
                "is not supported (remove the PRAGMA journal_mode statement)",
            )
        if opcode in _SCHEMA_OPCODES and p1 == 0:
            schema = True
    if not writes_main:
        return StatementInfo(Kind.READ)
    return StatementInfo(Kind.DDL if schema else Kind.DML)


def _opens_write(rows: Sequence[Sequence[Any]]) -> bool:
    return any(r[1] == "Transaction" and r[2] == 0 and r[3] for r in rows)


class StatementCache:
    """An LRU of statement text → :class:`StatementInfo` for one connection."""

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._items: OrderedDict[str, StatementInfo] = OrderedDict()

    def get(self, sql: str) -> StatementInfo | None:
        info = self._items.get(sql)
        if info is not None:
            self._items.move_to_end(sql)
        return info

    def put(self, sql: str, info: StatementInfo) -> None:
        self._items[sql] = info
        self._items.move_to_end(sql)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


def split_script(script: str) -> list[str]:
    """Split an SQL script into complete statements (triggers and strings kept whole)."""
    out: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                out.append(buf.strip())
            buf = ""
    rest = buf[:-1].strip()
    if rest and not _only_comments(rest):
        out.append(rest)
    return out


def _only_comments(text: str) -> bool:
    lines = [ln.strip() for ln in text.splitlines()]
    return all(not ln or ln.startswith("--") for ln in lines)
