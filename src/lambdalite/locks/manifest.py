"""``lock=manifest``: a view of the write lease kept in the manifest, for ``status`` and ``lock``.

The lease itself is taken and handed over by the engine's commit path
(:mod:`lambdalite.replica.lease`): it is not a lock an application acquires on
its own (use ``lock=object`` for that). This class lets ``lambdalite lock show``
and ``lambdalite status`` say who holds it and how many writers wait, and
``lambdalite lock break`` clear it (a conditional write of the manifest: the
holder, if it is alive, can no longer publish and retries).
"""

from __future__ import annotations

import time
from typing import Any

from lambdalite.errors import LockError, NotFoundError, PreconditionFailedError, StorageError
from lambdalite.locks.base import Lease
from lambdalite.replica import format as fmt
from lambdalite.storage.base import Storage

__all__ = ["ManifestLease"]


class ManifestLease:
    """The manifest's write lease on ``storage`` (inspect and break only)."""

    def __init__(self, storage: Storage, *, expiration: float = 10.0, **_: Any) -> None:
        self.storage = storage
        self._expiration = expiration

    @property
    def key(self) -> str:
        return fmt.MANIFEST_KEY

    @property
    def owner(self) -> str:
        return "(the engine's commits)"

    @property
    def expiration(self) -> float:
        return self._expiration

    def _refuse(self, what: str) -> LockError:
        return LockError(
            f"the manifest's write lease is taken and handed over by commits; it cannot be "
            f"{what} on its own (use lock=object for a lock of your own)"
        )

    def acquire(self, timeout: float) -> Lease:
        raise self._refuse("acquired")

    def renew(self, lease: Lease) -> Lease:
        raise self._refuse("renewed")

    def release(self, lease: Lease) -> None:
        raise self._refuse("released")

    def ensure(self, lease: Lease, min_remaining: float) -> Lease:
        raise self._refuse("renewed")

    def _read(self) -> tuple[fmt.Manifest, str] | None:
        try:
            blob = self.storage.get(fmt.MANIFEST_KEY)
        except NotFoundError:
            return None
        except StorageError as exc:
            raise LockError(f"cannot read the manifest of {self.storage.url}: {exc}") from exc
        assert blob is not None
        return fmt.decode_manifest(blob.data), blob.etag

    def inspect(self) -> Lease | None:
        current = self._read()
        if current is None or current[0].lease is None:
            return None
        lease = current[0].lease
        return Lease(
            fmt.MANIFEST_KEY, lease.owner, len(lease.queue), lease.expires_at, lease.ticket
        )

    def break_(self) -> Lease | None:
        for _ in range(10):
            current = self._read()
            if current is None or current[0].lease is None:
                return None
            m, etag = current
            assert m.lease is not None
            try:
                self.storage.put(
                    fmt.MANIFEST_KEY, fmt.encode_manifest(m.next(lease=None)), if_match=etag
                )
            except PreconditionFailedError:
                continue
            except StorageError as exc:
                raise LockError(f"cannot write the manifest of {self.storage.url}: {exc}") from exc
            lease = m.lease
            return Lease(
                fmt.MANIFEST_KEY, lease.owner, len(lease.queue), lease.expires_at, lease.ticket
            )
        raise LockError(f"cannot break the write lease of {self.storage.url}: it keeps changing")

    def close(self) -> None:
        pass

    def now(self) -> float:
        return time.time()
