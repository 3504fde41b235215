"""The object lock: a small lock object on any :class:`~lambdalite.storage.base.Storage`.

The S3 lease of Litestream's ``s3/leaser.go``, on the storage protocol, so it works the
same on S3, the local folder remote and the in-memory fake, with a FIFO queue of waiters
in the object (the rules are in :mod:`lambdalite.locks._record`). The lock object (JSON:
``format``, ``owner``, ``generation``, ``expires_at``, and when needed ``queue`` and
``released``) lives at ``key`` on the storage (by default ``lock`` under the remote
prefix). Every change is a read-modify-write conditioned on the ETag read or written
last (``If-Match``; ``If-None-Match: *`` to create it): of N racers exactly one wins, the
others get ``PreconditionFailedError``, read again and decide again.

* **Take** (free, or expired, and nobody live waiting ahead): write the grant. The lock
  remembers the object as it last saw it, so an instance that takes it again while
  nobody else touched it writes blind: one ``PUT``, no read (its condition checks what
  we remembered). A cold instance reads first (a missing object is created with
  ``If-None-Match``). An instance that takes the lock again within a second of its own
  release, having seen other owners lately, first waits about two of its round trips:
  a waiter needs the object to stay still that long, between its read and its write,
  to join the queue, and would otherwise never get in (see ``_courtesy``).
* **Wait** (held): join the queue with one conditional write, then poll with
  conditional ``GET`` requests (a 304 costs no body) until the lock is handed over to us, or
  is free with us first in line.
* **Release**: hand the lock to the first live waiter (owner, new generation, fresh
  expiry: the next holder sees itself as owner at its next poll and writes nothing to
  take it) or, with nobody waiting, write it back free (``owner: null``, the generation
  kept, so the next grant's generation is still one more); ``break_`` frees it without
  asking the holder.

Uncontended, an acquire and its release are two ``PUT`` requests. The ETag of a lease is the
version of the object it was granted or last renewed in; since waiters write to the
object too, renew and release check on the object that the lease is still the current
grant (owner and generation) and write conditioned on the ETag they read. Every grant
carries a new generation or expiry and every queue change a new queue, so two versions
share their bytes (and so S3's ETag) only when they are the same state. No extra AWS
service and no IAM beyond ``s3:GetObject`` and ``s3:PutObject`` on the key.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from typing import Any

from lambdalite.errors import (
    LockError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
    TransientStorageError,
)
from lambdalite.locks._record import Record, decode, encode
from lambdalite.locks.base import Busy, Lease, LeaseLock, TransientLockError, first_generation
from lambdalite.storage.base import Storage

__all__ = ["ObjectLock"]

logger = logging.getLogger("lambdalite.locks.object")

_ROUNDS = 20  # read-modify-write rounds for renew, release and leave before giving up
_RACES = 4  # read-modify-write rounds of one look at the lock
_QUIET = 1.0  # seconds after our own release in which taking the lock again may be rude

View = tuple[Record, str]
"""The lock object as this lock last read or wrote it, and its ETag."""


class ObjectLock(LeaseLock):
    """A lock object at ``key`` on ``storage``."""

    def __init__(self, storage: Storage, key: str = "lock", **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.storage = storage
        self.where = f"lock object {key!r} on {storage.url}"
        self._view: View | None = None
        self._released_at = float("-inf")  # our last release (by our clock)
        self._others_at = float("-inf")  # when we last saw another owner at work here
        self._rtt: float | None = None  # our requests' round trip (moving average), seconds
        self._courteous = False  # this acquire paused before taking the lock again
        self._looked = False  # this acquire looked at the lock before
        self._queued = False  # this acquire joined the queue

    def _translate(self, exc: StorageError, action: str) -> LockError:
        """The one place storage errors become lock errors."""
        kind = TransientLockError if isinstance(exc, TransientStorageError) else LockError
        error = kind(f"cannot {action} the {self.where}: {exc}")
        error.__cause__ = exc
        return error

    def _read_raw(self) -> tuple[bytes, str] | None:
        try:
            blob = self.storage.get(self.key)
        except NotFoundError:
            return None
        except StorageError as exc:
            raise self._translate(exc, "read") from exc
        return (blob.data, blob.etag) if blob is not None else None

    def _decode(self, data: bytes) -> Record:
        try:
            return decode(data)
        except ValueError as exc:
            raise LockError(
                f"the {self.where} is not a lambdalite lock ({exc}); if nothing else uses "
                "that key, `lambdalite lock break` resets it"
            ) from None

    def _fetch(self) -> View | None:
        """The lock object now (``None`` if there is none): a conditional ``GET`` when we
        know an ETag, so that an unchanged object costs no body."""
        known = self._view
        started = time.monotonic()
        try:
            blob = self.storage.get(self.key, if_none_match=known[1] if known else None)
        except NotFoundError:
            self._view = None
            return None
        except StorageError as exc:
            raise self._translate(exc, "read") from exc
        self._timed(started)
        if blob is None:
            return known  # 304: as we last saw it
        record = self._decode(blob.data)
        if record.owner not in (None, self.owner) or any(
            w.owner != self.owner for w in record.queue
        ):
            self._others_at = self.clock()
        self._view = (record, blob.etag)
        return self._view

    def _timed(self, started: float) -> None:
        took = time.monotonic() - started
        self._rtt = took if self._rtt is None else 0.8 * self._rtt + 0.2 * took

    def _put(self, record: Record, *, etag: str | None, action: str) -> str | None:
        """Write ``record`` if the object is still at ``etag`` (absent if ``None``): the new
        ETag, or ``None`` if the condition failed."""
        started = time.monotonic()
        try:
            if etag is None:
                new = self.storage.put(self.key, encode(record), if_none_match=True)
            else:
                new = self.storage.put(self.key, encode(record), if_match=etag)
        except PreconditionFailedError:
            self._timed(started)
            self._others_at = self.clock()  # somebody else wrote it
            return None
        except StorageError as exc:
            raise self._translate(exc, action) from exc
        self._timed(started)
        self._view = (record, new)
        return new

    # -- acquire ---------------------------------------------------------------------------

    def _begin_acquire(self) -> None:
        self._looked = False
        self._queued = False
        self._courteous = False

    def _courtesy(self, now: float) -> float | None:
        """How long to wait before taking the lock again, if we would be rude not to.

        A waiter joins the queue with a read and then a conditional write: it needs the
        object to stay still for about two round trips. An instance that releases and takes
        the lock again at once (its next request) changes it faster than that, and would
        keep every waiter out. So, when we released less than ``_QUIET`` seconds ago and saw
        other owners at work here lately, we first wait about two of our round trips
        (no request): a waiter between its read and its write lands it, and our blind take
        then fails and shows it. A lone writer never waits."""
        if (
            self._courteous
            or now - self._released_at >= _QUIET
            or now - self._others_at >= 10 * self.expiration
        ):
            return None
        self._courteous = True
        rtt = self._rtt if self._rtt is not None else 0.02
        return min(0.5, max(0.002, random.uniform(1.5, 2.5) * rtt))

    def _try_acquire(self, now: float) -> Lease | Busy:
        looked, self._looked = self._looked, True
        if not looked and self._view is not None:
            pause = self._courtesy(now)
            if pause is not None:
                self._looked = False  # the next look is still our first: blind
                return Busy(None, retry_after=pause)
        # The first look writes blind on what we saw last (usually our own release): its
        # condition checks it, so an unchanged object costs no read.
        blind = not looked and self._view is not None
        current = self._view if blind else self._fetch()
        for _ in range(_RACES):
            record, etag = current if current else (None, None)
            if looked and record is not None and record.owner == self.owner and record.held(now):
                self._queued = False  # handed over to us (or our write whose answer was lost)
                return Lease(self.key, self.owner, record.generation, record.expires_at, etag or "")
            if record is None or record.takeable_by(self.owner, now, self.expiration):
                granted = Record.granted(record, self.owner, now, self.expiration)
                new_etag = self._put(granted, etag=etag, action="take")
                if new_etag is not None:
                    self._queued = False
                    return Lease(
                        self.key, self.owner, granted.generation, granted.expires_at, new_etag
                    )
            elif blind:
                pass  # held, says our memory: look before joining the queue
            elif record.must_queue(self.owner, now, self.expiration):
                queued = record.enqueued(self.owner, now, self.expiration)
                if self._put(queued, etag=etag, action="join the queue of") is not None:
                    self._queued = True
                    current = self._view  # decide again on it: free with us first? take it
                    continue
            else:
                return Busy(
                    record.lease(self.key, etag or ""),
                    record.position(self.owner, now, self.expiration),
                )
            # Stale, or we lost a race to another writer (a waiter joining, a release):
            # read and decide again at once, so as not to lose our place sleeping.
            blind = False
            current = self._fetch()
        return Busy(current[0].lease(self.key, current[1]) if current else None)

    def _leave(self, now: float) -> Lease | None:
        if not self._queued:
            return None
        self._queued = False
        current = self._view
        for _ in range(_ROUNDS):
            if current is None:
                return None
            record, etag = current
            if record.owner == self.owner and record.held(now):
                return Lease(self.key, self.owner, record.generation, record.expires_at, etag)
            if all(w.owner != self.owner for w in record.queue):
                return None
            if (
                self._put(
                    record.without(self.owner, now, self.expiration),
                    etag=etag,
                    action="leave the queue of",
                )
                is not None
            ):
                return None
            current = self._fetch()
        raise LockError(f"cannot leave the queue of the {self.where}: it keeps changing")

    # -- the holder ------------------------------------------------------------------------

    def _current_lease(self) -> Lease | None:
        current = self._fetch()
        return current[0].lease(self.key, current[1]) if current else None

    def _mine(self, lease: Lease) -> View | None:
        """What we know of the object, read afresh unless it shows ``lease`` as current."""
        if self._view is not None and self._view[0].holds(lease):
            return self._view
        return self._fetch()

    def _renew(self, lease: Lease, now: float) -> Lease:
        current = self._mine(lease)
        for _ in range(_ROUNDS):
            if current is None or not current[0].holds(lease):
                lost = current[0].lease(self.key, current[1]) if current else None
                raise self._lost(lease, lost, "renew")
            renewed = replace(current[0], expires_at=now + self.expiration)
            etag = self._put(renewed, etag=current[1], action="renew")
            if etag is not None:
                return Lease(self.key, lease.owner, lease.generation, renewed.expires_at, etag)
            current = self._fetch()  # waiters wrote to the object: check it is still ours
        raise TransientLockError(f"cannot renew the lease on the {self.where}: it keeps changing")

    def _release(self, lease: Lease, now: float) -> None:
        current = self._mine(lease)
        for _ in range(_ROUNDS):
            if current is not None and current[0].holds(lease):
                after = current[0].handed_over(now, self.expiration)
                if self._put(after, etag=current[1], action="release") is not None:
                    self._released_at = self.clock()
                    if after.owner is not None:
                        logger.debug("handed %s over to %s", self.key, after.owner)
                    return
                current = self._fetch()
                continue
            if current is not None and current[0].released_after(lease):
                return  # released already (a retry after an answer that never came back)
            raise self._lost(
                lease, current[0].lease(self.key, current[1]) if current else None, "release"
            )
        raise TransientLockError(f"cannot release the {self.where}: it keeps changing")

    def inspect(self) -> Lease | None:
        return self._current_lease()

    def waiters(self) -> tuple[str, ...]:
        current = self._fetch()
        if current is None:
            return ()
        return tuple(w.owner for w in current[0].live(self.clock(), self.expiration))

    def break_(self) -> Lease | None:
        for _ in range(10):
            raw = self._read_raw()
            if raw is None:
                return None
            data, etag = raw
            try:
                record = decode(data)
            except ValueError as exc:
                logger.warning("resetting %s: %s", self.where, exc)
                record = Record("(not a lambdalite lock)", first_generation(self.clock()), 0.0)
            if record.owner is None:
                return None
            if self._put(record.free(), etag=etag, action="break") is not None:
                logger.warning("broke %s held by %s", self.where, record.owner)
                return record.lease(self.key, etag)
        raise LockError(f"cannot break the {self.where}: it keeps changing")
