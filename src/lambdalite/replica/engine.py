"""The replica engine: one local copy of one remote, shared by a process's connections.

:class:`Replica` is what :class:`lambdalite.dbapi.Connection` talks to in
replica mode. It holds the pieces, each in a module of its own:

* :mod:`~lambdalite.replica.local`: the local copy's files and the version it
  verifiably holds (page digests, WAL position), and the checks before trusting it;
* :mod:`~lambdalite.replica.gate`: which connections hold a snapshot, and the
  gate that holds new ones back while a commit is published or a repair waits;
* :mod:`~lambdalite.replica.pull`: bringing the local copy up to date;
* :mod:`~lambdalite.replica.commit`: the commit path, top to bottom;
* :mod:`~lambdalite.replica.heal`: undoing an unpublished commit, discarding a
  local copy in doubt;
* :mod:`~lambdalite.replica.compaction`: rollovers and snapshots.

One :class:`Replica` exists per (remote, cache folder) in a process
(:func:`get_replica`). After ``fork()`` the child never uses its parent's: the
registry is emptied in the child, and every connection inherited from the
parent moves to a replica of the child's own (:meth:`Replica.for_this_process`),
with a cache folder of its own.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lambdalite.replica import format as fmt
from lambdalite.replica.cache import CacheDir
from lambdalite.replica.commit import Committer
from lambdalite.replica.compaction import Compactor
from lambdalite.replica.gate import Gate
from lambdalite.replica.heal import Healer
from lambdalite.replica.local import LocalCopy
from lambdalite.replica.pull import Puller
from lambdalite.replica.stats import CountingStorage, StorageStats
from lambdalite.storage.base import Storage

if TYPE_CHECKING:
    from lambdalite.locks.base import Lock

__all__ = ["EngineOptions", "Replica", "forget_replicas", "get_replica"]


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """The settings the engine itself uses (the rest are per connection)."""

    inline_delta_max: int = 65536
    compact_after_deltas: int = 64
    compact_after_bytes: int = 1024 * 1024
    write_lease: bool = False  # writers wait their turn (the manifest's lease: replica/lease.py)
    lease_duration: float = 10.0  # seconds a dead or frozen holder keeps the others waiting
    lease_max_attempts: int | None = None  # looks at the lease before giving up (None: timeout)


class Replica:
    """The local copy of one remote in this process (get one with :func:`get_replica`)."""

    def __init__(
        self,
        remote: str,
        storage: Storage,
        cache_dir: str,
        options: EngineOptions | None = None,
        *,
        lock: Callable[[Storage], Lock] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.remote = remote
        self.storage = CountingStorage(storage)
        self.lock: Lock | None = lock(self.storage) if lock is not None else None
        self.options = options or EngineOptions()
        self.clock = clock
        self.writer_id = f"{socket.gethostname()}:{os.getpid()}"
        self.cache = CacheDir(cache_dir, remote)
        self.local = LocalCopy(self.cache)
        self.gate = Gate()
        self.refresh_mutex = threading.Lock()
        self.confirmed_at = float("-inf")  # monotonic time of the last manifest check
        self.puller = Puller(self)
        self.committer = Committer(self)
        self.healer = Healer(self)
        self.compactor = Compactor(self)
        self._args = (storage, cache_dir, lock)
        self._pid = os.getpid()
        self._opened = False
        self._raw_generation: dict[int, int] = {}  # id(raw) -> generation it was opened on
        self._open_raw: dict[int, int] = {}  # generation -> raw connections open on it

    # ------------------------------------------------------------------ public facts

    @property
    def stats(self) -> StorageStats:
        return self.storage.stats

    @property
    def version(self) -> int:
        return self.local.version

    @property
    def manifest(self) -> fmt.Manifest | None:
        return self.local.manifest

    @property
    def db_path(self) -> str:
        return self.local.db_path

    def writer_sees_newest(self) -> bool:
        """A writer with no snapshot yet is brought to the newest version by the write lease
        (the claim is a conditional write) or by the lock (a pull once it is held), if the
        local copy is sound: one in doubt is healed by the freshness check first."""
        if self.committer.lease is None and self.lock is None:
            return False
        with self.gate.cond:  # a few stat calls; the WAL is scanned only when it grew
            return self.local.doubt() is None

    @property
    def raw_generation(self) -> int:
        """Which local file raw connections must be open on (it changes after a discard)."""
        return self.cache.generation

    # ------------------------------------------------------------------ opening

    def ensure_open(self) -> None:
        with self.gate.cond:
            if not self._opened:
                self.local.open()
                self._opened = True

    def for_this_process(self) -> Replica:
        """This replica, or after a fork the child's own replica of the same remote."""
        if self._pid == os.getpid():
            return self
        storage, cache_dir, lock = self._args

        def clone() -> Replica:
            return Replica(
                self.remote, storage, cache_dir, self.options, lock=lock, clock=self.clock
            )

        return get_replica(self.remote, cache_dir, clone)

    def connect_raw(self, **kwargs: object) -> sqlite3.Connection:
        """A SQLite connection to the local copy, in WAL mode with autocheckpoint off."""
        self.ensure_open()
        kwargs["isolation_level"] = None
        with self.gate.cond:
            generation = self.cache.generation
            raw: sqlite3.Connection = sqlite3.connect(self.local.db_path, **kwargs)  # type: ignore[call-overload]
            try:
                mode = raw.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(
                        f"could not put the local copy in WAL mode ({mode})"
                    )
                raw.execute("PRAGMA wal_autocheckpoint=0")
            except BaseException:
                raw.close()
                raise
            if self.local.page_count == 0 and not self.local.needs_image:
                self.local.note_files()  # SQLite wrote an empty WAL-mode header (version 0)
            self._raw_generation[id(raw)] = generation
            self._open_raw[generation] = self._open_raw.get(generation, 0) + 1
        return raw

    def close_raw(self, raw: sqlite3.Connection) -> None:
        """Close a raw connection; the last one on the local copy is checked first.

        SQLite folds the WAL into the file when its last connection closes, so
        unpublished frames would vanish without a trace: they are looked for
        before, and afterwards the engine notes the files as SQLite left them.
        """
        with self.gate.cond:
            generation = self._raw_generation.get(id(raw), self.cache.generation)
            left = self._open_raw.get(generation, 1) - 1
            last = left == 0 and generation == self.cache.generation and self._opened
            stray = last and not self.local.needs_image and self.local.unpublished_frames()
            raw.close()  # first: it raises when called from the wrong thread
            self._raw_generation.pop(id(raw), None)
            self._open_raw[generation] = left
            if left == 0 and generation != self.cache.generation:
                del self._open_raw[generation]
                self.cache.remove_generation(generation)  # a discarded copy, now unused
            if not last or self.local.needs_image:
                return
            if stray:
                self.healer.discard("its WAL held committed changes that were never published")
                return
            try:
                self.local.checkpoint(required=False)
                self.local.note_files()
            except (OSError, sqlite3.Error) as exc:
                self.healer.discard(f"it could not be checked after closing ({exc})")

    def generation_of(self, raw: sqlite3.Connection) -> int:
        """The generation of the local file ``raw`` was opened on."""
        with self.gate.cond:
            return self._raw_generation.get(id(raw), -1)

    def open_raw_now(self) -> int:
        """Raw connections open on the current local file."""
        return self._open_raw.get(self.cache.generation, 0)

    # ------------------------------------------------------------------ the Engine protocol

    def refresh(self, token: int, *, max_staleness: float, timeout: float) -> None:
        self.puller.refresh(token, max_staleness=max_staleness, timeout=timeout)

    def begin_statement(self, token: int, timeout: float) -> int | None:
        return self.gate.begin_statement(token, timeout, lambda: self.local.version)

    def end_statement(self, token: int, established: int | None) -> None:
        self.gate.end_statement(established)

    def release(self, token: int) -> None:
        self.gate.release(token)

    def is_holder(self, token: int) -> bool:
        return self.gate.is_holder(token)

    def snapshot_version(self, raw: sqlite3.Connection) -> int:
        """The version a connection's just-opened transaction reads (it is a holder)."""
        return self.local.version

    def begin_write(self, token: int, snapshot_version: int | None, timeout: float) -> None:
        self.committer.begin_write(token, snapshot_version, timeout)

    def abort_write(self, token: int) -> None:
        self.committer.abort_write(token)

    def commit_write(
        self, token: int, raw: sqlite3.Connection, timeout: float, *, committed: bool = False
    ) -> None:
        self.committer.commit_write(token, raw, timeout, committed=committed)

    # ------------------------------------------------------------------ maintenance

    def roll_over(self) -> bool:
        return self.compactor.roll_over()

    def compact(self) -> bool:
        return self.compactor.compact()

    def close(self) -> None:
        with self.gate.cond:
            self.cache.close()
            self._opened = False

    def _forked(self) -> None:
        """In a forked child: let go of the parent's cache folder; take no lock."""
        self.cache.abandon()
        self._opened = False


# ---------------------------------------------------------------------------- registry

_registry: dict[tuple[str, str], Replica] = {}
_registry_lock = threading.Lock()


def get_replica(remote: str, cache_dir: str, factory: Callable[[], Replica]) -> Replica:
    """The process's one :class:`Replica` for ``(remote, cache_dir)`` (``factory`` makes it)."""
    key = (remote, os.path.abspath(cache_dir))
    with _registry_lock:
        replica = _registry.get(key)
        if replica is None:
            replica = factory()
            _registry[key] = replica
        return replica


def forget_replicas() -> None:
    """Close every replica of this process (tests; a forked child must not reuse its parent's)."""
    with _registry_lock:
        for replica in _registry.values():
            replica.close()
        _registry.clear()


def _after_fork_in_child() -> None:
    """The child starts with no replica: its parent's (copied, maybe mid-operation) stay unused."""
    global _registry_lock
    _registry_lock = threading.Lock()  # the parent may have held it while forking
    for replica in _registry.values():
        replica._forked()
    _registry.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
