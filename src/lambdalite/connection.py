"""A ``sqlite3``-compatible connection whose commits are published to the remote.

:class:`Connection` looks like :class:`sqlite3.Connection` and drives a real
SQLite connection to the local copy (the *raw* connection). It decides the
transaction lifecycle itself, statement by statement, from what SQLite says
the statement does (:mod:`lambdalite.statements`; the state machine is
:mod:`lambdalite.transactions`):

* outside a transaction, every statement that reads the database first
  brings the local copy up to date (one conditional GET; none within
  ``max_staleness``, or after the first in a request scope,
  :mod:`lambdalite.scope`);
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
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Protocol

from lambdalite.cursor import Cursor, note_conflict
from lambdalite.statements import Kind, StatementCache, StatementInfo, classify
from lambdalite.transactions import LEGACY_TRANSACTION_CONTROL, TransactionControl

__all__ = ["LEGACY_TRANSACTION_CONTROL", "Connection", "Engine"]

log = logging.getLogger("lambdalite.connection")


_tokens = itertools.count(1)
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
    def writer_sees_newest(self) -> bool:
        """Whether :meth:`begin_write` with no snapshot will bring the local copy to the
        newest version itself (so the freshness check before such a transaction is
        redundant), the local copy being sound (else the check heals it first)."""
        ...

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


class Connection(TransactionControl):
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
        if not info.local and not self._begins_writing(info):
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

    def _begins_writing(self, info: StatementInfo) -> bool:
        """Whether the statement opens a transaction as the writer, on an engine whose write
        lease brings the local copy to the newest version: the claim (a conditional write of
        the manifest) is the freshness check, and a GET before it would be one round trip more."""
        if self._in_txn or self._active:
            return False
        kind = info.kind
        if kind is Kind.BEGIN:
            begins = info.immediate or self._wants_immediate()
        elif kind is Kind.SAVEPOINT or self._pending_begin:
            begins = self._wants_immediate()
        else:
            begins = info.writes and kind is not Kind.VACUUM
        return begins and self._replica.writer_sees_newest()

    def _cursor_active(self, cid: int, active: bool) -> None:
        if active:
            self._active.add(cid)
        else:
            self._active.discard(cid)
            self._maybe_release()


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
