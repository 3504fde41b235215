"""The cursor of a lambdalite connection (the ``sqlite3.Cursor`` interface).

A cursor runs its statements through its :class:`~lambdalite.connection.Connection`,
which decides the transaction around each one. A cursor with rows left to
fetch keeps a snapshot of the local copy open (it is *active*): the engine
does not write pulled pages under it. One row is read ahead after each
statement to know whether any are left.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from lambdalite.errors import ConflictError
from lambdalite.scope import current_scope

if TYPE_CHECKING:
    from lambdalite.connection import Connection

__all__ = ["Cursor"]


class Cursor:
    """A cursor of a :class:`~lambdalite.connection.Connection`."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection
        self._raw: sqlite3.Cursor | None = None
        self.arraysize = 1
        self.row_factory: Any = None
        self._buffer: list[Any] = []
        self._closed = False
        self._closed_counts: tuple[int, int | None] = (-1, None)
        cid = id(self)
        conn_ref = weakref.ref(connection)
        self._finalizer = weakref.finalize(self, _cursor_gone, conn_ref, cid)

    @property
    def connection(self) -> Connection:
        return self._conn

    @property
    def description(self) -> Any:
        return self._raw.description if self._raw is not None else None

    @property
    def rowcount(self) -> int:
        return self._raw.rowcount if self._raw is not None else self._closed_counts[0]

    @property
    def lastrowid(self) -> int | None:
        return self._raw.lastrowid if self._raw is not None else self._closed_counts[1]

    def _make_raw(self) -> sqlite3.Cursor:
        """A fresh SQLite cursor for the next statement (the connection is open by now)."""
        if self._raw is not None:
            self._raw.close()
        raw = self._conn._ensure_raw().cursor()
        raw.row_factory = self.row_factory
        self._raw = raw
        return raw

    def _start(self) -> None:
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed cursor.")
        self._conn._check_open()
        self._set_active(False)
        self._buffer = []
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def _after(self) -> None:
        """After a statement: a cursor with rows left keeps its snapshot, others let go."""
        raw = self._raw
        row = raw.fetchone() if raw is not None and raw.description is not None else None
        if row is not None:
            self._buffer.append(row)  # looked ahead
        self._set_active(row is not None)

    def _set_active(self, active: bool) -> None:
        self._conn._cursor_active(id(self), active)

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        self._start()
        try:
            rows = self._conn._run(self, sql, parameters, many=False)
        except BaseException as exc:
            self._set_active(False)
            note_conflict(exc)
            raise
        if rows is not None:
            self._buffer = rows  # already read: the statement holds no snapshot
            self._set_active(False)
        else:
            self._after()
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> Cursor:
        self._start()
        try:
            self._conn._run(self, sql, seq_of_parameters, many=True)
        except BaseException as exc:
            note_conflict(exc)
            raise
        finally:
            self._set_active(False)
        return self

    def executescript(self, sql_script: str, /) -> Cursor:
        self._start()
        try:
            self._conn._executescript(self, sql_script)
        except BaseException as exc:
            note_conflict(exc)
            raise
        finally:
            self._set_active(False)
        return self

    def fetchone(self) -> Any:
        if self._buffer:
            row = self._buffer.pop(0)
            if self._raw is not None:
                nxt = self._raw.fetchone()
                if nxt is None:
                    self._set_active(False)
                else:
                    self._buffer.append(nxt)
            return row
        if self._raw is None:
            return None
        row = self._raw.fetchone()
        if row is None:
            self._set_active(False)
        return row

    def fetchmany(self, size: int | None = None) -> list[Any]:
        n = self.arraysize if size is None else size
        out = []
        for _ in range(n):
            row = self.fetchone()
            if row is None:
                break
            out.append(row)
        return out

    def fetchall(self) -> list[Any]:
        out = list(self._buffer)
        self._buffer = []
        if self._raw is not None:
            out.extend(self._raw.fetchall())
        self._set_active(False)
        return out

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        if self._raw is not None:
            self._closed_counts = (self._raw.rowcount, self._raw.lastrowid)  # sqlite3 keeps them
            self._raw.close()
            self._raw = None
        self._buffer = []
        self._closed = True
        self._set_active(False)

    def setinputsizes(self, sizes: Sequence[Any]) -> None:
        pass

    def setoutputsize(self, size: int, column: int | None = None) -> None:
        pass


def note_conflict(exc: BaseException) -> None:
    """Count a ConflictError in the request being served (the retry middlewares read it)."""
    if isinstance(exc, ConflictError):
        scope = current_scope()
        if scope is not None:
            scope.conflicts += 1


def _cursor_gone(conn_ref: weakref.ref[Connection], cid: int) -> None:
    conn = conn_ref()
    if conn is not None and not conn._closed:
        conn._cursor_active(cid, False)
