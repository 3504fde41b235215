"""The transaction lifecycle of a connection, statement by statement.

:class:`TransactionControl` is the half of :class:`~lambdalite.connection.Connection`
that decides what each statement means for the transaction around it, from
what SQLite says the statement does (:mod:`lambdalite.statements`):

* outside a transaction, a statement that reads runs in SQLite's autocommit
  mode on a fresh snapshot; one that writes rows opens a transaction under the
  ``sqlite3`` module's legacy control (``isolation_level`` not None), or
  commits by itself (``isolation_level=None``, ``autocommit=True``, schema
  statements); ``autocommit=False`` (PEP 249) keeps a transaction open at all
  times, begun lazily at the next statement;
* ``BEGIN`` takes the snapshot at once (and the writer role with
  ``IMMEDIATE``); the first write of a transaction takes the writer role (the
  write lease or lock), and fails with ``ConflictError`` if another instance
  committed since the snapshot;
* ``COMMIT`` publishes (:meth:`Engine.commit_write`), ``ROLLBACK`` undoes;
  savepoints are SQLite's, released and rolled back innermost first; a
  transaction that SQLite ended by itself (``OR ROLLBACK``, ``RAISE``, an
  interrupt) ends here the same way.

The other half (the raw SQLite connection, its settings, forks, the DB-API
surface) is :class:`~lambdalite.connection.Connection`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lambdalite.errors import ConflictError
from lambdalite.scope import wants_immediate
from lambdalite.statements import Kind, StatementInfo, split_script

if TYPE_CHECKING:
    from lambdalite.connection import Engine
    from lambdalite.cursor import Cursor

__all__ = ["LEGACY_TRANSACTION_CONTROL", "TransactionControl"]

log = logging.getLogger("lambdalite.connection")

LEGACY_TRANSACTION_CONTROL = -1
"""``autocommit`` value: transactions follow ``isolation_level`` (the default), as in sqlite3."""

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


class TransactionControl:
    """The transaction state machine of a connection (see the module docstring)."""

    _replica: Engine
    _token: int
    _timeout: float
    _raw: sqlite3.Connection | None
    _isolation_level: str | None
    _autocommit: bool | int
    _immediate_default: bool
    _in_txn: bool
    _pending_begin: bool
    _writing: bool
    _savepoint_txn: bool
    _savepoints: list[str]
    _snapshot_version: int | None
    _active: set[int]
    _authorizer: Any

    # provided by the connection
    def _ensure_raw(self) -> sqlite3.Connection:
        raise NotImplementedError

    def _refresh(self) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        raise NotImplementedError

    def _info(self, raw: sqlite3.Connection, sql: str, params: Any) -> StatementInfo:
        raise NotImplementedError

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
            self._begin(write=info.immediate or self._wants_immediate(), sql=sql)
            return None
        if self._pending_begin and not self._in_txn:
            self._pending_begin = False  # PEP 249 mode: the transaction begins now
            self._begin(write=self._wants_immediate(), sql=None)
        if kind is Kind.SAVEPOINT:
            if not self._in_txn:
                self._begin(write=self._wants_immediate(), sql=None)
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

    def _wants_immediate(self) -> bool:
        """Whether a transaction takes the writer role at BEGIN: ``transaction_mode``, a
        request re-run after a conflict, or a retry helper's later attempt
        (:func:`lambdalite.scope.wants_immediate`)."""
        return self._immediate_default or wants_immediate()

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
