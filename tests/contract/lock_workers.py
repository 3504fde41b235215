"""Processes for the lock tests: each one a separate instance opening the lock from a spec."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lambdalite.errors import LockTimeoutError
from lambdalite.locks import open_lock
from lambdalite.locks.base import Busy, Lock

Requests = Callable[[], tuple[int, int]]
"""Returns (writes, reads) a lock sent to its service so far."""


def count_requests(lock: Any) -> Requests | None:
    """Count the requests of an object lock (storage ``PUT`` and ``GET``) or a DynamoDB lock
    (``UpdateItem`` and ``GetItem``, by a botocore event hook); ``None`` for the others."""
    from lambdalite.locks.dynamodb import DynamoDBLock
    from lambdalite.locks.object import ObjectLock
    from lambdalite.replica.stats import CountingStorage

    if isinstance(lock, ObjectLock):
        counting = CountingStorage(lock.storage)
        lock.storage = counting
        return lambda: (counting.stats.puts, counting.stats.gets)
    if isinstance(lock, DynamoDBLock):
        counts = {"UpdateItem": 0, "GetItem": 0}

        def hook(model: Any, **_: Any) -> None:
            if model.name in counts:
                counts[model.name] += 1

        lock.client.meta.events.register("before-call.dynamodb", hook)
        return lambda: (counts["UpdateItem"], counts["GetItem"])
    return None


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


@dataclass(frozen=True)
class Report:
    """What a :func:`contender` saw (``error`` is empty if all went well)."""

    index: int
    error: str
    bypassed: list[int]  # grants to others while it waited, from its first look
    queued: list[int]  # grants to others while it waited, from joining the queue
    waits: list[float]  # seconds
    spans: list[tuple[float, float]]  # (acquired, releasing), monotonic
    requests: tuple[int, int] | None  # (writes, reads) in all


def contender(
    spec: LockSpec,
    index: int,
    rounds: int,
    hold: float,
    timeout: float,
    start: Any,
    grants: Any,
    results: Any,
) -> None:
    """Take the lock ``rounds`` times (holding it ``hold`` seconds), no attempt count.

    Reports, per acquire: how many grants went to others between the moment it started
    asking and its own grant (``grants`` is a shared counter bumped by every holder), and
    between the moment it joined the queue (its first look that found it in line) and its
    grant; its wait; when it held the lock (monotonic: all processes share the clock); and
    the requests it sent (writes, reads), if the backend counts them.
    """
    lock = spec.open()
    bypassed: list[int] = []
    queued: list[int] = []
    waits: list[float] = []
    spans: list[tuple[float, float]] = []
    joined: list[int] = []
    look = lock._try_acquire  # type: ignore[attr-defined]

    def watched(now: float) -> Any:
        result = look(now)
        if isinstance(result, Busy) and result.position is not None and not joined:
            joined.append(grants.value)
        return result

    lock._try_acquire = watched  # type: ignore[attr-defined]
    try:
        requests = count_requests(lock)
        lock.inspect()  # connect before the gate
        baseline = requests() if requests else (0, 0)
        start.wait(120)
        for _ in range(rounds):
            joined.clear()
            before = grants.value
            started = time.monotonic()
            lease = lock.acquire(timeout)
            got = time.monotonic()
            waits.append(got - started)
            with grants.get_lock():
                grants.value += 1
                bypassed.append(grants.value - before - 1)
                if joined:
                    queued.append(grants.value - joined[0] - 1)
            time.sleep(hold)
            released = time.monotonic()
            lock.release(lease)
            spans.append((got, released))
        spent = requests() if requests else (0, 0)
        sent = (spent[0] - baseline[0], spent[1] - baseline[1])
        results.put(Report(index, "", bypassed, queued, waits, spans, sent if requests else None))
    except Exception as exc:  # reported, so that the parent's assertion shows it
        results.put(Report(index, repr(exc), bypassed, queued, waits, spans, None))
    finally:
        lock.close()
