"""No lock: optimistic only.

Every acquire succeeds at once with a lease that never expires; nothing is shared, so
any number of instances "hold" it together. In replica mode this is safe, because the
conditional write of the manifest still decides who commits (the losers get
``ConflictError`` and retry): the lock only ever saved wasted work. Shared-file mode
refuses it (the shared file has no conditional write).
"""

from __future__ import annotations

import math
from typing import Any

from lambdalite.locks.base import Busy, Lease, LeaseLock

__all__ = ["NoLock"]


class NoLock(LeaseLock):
    """Grants every acquire (generation 0, ``expires_at`` infinite)."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        super().__init__(key, **kwargs)
        self.where = "no lock (optimistic)"

    def _lease(self) -> Lease:
        return Lease(self.key, self.owner, 0, math.inf)

    def _try_acquire(self, now: float) -> Lease | Busy:
        return self._lease()

    def _renew(self, lease: Lease, now: float) -> Lease:
        return self._lease()

    def _release(self, lease: Lease, now: float) -> None:
        return None

    def inspect(self) -> Lease | None:
        return None

    def break_(self) -> Lease | None:
        return None
