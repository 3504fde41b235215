"""Processes for the lock tests: each one a separate instance opening the lock from a spec."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from lambdalite.errors import LockTimeoutError
from lambdalite.locks import open_lock
from lambdalite.locks.base import Lock


@dataclass(frozen=True)
class LockSpec:
    """Enough to open the same lock in another process."""

    spec: str
    key: str
    storage_url: str | None = None
    endpoint_url: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    def open(self, **kwargs: Any) -> Lock:
        os.environ.update(self.env)
        storage = None
        if self.storage_url is not None:
            from lambdalite.storage import open_storage

            storage = open_storage(self.storage_url, endpoint_url=self.endpoint_url)
        return open_lock(self.spec, key=self.key, storage=storage, **kwargs)


def racer(spec: LockSpec, index: int, start: Any, done: Any, results: Any) -> None:
    """One attempt after the start gate; the winner keeps the lock until ``done``."""
    lock = spec.open(max_attempts=1)
    try:
        lock.inspect()  # connect before the gate, so that the attempts really race
        start.wait(120)
        try:
            lease = lock.acquire(0)
        except LockTimeoutError:
            results.put((index, "lost", None))
        else:
            results.put((index, "won", lease.generation))
    except Exception as exc:  # reported, so that the parent's assertion shows it
        results.put((index, "error", repr(exc)))
    finally:
        done.wait(120)
        lock.close()


def holder(spec: LockSpec, expiration: float, results: Any) -> None:
    """Take the lock, report the lease, then hang until killed."""
    lock = spec.open(expiration=expiration)
    lease = lock.acquire(10)
    results.put((lease.owner, lease.generation, lease.expires_at))
    while True:
        time.sleep(60)
