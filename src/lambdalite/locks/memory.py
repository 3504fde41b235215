"""An in-process lock, for tests: the same semantics as the other backends.

Locks with the same key share one record per :class:`MemoryLockTable` (by default one
table per process), guarded by a :class:`threading.Condition`, so threads contend exactly
as instances would on a shared backend, queue included: a waiter joins the record's FIFO
queue, a release hands the lock to the first live waiter and wakes the waiting threads
(a waiter also wakes after its poll delay, to see leases expire by the injected clock).
Nothing crosses a process boundary.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from lambdalite.locks._record import Record
from lambdalite.locks.base import Busy, Lease, LeaseLock

__all__ = ["MemoryLock", "MemoryLockTable"]


class MemoryLockTable:
    """Records of in-process locks, by key."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.changed = threading.Condition(self.mutex)
        self.records: dict[str, Record] = {}
        self.version = 0  # bumped on every change, so a waiter never misses one

    def put(self, key: str, record: Record) -> None:
        """Store ``record`` (the mutex held) and wake the waiters."""
        self.records[key] = record
        self.version += 1
        self.changed.notify_all()

    def clear(self) -> None:
        with self.mutex:
            self.records.clear()
            self.version += 1


DEFAULT_TABLE = MemoryLockTable()


class MemoryLock(LeaseLock):
    """A lock on ``key`` in ``table`` (default: the process-wide table)."""

    def __init__(self, key: str, *, table: MemoryLockTable | None = None, **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.table = table or DEFAULT_TABLE
        self.where = "in-process memory"
        self._looked = False  # this acquire looked at the lock before
        self._queued = False
        self._seen = -1  # the table version of our last look

    def _get(self) -> Record | None:
        return self.table.records.get(self.key)

    def _begin_acquire(self) -> None:
        self._looked = False
        self._queued = False

    def _try_acquire(self, now: float) -> Lease | Busy:
        with self.table.mutex:
            looked, self._looked = self._looked, True
            record = self._get()
            if looked and record is not None and record.owner == self.owner and record.held(now):
                self._queued = False
                return Lease(self.key, self.owner, record.generation, record.expires_at)
            if record is None or record.takeable_by(self.owner, now, self.expiration):
                granted = Record.granted(record, self.owner, now, self.expiration)
                self.table.put(self.key, granted)
                self._queued = False
                return Lease(self.key, self.owner, granted.generation, granted.expires_at)
            if record.must_queue(self.owner, now, self.expiration):
                record = record.enqueued(self.owner, now, self.expiration)
                self.table.put(self.key, record)
                self._queued = True
            self._seen = self.table.version
            return Busy(record.lease(self.key), record.position(self.owner, now, self.expiration))

    def _pause(self, seconds: float) -> None:
        if self._sleep is not time.sleep:  # a test's own sleep
            self._sleep(seconds)
            return
        with self.table.changed:
            if self.table.version == self._seen:
                self.table.changed.wait(seconds)

    def _leave(self, now: float) -> Lease | None:
        if not self._queued:
            return None
        self._queued = False
        with self.table.mutex:
            record = self._get()
            if record is None:
                return None
            if record.owner == self.owner and record.held(now):
                return Lease(self.key, self.owner, record.generation, record.expires_at)
            self.table.put(self.key, record.without(self.owner, now, self.expiration))
        return None

    def _renew(self, lease: Lease, now: float) -> Lease:
        with self.table.mutex:
            record = self._get()
            if record is None or not record.holds(lease) or record.expires_at < now:
                raise self._lost(lease, record.lease(self.key) if record else None, "renew")
            renewed = Record(
                lease.owner, lease.generation, now + self.expiration, record.queue, record.released
            )
            self.table.put(self.key, renewed)
        return Lease(self.key, lease.owner, lease.generation, renewed.expires_at)

    def _release(self, lease: Lease, now: float) -> None:
        with self.table.mutex:
            record = self._get()
            if record is not None and record.holds(lease):
                self.table.put(self.key, record.handed_over(now, self.expiration))
                return
            if record is not None and record.released_after(lease):
                return
        raise self._lost(lease, record.lease(self.key) if record else None, "release")

    def inspect(self) -> Lease | None:
        with self.table.mutex:
            record = self._get()
        return record.lease(self.key) if record else None

    def waiters(self) -> tuple[str, ...]:
        with self.table.mutex:
            record = self._get()
        if record is None:
            return ()
        return tuple(w.owner for w in record.live(self.clock(), self.expiration))

    def break_(self) -> Lease | None:
        with self.table.mutex:
            record = self._get()
            if record is None or record.owner is None:
                return None
            self.table.put(self.key, record.free())
        return record.lease(self.key)
