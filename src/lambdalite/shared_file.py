"""Shared-file mode: one SQLite file on a shared filesystem (Amazon EFS, NFS).

SQLite writes the shared file in place with a rollback journal (never WAL: WAL
needs shared memory, which a network filesystem cannot provide). A write
transaction holds the distributed lock (DynamoDB, file, …) from its first write
(or from ``BEGIN IMMEDIATE``) to its end; reads take no lock and rely on the
filesystem's own byte-range locks, as SQLite always does (EFS supports them).

Fencing, honestly: a filesystem cannot reject a write from a holder whose lease
expired (a frozen Lambda that wakes up). Before ``COMMIT`` the lease is checked
and renewed if needed; if it expired or was taken, the transaction is rolled
back and :class:`~lambdalite.errors.LockLostError` raised, never committed.
That check narrows the window to the time between the check and the end of
the commit, but cannot close it: keep ``lock_expiration`` well above the
longest commit. Replica mode (S3) has no such window: there the storage's
conditional write fences.

A transaction that read without the lock and then writes is checked at its
first write: if the database's change counter (bytes 24 to 27 of the header) moved
since its snapshot, it fails with :class:`~lambdalite.errors.ConflictError`
instead of writing on stale reads, even on a filesystem whose locks do not work.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lambdalite.errors import BusyError, ConflictError, LambdaliteError, LockLostError

if TYPE_CHECKING:
    from lambdalite.config import Settings
    from lambdalite.dbapi import Connection
    from lambdalite.locks.base import Lease, Lock

__all__ = ["SharedFile", "connect_shared_file"]

log = logging.getLogger("lambdalite.shared_file")


class SharedFile:
    """The :class:`~lambdalite.dbapi.Engine` of shared-file mode for one database file."""

    def __init__(
        self,
        path: str,
        lock: Lock,
        *,
        vfs: str | None = None,
        recreate: Callable[[], SharedFile] | None = None,
    ) -> None:
        self.path = path
        self.lock = lock
        self.vfs = vfs
        self._recreate = recreate
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        self._lease: Lease | None = None
        self._writer: int | None = None

    @property
    def version(self) -> int:
        return self._change_counter()

    def _change_counter(self) -> int:
        try:
            with open(self.path, "rb") as f:
                header = f.read(28)
        except FileNotFoundError:
            return 0
        return int.from_bytes(header[24:28], "big") if len(header) >= 28 else 0

    # The Engine protocol -----------------------------------------------------------------

    raw_generation = 0  # the shared file is never replaced under its connections

    def writer_sees_newest(self) -> bool:
        return False  # nothing to pull: the file is read in place

    def for_this_process(self) -> SharedFile:
        """This engine, or after a fork one of the child's own (no lease, no lock state shared)."""
        if self._pid == os.getpid():
            return self
        if self._recreate is not None:
            return self._recreate()
        return SharedFile(self.path, self.lock, vfs=self.vfs)

    def refresh(self, token: int, *, max_staleness: float, timeout: float) -> None:
        return None  # the shared file is the truth: nothing to pull

    def connect_raw(self, **kwargs: Any) -> sqlite3.Connection:
        """Open the shared file. It is not read here: on a filesystem whose locks do
        not work, even a read outside the lock could roll back a writer's journal."""
        kwargs["isolation_level"] = None
        target = self.path
        if self.vfs:
            quoted = urllib.parse.quote(os.path.abspath(self.path))
            target = f"file:{quoted}?vfs={urllib.parse.quote(self.vfs)}"
            kwargs["uri"] = True
        if self._header_says_wal():
            self._leave_wal(target, kwargs)
        raw: sqlite3.Connection = sqlite3.connect(target, **kwargs)
        try:
            raw.execute("PRAGMA mmap_size=0")  # mmapped I/O errors on NFS surface as signals
        except BaseException:
            raw.close()
            raise
        return raw

    def _header_says_wal(self) -> bool:
        try:
            with open(self.path, "rb") as f:
                header = f.read(20)
        except FileNotFoundError:
            return False
        return len(header) >= 20 and header[:16] == b"SQLite format 3\x00" and header[18] == 2

    def _leave_wal(self, target: str, kwargs: dict[str, Any]) -> None:
        """Switch a WAL database to a rollback journal, under the lock."""
        lease = self.lock.acquire(float(kwargs.get("timeout", 5.0)))
        try:
            raw = sqlite3.connect(target, **kwargs)
            try:
                mode = raw.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
            finally:
                raw.close()
        finally:
            self.lock.release(lease)
        if str(mode).lower() == "wal":
            raise sqlite3.OperationalError(
                f"{self.path} is in WAL mode and could not be switched to a rollback journal "
                "(another process has it open?); WAL is unsafe on a network filesystem"
            )
        log.info("switched %s from WAL to a rollback journal", self.path)

    def close_raw(self, raw: sqlite3.Connection) -> None:
        raw.close()

    def begin_statement(self, token: int, timeout: float) -> int | None:
        return None

    def end_statement(self, token: int, established: int | None) -> None:
        return None

    def release(self, token: int) -> None:
        return None

    def snapshot_version(self, raw: sqlite3.Connection) -> int:
        return self._change_counter()

    def begin_write(self, token: int, snapshot_version: int | None, timeout: float) -> None:
        deadline = time.monotonic() + max(timeout, 0.0)
        if not self._mutex.acquire(timeout=max(timeout, 0.0)):
            raise BusyError(
                "database is locked: another connection of this process is writing "
                f"(waited {timeout:g} s)"
            )
        try:
            self._lease = self.lock.acquire(max(deadline - time.monotonic(), 0.0))
            if snapshot_version is not None and self._change_counter() != snapshot_version:
                self._release_lease()
                raise ConflictError(
                    "another instance committed after this transaction read the database; "
                    "retry the transaction"
                )
            self._writer = token
        except BaseException:
            self._mutex.release()
            raise

    def abort_write(self, token: int) -> None:
        if self._writer == token:
            self._writer = None
            self._release_lease()
            self._mutex.release()

    def commit_write(
        self, token: int, raw: sqlite3.Connection, timeout: float, *, committed: bool = False
    ) -> None:
        try:
            if not committed:
                assert self._lease is not None
                try:
                    self._lease = self.lock.ensure(self._lease, min_remaining=1.0)
                except LockLostError:
                    if raw.in_transaction:
                        raw.execute("ROLLBACK")
                    raise
                raw.execute("COMMIT")
        finally:
            self.abort_write(token)

    def _release_lease(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                self.lock.release(lease)
            except LambdaliteError as exc:
                log.warning("could not release the lock (it will expire): %s", exc)


def connect_shared_file(
    settings: Settings,
    *,
    vfs: str | None = None,
    isolation_level: str | None = "",
    detect_types: int = 0,
    check_same_thread: bool = True,
    cached_statements: int = 128,
    lock_endpoint_url: str | None = None,
    autocommit: bool | int = -1,
) -> Connection:
    """A connection to the database file ``settings.database`` (see the module docstring)."""
    from lambdalite.dbapi import Connection

    engine = _engine_for(settings, vfs, lock_endpoint_url)
    return Connection(
        engine,
        isolation_level=isolation_level,
        timeout=settings.timeout,
        transaction_mode=settings.transaction_mode,
        detect_types=detect_types,
        check_same_thread=check_same_thread,
        cached_statements=cached_statements,
        autocommit=autocommit,
    )


_engines: dict[tuple[str, str, str | None], SharedFile] = {}
_engines_lock = threading.Lock()


def _engine_for(settings: Settings, vfs: str | None, endpoint_url: str | None) -> SharedFile:
    """One engine per (file, lock, vfs) in the process, so its connections share one lease."""
    from lambdalite.locks import lock_for_settings

    assert settings.database is not None
    key = (settings.database, settings.lock, vfs)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            lock = lock_for_settings(settings, endpoint_url=endpoint_url)
            engine = SharedFile(
                settings.database,
                lock,
                vfs=vfs,
                recreate=lambda: _engine_for(settings, vfs, endpoint_url),
            )
            _engines[key] = engine
        return engine


def _after_fork_in_child() -> None:
    global _engines_lock
    _engines_lock = threading.Lock()  # the parent may have held it while forking
    _engines.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def forget_engines() -> None:
    """Drop this process's shared-file engines (tests; after a fork)."""
    with _engines_lock:
        _engines.clear()
