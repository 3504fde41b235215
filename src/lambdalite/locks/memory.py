"""An in-process lock, for tests: the same semantics as the other backends.

Locks with the same key share one record per :class:`MemoryLockTable` (by default one
table per process), guarded by a :class:`threading.Lock`, so threads contend exactly as
instances would on a shared backend. Nothing crosses a process boundary.
"""

from __future__ import annotations

import threading
from typing import Any

from lambdalite.locks._record import Record
from lambdalite.locks.base import Busy, Lease, LeaseLock

__all__ = ["MemoryLock", "MemoryLockTable"]


class MemoryLockTable:
    """Records of in-process locks, by key."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.records: dict[str, Record] = {}

    def clear(self) -> None:
        with self.mutex:
            self.records.clear()


DEFAULT_TABLE = MemoryLockTable()


class MemoryLock(LeaseLock):
    """A lock on ``key`` in ``table`` (default: the process-wide table)."""

    def __init__(self, key: str, *, table: MemoryLockTable | None = None, **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.table = table or DEFAULT_TABLE
        self.where = "in-process memory"

    def _get(self) -> Record | None:
        return self.table.records.get(self.key)

    def _try_acquire(self, now: float) -> Lease | Busy:
        with self.table.mutex:
            record = self._get()
            if record is not None and not record.takeable_by(self.owner, now):
                return Busy(record.lease(self.key))
            granted = Record.granted(record, self.owner, now, self.expiration)
            self.table.records[self.key] = granted
        return Lease(self.key, self.owner, granted.generation, granted.expires_at)

    def _renew(self, lease: Lease, now: float) -> Lease:
        with self.table.mutex:
            record = self._get()
            if record is None or not record.holds(lease) or record.expires_at < now:
                raise self._lost(lease, record.lease(self.key) if record else None, "renew")
            renewed = Record(lease.owner, lease.generation, now + self.expiration)
            self.table.records[self.key] = renewed
        return Lease(self.key, lease.owner, lease.generation, renewed.expires_at)

    def _release(self, lease: Lease, now: float) -> None:
        with self.table.mutex:
            record = self._get()
            if record is not None and record.holds(lease):
                self.table.records[self.key] = record.free()
                return
            if record is not None and record.released_after(lease):
                return
        raise self._lost(lease, record.lease(self.key) if record else None, "release")

    def inspect(self) -> Lease | None:
        with self.table.mutex:
            record = self._get()
        return record.lease(self.key) if record else None

    def break_(self) -> Lease | None:
        with self.table.mutex:
            record = self._get()
            if record is None or record.owner is None:
                return None
            self.table.records[self.key] = record.free()
        return record.lease(self.key)
