"""A ``sqlite3``-compatible connection whose commits are published to the remote.

:class:`Connection` looks like :class:`sqlite3.Connection` and drives a real
SQLite connection to the local copy (the *raw* connection). It decides the
transaction lifecycle itself, statement by statement, from what SQLite says
the statement does (:mod:`lambdalite.statements`):

* outside a transaction, every statement first brings the local copy up to
  date (one conditional GET, or none within ``max_staleness``);
* ``isolation_level`` keeps the ``sqlite3`` module's meaning: with the default
  (``""``, legacy control) a statement that writes rows opens a transaction
  that lasts until ``commit()``, while schema statements and writing PRAGMAs
  commit by themselves; with ``None`` every write outside ``BEGIN`` commits by
  itself;
* ``autocommit`` is PEP 249's, as in Python 3.12's ``sqlite3``, on every
  Python: ``True`` (SQLite's autocommit mode, ``commit()`` and ``rollback()``
  do nothing), ``False`` (a transaction is always open: a new one begins after
  ``commit()`` and ``rollback()``, deferred until the next statement), or
  :data:`LEGACY_TRANSACTION_CONTROL` (the default: ``isolation_level`` rules);
* ``BEGIN`` takes the snapshot at once; ``BEGIN IMMEDIATE`` (or
  ``transaction_mode="IMMEDIATE"``) also makes the connection the writer;
* ``commit()`` publishes the transaction and raises if that fails
  (:class:`~lambdalite.errors.ConflictError` when another instance committed
  first: the transaction left no trace and can be retried).

SQLite can end a transaction by itself (``INSERT OR ROLLBACK``, a trigger's
``RAISE(ROLLBACK, …)``, an interrupt): after every statement in a transaction
the connection asks SQLite whether it is still in one, and if not, ends its own
transaction as a rollback, exactly as stock ``sqlite3`` leaves it.

A connection survives what happens to the process under it: after ``fork()``
it moves to the child's own local copy (the parent's raw connection is left
untouched), and when the local copy was discarded (see
:mod:`lambdalite.replica.heal`) it reopens its raw connection before its next
statement outside a transaction, replaying its settings (functions,
collations, factories and the ``PRAGMA`` settings it ran).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from lambdalite.cursor import Cursor, note_conflict
from lambdalite.errors import ConflictError
from lambdalite.statements import Kind, StatementCache, StatementInfo, classify, split_script

if TYPE_CHECKING:
    pass

__all__ = ["LEGACY_TRANSACTION_CONTROL", "Connection", "Engine"]

log = logging.getLogger("lambdalite.connection")

LEGACY_TRANSACTION_CONTROL = -1
"""``autocommit`` value: transactions follow ``isolation_level`` (the default), as in sqlite3."""

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
_VALID_LEVELS = (None, "", "DEFERRED", "IMMEDIATE", "EXCLUSIVE")
_MAX_SETTINGS = 64  # PRAGMA settings remembered for a reopen

_forks = 0  # bumped in a forked child: connections notice and move to the child's engine
_inherited: list[sqlite3.Connection] = []  # the parent's raw connections: never used nor closed


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class Engine(Protocol):
    """What a :class:`Connection` needs from the mode behind it.

    Implemented by :class:`lambdalite.replica.engine.Replica` (replica mode)
    and :class:`lambdalite.shared_file.SharedFile` (shared-file mode).
    """

    @property
    def raw_generation(self) -> int: ...
    def for_this_process(self) -> Engine: ...
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
        autocommit: bool | int = LEGACY_TRANSACTION_CONTROL,
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
        self._raw_gen = -1
        self._forks = _forks
        self._setup: list[Callable[[sqlite3.Connection], None]] = []
        self._settings: dict[str, None] = {}  # PRAGMA settings run, in order (a set)
        self._isolation_level = _check_level(isolation_level)
        self._autocommit = _check_autocommit(autocommit)
        self.row_factory: Any = None
        self._text_factory: Any = str
        self._kinds = StatementCache()
        self._in_txn = False
        self._pending_begin = self._autocommit is False  # PEP 249 mode: always in a transaction
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
        if level is None and self._in_txn and self._autocommit == LEGACY_TRANSACTION_CONTROL:
            self.commit()
        self._isolation_level = level

    @property
    def autocommit(self) -> bool | int:
        """PEP 249 ``autocommit``, as in Python 3.12's sqlite3 (see the module docstring)."""
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool | int) -> None:
        value = _check_autocommit(value)
        if value is True and (self._in_txn or self._pending_begin):
            self._commit()
            self._pending_begin = False
        elif value is False and not self._in_txn:
            self._pending_begin = True
        elif value == LEGACY_TRANSACTION_CONTROL:
            self._pending_begin = False
        self._autocommit = value

    @property
    def in_transaction(self) -> bool:
        return self._in_txn or self._pending_begin

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

    # ------------------------------------------------------------------ the raw connection

    def _configure(self, step: Callable[[sqlite3.Connection], None]) -> None:
        self._check_open()
        self._setup.append(step)
        if self._raw is not None:
            step(self._raw)

    def _ensure_raw(self) -> sqlite3.Connection:
        raw = self._raw
        if raw is not None:
            if self._raw_gen == self._replica.raw_generation or self._in_txn or self._active:
                return raw
            self._raw = None  # the local copy was replaced: reopen on the new one
            self._replica.close_raw(raw)
            self._kinds.clear()
        generation = self._replica.raw_generation
        raw = self._replica.connect_raw(**self._raw_kwargs)
        try:
            for step in self._setup:
                step(raw)
            for sql in self._settings:
                try:
                    raw.execute(sql)
                except sqlite3.Error as exc:
                    log.warning("could not replay %r on a reopened connection: %s", sql, exc)
        except BaseException:
            self._replica.close_raw(raw)
            raise
        self._raw, self._raw_gen = raw, generation
        return raw

    def _after_fork(self) -> None:
        """In a forked child: leave the parent's raw connection and state, use our own engine."""
        self._forks = _forks
        if self._raw is not None:
            _inherited.append(self._raw)  # closing it here could disturb the parent's copy
            self._raw = None
        self._replica = self._replica.for_this_process()
        self._token = next(_tokens)
        self._in_txn = self._writing = self._savepoint_txn = False
        self._pending_begin = self._autocommit is False
        self._savepoints.clear()
        self._active.clear()
        self._snapshot_version = None
        self._kinds.clear()

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
        if self._autocommit is True:
            return  # autocommit mode: commit() does nothing, as in sqlite3
        try:
            self._commit()
        except BaseException as exc:
            note_conflict(exc)
            raise
        if self._autocommit is False:
            self._pending_begin = True

    def rollback(self) -> None:
        self._check_open()
        if self._autocommit is True:
            return
        self._rollback()
        if self._autocommit is False:
            self._pending_begin = True

    def _commit(self) -> None:
        self._pending_begin = False
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

    def _rollback(self) -> None:
        self._pending_begin = False
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
        if self._forks != _forks:  # inherited from the parent process: touch nothing
            if self._raw is not None:
                _inherited.append(self._raw)
                self._raw = None
            self._closed = True
            return
        try:
            if self._in_txn:
                self._rollback()
        finally:
            self._closed = True
            self._pending_begin = False
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
        self._with_snapshot(lambda raw: raw.backup(target, **kwargs))

    def serialize(self, *, name: str = "main") -> bytes:
        data: bytes = self._with_snapshot(lambda raw: raw.serialize(name=name))
        return data

    def _with_snapshot(self, action: Callable[[sqlite3.Connection], Any]) -> Any:
        self._check_open()
        self._refresh()
        raw = self._ensure_raw()
        established = self._replica.begin_statement(self._token, self._timeout)
        try:
            return action(raw)
        finally:
            self._replica.end_statement(self._token, established)
            self._maybe_release()

    # ------------------------------------------------------------------ the statement path

    def _check_open(self) -> None:
        if self._closed:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        if self._forks != _forks:
            self._after_fork()

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
            if info.reset:
                raw.execute(info.reset)  # undo what preparing it already did
            raise sqlite3.OperationalError(info.forbidden)
        if info.setting:
            self._settings.pop(sql, None)
            self._settings[sql] = None
            while len(self._settings) > _MAX_SETTINGS:
                del self._settings[next(iter(self._settings))]
        return info

    def _run(self, cursor: Cursor, sql: str, params: Any, many: bool) -> list[Any] | None:
        """Execute one statement for ``cursor`` with the right transaction around it.

        Returns the statement's rows when they had to be read before returning
        (a write that commits by itself, such as ``INSERT … RETURNING`` in
        autocommit mode: SQLite cannot commit while a statement is active).
        """
        self._check_open()
        first = params
        if many:
            params = list(params)
            if not params:
                return None
            first = params[0]
        try:
            raw = self._ensure_raw()
            info = self._info(raw, sql, first)
        except sqlite3.DatabaseError:
            # compiled against a schema older than the remote's (a table created elsewhere),
            # or a local copy in need of repair: pull (which checks it), then ask again
            self._refresh()
            raw = self._ensure_raw()
            info = self._info(raw, sql, first)
        if not info.local:
            self._refresh()  # statements that read nothing of the database cost no round trip
            raw = self._ensure_raw()
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
            self._commit()
            return None
        if kind is Kind.ROLLBACK:
            self._rollback()
            return None
        if kind is Kind.BEGIN:
            if self._in_txn or self._pending_begin:
                raise sqlite3.OperationalError("cannot start a transaction within a transaction")
            self._begin(write=info.immediate or self._immediate_default, sql=sql)
            return None
        if self._pending_begin and not self._in_txn:
            self._pending_begin = False  # PEP 249 mode: the transaction begins now
            self._begin(write=self._immediate_default, sql=None)
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
            if name in self._savepoints:  # the innermost savepoint of that name
                del self._savepoints[_last_index(self._savepoints, name) + 1 :]
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
        if self._implicit_begin() and kind is Kind.DML:
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
                self._rollback()
                raise
        self._commit()
        return rows

    def _implicit_begin(self) -> bool:
        """Whether a DML statement outside a transaction opens one (legacy control)."""
        return self._autocommit == LEGACY_TRANSACTION_CONTROL and self._isolation_level is not None

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
        finally:
            if self._in_txn and not cur.connection.in_transaction:
                self._ended_by_sqlite()

    def _ended_by_sqlite(self) -> None:
        """SQLite rolled the transaction back by itself: end ours the same way."""
        log.info("SQLite rolled the transaction back by itself (OR ROLLBACK, RAISE, interrupt)")
        try:
            if self._writing:
                self._replica.abort_write(self._token)
        finally:
            self._end_txn()

    def _exec_or_rollback(self, cur: sqlite3.Cursor, sql: str, params: Any, many: bool) -> None:
        try:
            self._exec(cur, sql, params, many)
        except BaseException:
            if not self._implicit_begin() or not self._in_txn:
                self._rollback()
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
            self._rollback()
            raise
        self._writing = True

    def _release_savepoint(
        self, cur: sqlite3.Cursor, sql: str, params: Any, name: str | None
    ) -> None:
        key = (name or "").lower()
        if key in self._savepoints:
            index = _last_index(self._savepoints, key)  # RELEASE names the innermost one
            if index == 0 and self._savepoint_txn:
                self._commit()  # releasing the outermost savepoint ends the transaction
                return
            self._exec(cur, sql, params, False)
            del self._savepoints[index:]
            return
        self._exec(cur, sql, params, False)  # SQLite says what is wrong with it

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
        if self._autocommit == LEGACY_TRANSACTION_CONTROL:
            self._commit()
        statements = split_script(script)
        own_txn = False
        try:
            for sql in statements:
                self._refresh()
                info = self._info(self._ensure_raw(), sql, ())
                if (
                    info.writes
                    and not self._in_txn
                    and not self._pending_begin
                    and info.kind is not Kind.VACUUM
                ):
                    self._begin(write=True, sql=None)
                    own_txn = True
                self._dispatch(cursor._make_raw(), sql, (), False, info)
            if own_txn and self._in_txn:
                self._commit()
        except BaseException:
            if own_txn and self._in_txn:
                self._rollback()
            raise


def _last_index(items: list[str], value: str) -> int:
    return len(items) - 1 - items[::-1].index(value)


def _check_level(value: str | None) -> str | None:
    if value is not None and value.upper() not in _VALID_LEVELS:
        raise sqlite3.ProgrammingError(
            "isolation_level must be None, '', 'DEFERRED', 'IMMEDIATE' or 'EXCLUSIVE', "
            f"not {value!r}"
        )
    return value


def _check_autocommit(value: object) -> bool | int:
    if value is True or value is False or value == LEGACY_TRANSACTION_CONTROL:
        return value
    raise ValueError(
        f"autocommit must be True, False, or sqlite3.LEGACY_TRANSACTION_CONTROL (-1), not {value!r}"
    )
