"""A ``sqlite3``-compatible connection whose commits are published to the remote.

:class:`Connection` looks like :class:`sqlite3.Connection` (``cursor``,
``execute``, ``executemany``, ``executescript``, ``commit``, ``rollback``,
``close``, the context manager, ``row_factory``, ``text_factory``,
``isolation_level``, ``total_changes``, ``in_transaction``,
``create_function`` and friends) and drives a real SQLite connection to the
local copy. It decides the transaction lifecycle itself, statement by
statement, from what SQLite says the statement does (:mod:`lambdalite.statements`):

* outside a transaction, every statement first brings the local copy up to
  date (one conditional GET, or none within ``max_staleness``);
* ``isolation_level`` keeps the ``sqlite3`` module's meaning: with the default
  (``""``, legacy control) a statement that writes rows opens a transaction
  that lasts until ``commit()``, while schema statements and writing PRAGMAs
  commit by themselves; with ``None`` every write outside ``BEGIN`` commits by
  itself;
* ``BEGIN`` takes the snapshot at once; ``BEGIN IMMEDIATE`` (or
  ``transaction_mode="IMMEDIATE"``) also makes the connection the writer;
* ``commit()`` publishes the transaction and raises if that fails
  (:class:`~lambdalite.errors.ConflictError` when another instance committed
  first: the transaction left no trace and can be retried).

This module also serves as a PEP 249 module (``paramstyle``, the exception
classes), so SQLAlchemy and Django can use it where they use ``sqlite3``.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

from lambdalite.errors import ConflictError
from lambdalite.statements import Kind, StatementCache, StatementInfo, classify, split_script

__all__ = ["Connection", "Cursor", "connect"]

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

_tokens = itertools.count(1)
_MAIN_WRITES = frozenset(
    {
        sqlite3.SQLITE_INSERT,
        sqlite3.SQLITE_UPDATE,
        sqlite3.SQLITE_DELETE,
        sqlite3.SQLITE_CREATE_INDEX,
        sqlite3.SQLITE_CREATE_TABLE,
        sqlite3.SQLITE_CREATE_TRIGGER,
        sqlite3.SQLITE_CREATE_VIEW,
        sqlite3.SQLITE_DROP_INDEX,
        sqlite3.SQLITE_DROP_TABLE,
        sqlite3.SQLITE_DROP_TRIGGER,
        sqlite3.SQLITE_DROP_VIEW,
        sqlite3.SQLITE_ALTER_TABLE,
        sqlite3.SQLITE_REINDEX,
        sqlite3.SQLITE_ANALYZE,
        sqlite3.SQLITE_CREATE_VTABLE,
        sqlite3.SQLITE_DROP_VTABLE,
    }
)


class Engine(Protocol):
    """What a :class:`Connection` needs from the mode behind it.

    Implemented by :class:`lambdalite.replica.engine.Replica` (replica mode)
    and :class:`lambdalite.shared_file.SharedFile` (shared-file mode).
    """

    def refresh(self, token: int, *, max_staleness: float, timeout: float) -> None: ...
    def connect_raw(self, **kwargs: object) -> sqlite3.Connection: ...
    def close_raw(self, raw: sqlite3.Connection) -> None: ...
    def begin_statement(self, token: int, timeout: float) -> int | None: ...
    def end_statement(self, token: int, established: int | None) -> None: ...
    def release(self, token: int) -> None: ...
    def snapshot_version(self, raw: sqlite3.Connection) -> int: ...
    def begin_write(self, token: int, snapshot_version: int | None, timeout: float) -> None: ...
    def abort_write(self, token: int) -> None: ...
    def commit_write(
        self, token: int, raw: sqlite3.Connection, timeout: float, *, committed: bool = False
    ) -> None: ...


_VALID_LEVELS = (None, "", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")


class Connection:
    """A connection to the database (see the module docstring)."""

    def __init__(
        self,
        replica: Engine,
        *,
        isolation_level: str | None = "",
        timeout: float = 5.0,
        max_staleness: float = 0.0,
        transaction_mode: str = "DEFERRED",
        detect_types: int = 0,
        check_same_thread: bool = True,
        cached_statements: int = 128,
        sqlite_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self._replica = replica
        self._token = next(_tokens)
        self._timeout = timeout
        self._max_staleness = max_staleness
        self._immediate_default = transaction_mode.upper() in ("IMMEDIATE", "EXCLUSIVE")
        self._raw_kwargs: dict[str, Any] = {
            "timeout": timeout,
            "detect_types": detect_types,
            "check_same_thread": check_same_thread,
            "cached_statements": cached_statements,
            **(sqlite_kwargs or {}),
        }
        self._raw: sqlite3.Connection | None = None
        self._setup: list[Callable[[sqlite3.Connection], None]] = []
        self._isolation_level = _check_level(isolation_level)
        self.row_factory: Any = None
        self._text_factory: Any = str
        self._kinds = StatementCache()
        self._in_txn = False
        self._writing = False
        self._savepoint_txn = False
        self._savepoints: list[str] = []
        self._snapshot_version: int | None = None
        self._active: set[int] = set()
        self._closed = False
        self._authorizer: Any = None

    # ------------------------------------------------------------------ properties

    @property
    def isolation_level(self) -> str | None:
        return self._isolation_level

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        level = _check_level(value)
        if level is None and self._in_txn:
            self.commit()
        self._isolation_level = level

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    @property
    def total_changes(self) -> int:
        return self._raw.total_changes if self._raw is not None else 0

    @property
    def text_factory(self) -> Any:
        return self._text_factory

    @text_factory.setter
    def text_factory(self, value: Any) -> None:
        self._text_factory = value
        self._configure(lambda raw: setattr(raw, "text_factory", value))

    @property
    def replica(self) -> Any:
        """The engine behind this connection (in replica mode: statistics, version)."""
        return self._replica

    # ------------------------------------------------------------------ raw connection

    def _configure(self, step: Callable[[sqlite3.Connection], None]) -> None:
        self._check_open()
        self._setup.append(step)
        if self._raw is not None:
            step(self._raw)

    def _ensure_raw(self) -> sqlite3.Connection:
        if self._raw is None:
            raw = self._replica.connect_raw(**self._raw_kwargs)
            try:
                for step in self._setup:
                    step(raw)
            except BaseException:
                self._replica.close_raw(raw)
                raise
            self._raw = raw
        return self._raw

    def create_function(
        self, name: str, narg: int, func: Any, *, deterministic: bool = False
    ) -> None:
        self._configure(
            lambda raw: raw.create_function(name, narg, func, deterministic=deterministic)
        )

    def create_aggregate(self, name: str, n_arg: int, aggregate_class: Any) -> None:
        self._configure(lambda raw: raw.create_aggregate(name, n_arg, aggregate_class))

    def create_window_function(self, name: str, num_params: int, aggregate_class: Any) -> None:
        self._configure(lambda raw: raw.create_window_function(name, num_params, aggregate_class))

    def create_collation(self, name: str, callable: Any) -> None:
        self._configure(lambda raw: raw.create_collation(name, callable))

    def set_authorizer(self, authorizer_callback: Any) -> None:
        self._authorizer = authorizer_callback
        self._configure(lambda raw: raw.set_authorizer(authorizer_callback))

    def set_progress_handler(self, progress_handler: Any, n: int) -> None:
        self._configure(lambda raw: raw.set_progress_handler(progress_handler, n))

    def set_trace_callback(self, trace_callback: Any) -> None:
        self._configure(lambda raw: raw.set_trace_callback(trace_callback))

    def getlimit(self, category: int, /) -> int:
        """Like :meth:`sqlite3.Connection.getlimit` (the limits of the local SQLite)."""
        return self._ensure_raw().getlimit(category)

    def setlimit(self, category: int, limit: int, /) -> int:
        """Like :meth:`sqlite3.Connection.setlimit`; the old limit is returned."""
        old = self.getlimit(category)

        def apply(raw: sqlite3.Connection) -> None:
            raw.setlimit(category, limit)

        self._configure(apply)
        return old

    def interrupt(self) -> None:
        if self._raw is not None:
            self._raw.interrupt()

    # ------------------------------------------------------------------ DB-API

    def cursor(self, factory: Any = None) -> Cursor:
        self._check_open()
        cur: Cursor = (factory or Cursor)(self)
        cur.row_factory = self.row_factory
        return cur

    def execute(self, sql: str, parameters: Any = (), /) -> Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor:
        return self.cursor().executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> Cursor:
        return self.cursor().executescript(sql_script)

    def commit(self) -> None:
        self._check_open()
        if not self._in_txn:
            return
        raw = self._ensure_raw()
        try:
            if self._writing:
                self._replica.commit_write(self._token, raw, self._timeout)
            elif raw.in_transaction:
                raw.execute("COMMIT")
        except BaseException:
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            raise
        finally:
            self._end_txn()

    def rollback(self) -> None:
        self._check_open()
        if not self._in_txn:
            return
        try:
            if self._raw is not None and self._raw.in_transaction:
                self._raw.execute("ROLLBACK")
        finally:
            if self._writing:
                self._replica.abort_write(self._token)
            self._end_txn()

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._in_txn:
                self.rollback()
        finally:
            self._closed = True
            self._active.clear()
            self._replica.release(self._token)
            if self._raw is not None:
                self._replica.close_raw(self._raw)
                self._raw = None

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def backup(self, target: sqlite3.Connection, **kwargs: Any) -> None:
        """Copy the database (as of now) into ``target``, like :meth:`sqlite3.Connection.backup`."""
        self._refresh()
        raw = self._ensure_raw()
        established = self._replica.begin_statement(self._token, self._timeout)
        try:
            raw.backup(target, **kwargs)
        finally:
            self._replica.end_statement(self._token, established)
            self._maybe_release()

    def serialize(self, *, name: str = "main") -> bytes:
        self._refresh()
        raw = self._ensure_raw()
        established = self._replica.begin_statement(self._token, self._timeout)
        try:
            return raw.serialize(name=name)
        finally:
            self._replica.end_statement(self._token, established)
            self._maybe_release()

    # ------------------------------------------------------------------ the statement path

    def _check_open(self) -> None:
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")

    def _refresh(self) -> None:
        if not self._in_txn and not self._active:
            self._replica.refresh(
                self._token, max_staleness=self._max_staleness, timeout=self._timeout
            )

    def _info(self, raw: sqlite3.Connection, sql: str, params: Any) -> StatementInfo:
        info = self._kinds.get(sql)
        if info is None:
            info = classify(raw, sql, params)
            self._kinds.put(sql, info)
        if info.forbidden:
            raise sqlite3.OperationalError(info.forbidden)
        return info

    def _run(self, cursor: Cursor, sql: str, params: Any, many: bool) -> list[Any] | None:
        """Execute one statement for ``cursor`` with the right transaction around it.

        Returns the statement's rows when they had to be read before returning
        (a write that commits by itself, such as ``INSERT … RETURNING`` in
        autocommit mode: SQLite cannot commit while a statement is active).
        """
        self._check_open()
        self._refresh()
        raw = self._ensure_raw()
        first = params
        if many:
            params = list(params)
            if not params:
                return None
            first = params[0]
        info = self._info(raw, sql, first)
        try:
            with self._guarded(raw, info.guarded):
                return self._dispatch(cursor._make_raw(), sql, params, many, info)
        finally:
            if info.renames:
                # names may resolve elsewhere now (a TEMP table shadowing a main one):
                # classify every statement again
                self._kinds.clear()

    def _dispatch(
        self, cur: sqlite3.Cursor, sql: str, params: Any, many: bool, info: StatementInfo
    ) -> list[Any] | None:
        kind = info.kind
        if kind is Kind.COMMIT:
            self.commit()
            return None
        if kind is Kind.ROLLBACK:
            self.rollback()
            return None
        if kind is Kind.BEGIN:
            if self._in_txn:
                raise sqlite3.OperationalError("cannot start a transaction within a transaction")
            self._begin(write=info.immediate or self._immediate_default, sql=sql)
            return None
        if kind is Kind.SAVEPOINT:
            if not self._in_txn:
                self._begin(write=self._immediate_default, sql=None)
                self._savepoint_txn = True
            self._exec(cur, sql, params, many)
            self._savepoints.append((info.savepoint or "").lower())
            return None
        if kind is Kind.RELEASE:
            self._release_savepoint(cur, sql, params, info.savepoint)
            return None
        if kind is Kind.ROLLBACK_TO:
            self._exec(cur, sql, params, many)
            name = (info.savepoint or "").lower()
            if name in self._savepoints:
                del self._savepoints[self._savepoints.index(name) + 1 :]
            return None
        if kind is Kind.VACUUM:
            self._vacuum(cur, sql)
            return None
        if self._in_txn:
            if info.writes and not self._writing:
                self._become_writer()
            self._exec(cur, sql, params, many)
            return None
        if not info.writes:
            self._autocommit_read(cur, sql, params, many)
            return None
        if self._isolation_level is not None and kind is Kind.DML:
            self._begin(write=True, sql=None)  # the sqlite3 module's implicit BEGIN
            self._exec_or_rollback(cur, sql, params, many)
            return None
        self._begin(write=True, sql=None)
        self._exec_or_rollback(cur, sql, params, many)
        rows = None
        if cur.description is not None:
            try:
                rows = cur.fetchall()  # RETURNING: read the rows before the commit
            except BaseException:
                self.rollback()
                raise
        self.commit()
        return rows

    def _exec(self, cur: sqlite3.Cursor, sql: str, params: Any, many: bool) -> None:
        try:
            if many:
                cur.executemany(sql, params)
            else:
                cur.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if "database is locked" in str(exc) and self._writing:
                raise ConflictError(
                    "the local copy moved on under this transaction; retry it"
                ) from exc
            raise

    def _exec_or_rollback(self, cur: sqlite3.Cursor, sql: str, params: Any, many: bool) -> None:
        try:
            self._exec(cur, sql, params, many)
        except BaseException:
            if self._isolation_level is None or not self._in_txn:
                self.rollback()
            raise

    @contextlib.contextmanager
    def _guarded(self, raw: sqlite3.Connection, on: bool) -> Iterator[None]:
        """Refuse writes to the main database while a statement SQLite cannot explain runs."""
        if not on:
            yield
            return
        user = self._authorizer

        def deny_main_writes(action: int, a1: Any, a2: Any, db: Any, trig: Any) -> int:
            if action in _MAIN_WRITES and db in (None, "main"):
                return sqlite3.SQLITE_DENY
            return user(action, a1, a2, db, trig) if user is not None else sqlite3.SQLITE_OK

        raw.set_authorizer(deny_main_writes)
        try:
            yield
        finally:
            raw.set_authorizer(user)

    def _autocommit_read(self, cur: sqlite3.Cursor, sql: str, params: Any, many: bool) -> None:
        established = self._replica.begin_statement(self._token, self._timeout)
        try:
            self._exec(cur, sql, params, many)
        finally:
            self._replica.end_statement(self._token, established)

    def _begin(self, *, write: bool, sql: str | None) -> None:
        raw = self._ensure_raw()
        if write:
            # Become the writer before taking the snapshot, so that a writer never
            # waits for the mutex while counted as a statement starting.
            self._replica.begin_write(self._token, None, self._timeout)
            self._writing = True
        try:
            established = self._replica.begin_statement(self._token, self._timeout)
        except BaseException:
            self._abort_writer()
            raise
        try:
            try:
                raw.execute("BEGIN IMMEDIATE" if write else (sql or "BEGIN"))
                raw.execute("PRAGMA schema_version").fetchone()  # take the snapshot now
                self._snapshot_version = self._replica.snapshot_version(raw)
            except BaseException:
                if raw.in_transaction:
                    raw.execute("ROLLBACK")
                self._abort_writer()
                raise
            self._in_txn = True
        finally:
            self._replica.end_statement(self._token, established)
            if not self._in_txn:
                self._maybe_release()

    def _abort_writer(self) -> None:
        if self._writing:
            self._replica.abort_write(self._token)
            self._writing = False

    def _become_writer(self) -> None:
        """The first write of an open transaction. A ConflictError here (another instance
        committed since this transaction read) dooms the transaction: it is rolled back, so
        the connection is ready for the retry, as after a conflict at commit."""
        assert self._snapshot_version is not None
        try:
            self._replica.begin_write(self._token, self._snapshot_version, self._timeout)
        except ConflictError:
            self.rollback()
            raise
        self._writing = True

    def _release_savepoint(
        self, cur: sqlite3.Cursor, sql: str, params: Any, name: str | None
    ) -> None:
        key = (name or "").lower()
        if self._savepoint_txn and self._savepoints and self._savepoints[0] == key:
            self.commit()  # releasing the outermost savepoint ends the transaction
            return
        self._exec(cur, sql, params, False)
        if key in self._savepoints:
            del self._savepoints[self._savepoints.index(key) :]

    def _vacuum(self, cur: sqlite3.Cursor, sql: str) -> None:
        if self._in_txn:
            raise sqlite3.OperationalError("cannot VACUUM from within a transaction")
        self._ensure_raw()
        self._replica.begin_write(self._token, None, self._timeout)
        self._in_txn = self._writing = True
        try:
            established = self._replica.begin_statement(self._token, self._timeout)
            try:
                cur.execute(sql)
            finally:
                self._replica.end_statement(self._token, established)
            self._replica.commit_write(
                self._token, self._ensure_raw(), self._timeout, committed=True
            )
            self._writing = False
        finally:
            self._abort_writer()
            self._end_txn()

    def _end_txn(self) -> None:
        self._in_txn = False
        self._writing = False
        self._savepoint_txn = False
        self._savepoints.clear()
        self._maybe_release()

    def _maybe_release(self) -> None:
        if not self._in_txn and not self._active:
            self._replica.release(self._token)

    def _cursor_active(self, cid: int, active: bool) -> None:
        if active:
            self._active.add(cid)
        else:
            self._active.discard(cid)
            self._maybe_release()

    def _executescript(self, cursor: Cursor, script: str) -> None:
        """Run a script as one transaction unless it manages transactions itself."""
        self._check_open()
        self.commit()
        statements = split_script(script)
        own_txn = False
        try:
            for sql in statements:
                self._refresh()
                info = self._info(self._ensure_raw(), sql, ())
                if info.writes and not self._in_txn and info.kind is not Kind.VACUUM:
                    self._begin(write=True, sql=None)
                    own_txn = True
                self._dispatch(cursor._make_raw(), sql, (), False, info)
            if own_txn and self._in_txn:
                self.commit()
        except BaseException:
            if own_txn and self._in_txn:
                self.rollback()
            raise


class Cursor:
    """A cursor of a :class:`Connection` (the ``sqlite3.Cursor`` interface)."""

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
        except BaseException:
            self._set_active(False)
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
        finally:
            self._set_active(False)
        return self

    def executescript(self, sql_script: str, /) -> Cursor:
        self._start()
        try:
            self._conn._executescript(self, sql_script)
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


def _cursor_gone(conn_ref: weakref.ref[Connection], cid: int) -> None:
    conn = conn_ref()
    if conn is not None and not conn._closed:
        conn._cursor_active(cid, False)


def _check_level(value: str | None) -> str | None:
    if value is not None and value.upper() not in _VALID_LEVELS:
        raise sqlite3.ProgrammingError(
            "isolation_level must be None, '', 'DEFERRED', 'IMMEDIATE' or 'EXCLUSIVE', "
            f"not {value!r}"
        )
    return value


def connect(target: Any, **kwargs: Any) -> Connection:
    """PEP 249 ``connect``: the same as :func:`lambdalite.connect`."""
    import lambdalite

    return lambdalite.connect(target, **kwargs)
