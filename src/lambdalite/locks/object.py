"""The object lock: a small lock object on any :class:`~lambdalite.storage.base.Storage`.

The S3 lease of Litestream's ``s3/leaser.go``, on the storage protocol, so it works the
same on S3, the local folder remote and the in-memory fake. The lock object (JSON:
``format``, ``owner``, ``generation``, ``expires_at``) lives at ``key`` on the storage
(by default ``lock`` under the remote prefix):

* take a lock never taken: ``put(if_none_match=True)``;
* take a free or expired lock, renew, release: ``put(if_match=<ETag we read or wrote>)``;
  of N racers exactly one wins, the others get ``PreconditionFailedError``;
* release writes the object back as free (``owner: null``, generation kept), rather
  than deleting it, so the next grant's generation is still one more; ``break_`` does
  the same without asking the holder.

The ETag of a lease is its fencing token: only a write conditioned on it can renew or
release it. Every grant carries a new generation or expiry, so no two versions of the
object have the same bytes (and so the same S3 ETag) unless they are the same state.
No extra AWS service and no IAM beyond ``s3:GetObject`` and ``s3:PutObject`` on the key.
"""

from __future__ import annotations

import logging
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


class ObjectLock(LeaseLock):
    """A lock object at ``key`` on ``storage``."""

    def __init__(self, storage: Storage, key: str = "lock", **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.storage = storage
        self.where = f"lock object {key!r} on {storage.url}"

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

    def _read(self) -> tuple[Record, str] | None:
        """(record, ETag) of the lock object, or ``None`` if there is none."""
        raw = self._read_raw()
        if raw is None:
            return None
        try:
            return decode(raw[0]), raw[1]
        except ValueError as exc:
            raise LockError(
                f"the {self.where} is not a lambdalite lock ({exc}); if nothing else uses "
                "that key, `lambdalite lock break` resets it"
            ) from None

    def _put(self, record: Record, *, etag: str | None, action: str) -> str | None:
        """Write ``record`` if the object is still at ``etag`` (absent if ``None``): the new
        ETag, or ``None`` if the condition failed."""
        try:
            if etag is None:
                return self.storage.put(self.key, encode(record), if_none_match=True)
            return self.storage.put(self.key, encode(record), if_match=etag)
        except PreconditionFailedError:
            return None
        except StorageError as exc:
            raise self._translate(exc, action) from exc

    def _try_acquire(self, now: float) -> Lease | Busy:
        current = self._read()
        previous, etag = current if current else (None, None)
        if previous is not None and not previous.takeable_by(self.owner, now):
            return Busy(previous.lease(self.key, etag or ""))
        granted = Record.granted(previous, self.owner, now, self.expiration)
        new_etag = self._put(granted, etag=etag, action="take")
        if new_etag is None:
            return Busy(None)  # lost the race; the next attempt reads the winner
        return Lease(self.key, self.owner, granted.generation, granted.expires_at, new_etag)

    def _current_lease(self) -> Lease | None:
        current = self._read()
        return current[0].lease(self.key, current[1]) if current else None

    def _renew(self, lease: Lease, now: float) -> Lease:
        renewed = Record(lease.owner, lease.generation, now + self.expiration)
        etag = self._put(renewed, etag=lease.token, action="renew")
        if etag is None:
            raise self._lost(lease, self._current_lease(), "renew")
        return Lease(self.key, lease.owner, lease.generation, renewed.expires_at, etag)

    def _release(self, lease: Lease, now: float) -> None:
        free = Record(None, lease.generation, 0.0)
        if self._put(free, etag=lease.token, action="release") is not None:
            return
        current = self._read()
        if current is not None and current[0].released_after(lease):
            return  # released already (a retry after an answer that never came back)
        raise self._lost(lease, current[0].lease(self.key, current[1]) if current else None,
                         "release")

    def inspect(self) -> Lease | None:
        return self._current_lease()

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
