"""The lock interface: who should write now.

A lock is a hint about who should work, not a guarantee about who does (the idea of
filelock's ``_lease.py``). Holding a lease means "nobody else was granted this lock
until ``expires_at``, by the clocks involved"; it cannot stop a holder that froze
(a suspended Lambda, a GC pause, a stalled network) from waking up after its lease
expired and acting on stale beliefs. Only the resource itself can fence a
superseded holder: in replica mode the conditional write of the manifest
(``If-Match``) does, so the lock only saves wasted work; in shared-file mode the
lease check before ``COMMIT`` (:meth:`Lock.ensure`) narrows the window but cannot
close it (``docs/locks.md``).

A lease carries:

* ``owner``: who holds it (one id per :class:`Lock` object; a retried acquire by the
  same owner is success, not contention, which makes acquiring idempotent);
* ``generation``: the fencing counter, bumped on every grant, by any owner,
  including hand-overs and takeovers after expiry; it never goes down (when a backend
  finds no trace of the lock, the count starts from the clock in milliseconds, see
  :func:`first_generation`);
* ``expires_at``: POSIX seconds by the clock the lock was given (injected, so tests
  expire leases without sleeping);
* ``token``: backend data that identifies this very grant (an ETag, a lock id).

**Writers wait their turn.** A contender that finds the lock held joins a FIFO queue of
waiters kept with the lock (one write), then polls (cheap reads, 5 ms growing to 50 ms
with jitter, never past its timeout) until the lock is handed to it, or is free with it
first in line. Releasing hands the lock to the first live waiter (the rules are in
:mod:`lambdalite.locks._record`; :mod:`lambdalite.replica.lease` is the model). One
``timeout`` governs a wait; ``max_attempts``, when set, also bounds it, counted in
django-sqlite-efs's attempts (50 ms, 100 ms, 150 ms, ... apart: :class:`AttemptBudget`), so a
count set for it waits as long as it did there while the looks stay quick; by default there is
no count.

Every backend subclasses :class:`LeaseLock`, which holds what they share: the acquire
loop (contention ends in :class:`~lambdalite.errors.LockTimeoutError` naming the holder;
any other error fails at once; a waiter that gives up leaves the queue), the owner
checks and :meth:`LeaseLock.ensure` (renew inline when close to expiry: no heartbeat
threads, since a frozen Lambda cannot run them).

One :class:`Lock` object stands for one instance (one owner): calls on it must not
overlap (the engine serialises them); give each thread or instance its own object.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import random
import socket
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from lambdalite.errors import LockError, LockLostError, LockTimeoutError

__all__ = [
    "Backoff",
    "Busy",
    "Clock",
    "Lease",
    "LeaseLock",
    "Lock",
    "TransientLockError",
    "first_generation",
    "format_time",
    "new_owner_id",
    "poll_schedule",
]

logger = logging.getLogger("lambdalite.locks")

Clock = Callable[[], float]
"""Returns POSIX seconds (``time.time`` unless a test injects its own)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """One grant of a lock (or, from :meth:`Lock.inspect`, the current holder's grant)."""

    key: str
    owner: str
    generation: int
    expires_at: float
    token: str = ""

    def remaining(self, now: float) -> float:
        """Seconds left at ``now`` (negative once expired)."""
        return self.expires_at - now

    def expired(self, now: float) -> bool:
        return self.expires_at < now


@dataclass(frozen=True, slots=True)
class Busy:
    """One acquire attempt lost: ``holder`` is who has the lock, if the backend saw it;
    ``position`` is our place in the queue of waiters (0: next), if known; ``retry_after``
    how long to wait before the next look, if the backend knows better than the poll
    schedule."""

    holder: Lease | None
    position: int | None = None
    retry_after: float | None = None


class TransientLockError(LockError):
    """A failure worth retrying (timeout, throttling, 5xx). The acquire loop retries it;
    elsewhere it reaches the caller as the :class:`LockError` it is."""


@runtime_checkable
class Lock(Protocol):
    """A lock on one key. Every method may raise :class:`~lambdalite.errors.LockError`."""

    @property
    def key(self) -> str: ...

    @property
    def owner(self) -> str: ...

    @property
    def expiration(self) -> float: ...

    def acquire(self, timeout: float) -> Lease:
        """Take the lock, waiting its turn up to ``timeout`` seconds (and ``max_attempts``
        looks, when set).

        Contention ends in ``LockTimeoutError`` (``.owner``, ``.expires_at`` of the holder);
        access denied, a missing table and the like fail at once with a ``LockError``.
        """
        ...

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` to ``expiration`` seconds from now; ``LockLostError`` if it
        expired or was taken over."""
        ...

    def release(self, lease: Lease) -> None:
        """Hand the lock to the first waiter, or free it. ``LockLostError`` (and nothing
        changed) if ``lease`` is not this lock's, or another owner took the lock over.
        Releasing twice is harmless."""
        ...

    def ensure(self, lease: Lease, min_remaining: float) -> Lease:
        """``lease`` itself if at least ``min_remaining`` seconds are left, else a renewed
        lease; ``LockLostError`` if it expired or was lost."""
        ...

    def inspect(self) -> Lease | None:
        """The current (possibly expired) holder's lease, or ``None`` if the lock is free."""
        ...

    def break_(self) -> Lease | None:
        """Force-release (``lambdalite lock break``): returns the lease it took away, if any.
        The generation is kept, so the next acquire still gets a bigger one."""
        ...

    def close(self) -> None:
        """Drop clients and file handles (does not release a held lease)."""
        ...


def new_owner_id() -> str:
    """A unique owner id: ``host:pid:random`` (readable in ``lock show``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def first_generation(now: float) -> int:
    """The generation of a lock whose record does not exist (never taken, or deleted by
    DynamoDB's TTL or by hand): the clock in milliseconds. Every later acquire adds 1, so
    generations stay increasing across a lost record as long as fewer than 1000 acquires per
    second happened on average and clocks agree to within the time the record was gone."""
    return max(1, int(now * 1000))


def format_time(epoch: float) -> str:
    """ISO 8601 UTC, milliseconds."""
    if not math.isfinite(epoch):
        return "never"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class Backoff:
    """Capped exponential backoff with jitter: attempt ``n`` (from 0) waits a uniform random
    time in ``[floor * c, c]`` with ``c = min(cap, base * 2**n)``; ``floor = 0`` is full
    jitter (AWS Architecture Blog, "Exponential Backoff And Jitter")."""

    def __init__(
        self,
        base: float = 0.025,
        cap: float = 1.0,
        rng: random.Random | None = None,
        *,
        floor: float = 0.0,
    ) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        if not 0 <= floor <= 1:
            raise ValueError("backoff needs 0 <= floor <= 1")
        self.base = base
        self.cap = cap
        self.floor = floor
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.base * 2.0 ** min(attempt, 62))

    def delay(self, attempt: int) -> float:
        ceiling = self.ceiling(attempt)
        return self._rng.uniform(self.floor * ceiling, ceiling)


#: django-sqlite-efs waited ``n * ATTEMPT_SPACING`` seconds after its attempt ``n``.
ATTEMPT_SPACING = 0.05


class AttemptBudget:
    """An explicitly set attempt count (``SQLITE_LOCK_MAX_ATTEMPTS``), in django-sqlite-efs's
    attempts: a look at a busy lock counts as an attempt only once the waiter has waited, since
    the previous one, as long as that tool waited (50 ms, then 100 ms, 150 ms, ...). So
    ``max_attempts = 10`` waits at least the 2.25 s it waited there, while a waiter still looks
    often enough to take the lock when its turn comes. A look that failed (the lock could not
    be reached) always counts. ``None``: no count (only the timeout ends a wait)."""

    def __init__(self, max_attempts: int | None) -> None:
        self.max_attempts = max_attempts
        self.counted = 0
        self._waited = 0.0  # seconds paused so far
        self._due = 0.0  # the next look counts once _waited reaches this

    def look(self, *, failed: bool = False) -> None:
        """Record one look at the lock (``failed``: it could not be reached)."""
        if failed or self._waited >= self._due:
            self.counted += 1
            self._due = self._waited + ATTEMPT_SPACING * self.counted

    def paused(self, seconds: float) -> None:
        """Record a pause between two looks."""
        self._waited += seconds

    @property
    def spent(self) -> bool:
        return self.max_attempts is not None and self.counted >= self.max_attempts


def poll_schedule() -> Backoff:
    """How a waiter polls: 5 ms doubling to 50 ms, each wait jittered in its upper half (so
    never a tight loop, and waiters do not poll in step)."""
    return Backoff(base=0.005, cap=0.05, floor=0.5)


class LeaseLock(ABC):
    """What every backend shares. Subclasses implement one-shot primitives:

    * ``_try_acquire(now)``: one look at the lock; our :class:`Lease` (taken, or handed
      over to us), or :class:`Busy` after making sure we are in the queue; raise
      :class:`TransientLockError` for retryable failures, another ``LockError`` otherwise;
    * ``_begin_acquire()``: called once before the first look of each acquire;
    * ``_leave(now)``: we give up: leave the queue (a no-op if we never joined it); returns
      the lease if the lock was handed to us in the meantime;
    * ``_pause(seconds)``: wait between two looks (sleep, or wait for a change);
    * ``_renew(lease, now)``, ``_release(lease, now)``, ``inspect()``, ``break_()``,
      ``waiters()``.
    """

    #: How the backend is named in messages ("DynamoDB table t", "lock file /x", ...).
    where: str = "lock"

    def __init__(
        self,
        key: str,
        *,
        expiration: float = 30.0,
        max_attempts: int | None = None,
        clock: Clock = time.time,
        owner: str | None = None,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not key:
            raise ValueError("a lock needs a non-empty key")
        if not expiration > 0 or not math.isfinite(expiration):
            raise ValueError(f"lock expiration must be a finite number > 0, not {expiration!r}")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, not {max_attempts!r}")
        self._key = key
        self._owner = owner or new_owner_id()
        self._expiration = float(expiration)
        self.max_attempts = max_attempts
        self.clock = clock
        self.backoff = backoff or poll_schedule()
        self._sleep = sleep
        # Seconds between two grants, as seen waiting lately.
        self._intervals: collections.deque[float] = collections.deque(maxlen=16)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.where} key={self._key!r} owner={self._owner!r}>"

    @property
    def key(self) -> str:
        return self._key

    @property
    def owner(self) -> str:
        return self._owner

    @property
    def expiration(self) -> float:
        return self._expiration

    # -- the shared logic ------------------------------------------------------------------

    def acquire(self, timeout: float) -> Lease:
        if timeout < 0 or math.isnan(timeout):
            raise ValueError(f"timeout must be >= 0, not {timeout!r}")
        start = time.monotonic()
        deadline = start + timeout
        holder: Lease | None = None
        failure: TransientLockError | None = None
        attempts = 0
        budget = AttemptBudget(self.max_attempts)
        step = 0  # of the poll schedule
        position: int | None = None
        result: Lease | Busy | None = None
        current: int | None = None  # the generation of the grant we saw last
        seen: tuple[float, int] | None = None  # (monotonic, generation) at a previous look
        self._begin_acquire()
        try:
            while True:
                attempts += 1
                try:
                    result = self._try_acquire(self.clock())
                except TransientLockError as exc:
                    logger.debug("%s: acquire attempt %d failed: %s", self, attempts, exc)
                    failure = exc
                    result = None
                else:
                    if isinstance(result, Lease):
                        logger.debug(
                            "acquired %s generation %d after %d look(s)",
                            self._key,
                            result.generation,
                            attempts,
                        )
                        return result
                    holder = result.holder or holder
                    position = result.position
                    if result.holder is not None and result.holder.generation != current:
                        current = result.holder.generation
                        seen = self._pace(seen, current)
                        if position == 0:
                            step = 0  # next in line behind a new holder: look often
                remaining = deadline - time.monotonic()
                budget.look(failed=result is None)
                if remaining <= 0 or budget.spent:
                    break
                hint = result.retry_after if isinstance(result, Busy) else None
                delay = min(self._delay(step, position) if hint is None else hint, remaining)
                budget.paused(delay)
                self._pause(delay)
                step += 1
            handed = self._leave_quietly()
        except BaseException:
            handed = self._leave_quietly()
            if handed is not None:  # handed to us while we fail: pass it on
                with contextlib.suppress(LockError):
                    self._release(handed, self.clock())
            raise
        if handed is not None:
            logger.debug("%s was handed to us as we gave up: keeping it", self._key)
            return handed
        elapsed = time.monotonic() - start
        if holder is None and failure is not None:
            raise LockError(
                f"could not reach the lock {self._key!r} ({self.where}) in {attempts} "
                f"attempt(s) over {elapsed:.2f}s: {failure}"
            ) from failure
        raise self._timeout_error(holder, attempts, elapsed)

    def _pace(self, seen: tuple[float, int] | None, generation: int) -> tuple[float, int]:
        """Learn the time between two grants from the generations seen at two looks."""
        now = time.monotonic()
        if seen is not None and generation > seen[1]:
            self._intervals.append((now - seen[0]) / (generation - seen[1]))
        return now, generation

    def _delay(self, step: int, position: int | None) -> float:
        """The wait before the next look: the poll schedule (5 ms doubling to 50 ms, from
        5 ms again whenever the lock passes to the holder we are next after). A waiter
        ``position`` places behind the first in line cannot be served before ``position +
        1`` more grants: it sleeps ``0.7 * position`` times the shortest grant interval
        seen lately (at most 1 s). Intervals vary a lot (commits do), and a waiter that
        wakes late leaves the lock idle once it is handed to it: the shortest is safe."""
        delay = self.backoff.delay(step)
        if position and self._intervals:
            delay = max(delay, min(1.0, 0.7 * position * min(self._intervals)))
        return delay

    def _leave_quietly(self) -> Lease | None:
        try:
            return self._leave(self.clock())
        except LockError as exc:
            logger.warning(
                "%s: could not leave the queue (the entry goes stale by itself): %s", self, exc
            )
            return None

    def _timeout_error(
        self, holder: Lease | None, attempts: int, elapsed: float
    ) -> LockTimeoutError:
        if holder is None:
            who = "another owner (it changed hands while we tried)"
            owner, expires_at = None, None
        else:
            left = holder.remaining(self.clock())
            who = (
                f"{holder.owner} (generation {holder.generation}) until "
                f"{format_time(holder.expires_at)}, {left:.1f}s from now"
            )
            owner, expires_at = holder.owner, holder.expires_at
        logger.info("lock %s busy: held by %s", self._key, who)
        return LockTimeoutError(
            f"lock {self._key!r} ({self.where}) is busy: held by {who}; gave up after "
            f"{attempts} attempt(s) in {elapsed:.2f}s",
            owner=owner,
            expires_at=expires_at,
        )

    def _check_mine(self, lease: Lease, action: str) -> None:
        if lease.key != self._key:
            raise LockLostError(
                f"cannot {action} a lease on {lease.key!r} with the lock on {self._key!r}"
            )
        if lease.owner != self._owner:
            raise LockLostError(
                f"cannot {action} the lease of {lease.owner}: this lock's owner is {self._owner}"
            )

    def _lost(self, lease: Lease, holder: Lease | None, action: str) -> LockLostError:
        if holder is None:
            now_held = "it is free now (broken or expired and cleaned up)"
        elif holder.owner == lease.owner and holder.generation == lease.generation:
            now_held = f"it expired at {format_time(holder.expires_at)}"
        else:
            now_held = (
                f"it is now held by {holder.owner} (generation {holder.generation}) until "
                f"{format_time(holder.expires_at)}"
            )
        logger.warning(
            "lease on %s (generation %d) lost: %s", self._key, lease.generation, now_held
        )
        return LockLostError(
            f"cannot {action} the lease on {self._key!r} (generation {lease.generation}, "
            f"{self.where}): {now_held}"
        )

    def renew(self, lease: Lease) -> Lease:
        self._check_mine(lease, "renew")
        now = self.clock()
        if lease.expired(now):
            raise LockLostError(
                f"cannot renew the lease on {self._key!r} (generation {lease.generation}): "
                f"it expired at {format_time(lease.expires_at)}, "
                f"{now - lease.expires_at:.1f}s ago"
            )
        return self._renew(lease, now)

    def release(self, lease: Lease) -> None:
        self._check_mine(lease, "release")
        self._release(lease, self.clock())
        logger.debug("released %s generation %d", self._key, lease.generation)

    def ensure(self, lease: Lease, min_remaining: float) -> Lease:
        self._check_mine(lease, "use")
        if lease.remaining(self.clock()) >= min_remaining:
            return lease
        return self.renew(lease)

    def close(self) -> None:  # noqa: B027 - a no-op that backends may override
        """Nothing to drop by default."""

    def waiters(self) -> tuple[str, ...]:
        """The owners waiting for the lock, first in line first (live entries only)."""
        return ()

    # -- hooks with defaults ---------------------------------------------------------------

    def _begin_acquire(self) -> None:  # noqa: B027 - a no-op that backends may override
        """Reset per-acquire state (called before the first look)."""

    def _leave(self, now: float) -> Lease | None:
        """Leave the queue after giving up; the lease if the lock was handed to us."""
        return None

    def _pause(self, seconds: float) -> None:
        self._sleep(seconds)

    # -- backend primitives ----------------------------------------------------------------

    @abstractmethod
    def _try_acquire(self, now: float) -> Lease | Busy: ...

    @abstractmethod
    def _renew(self, lease: Lease, now: float) -> Lease: ...

    @abstractmethod
    def _release(self, lease: Lease, now: float) -> None: ...

    @abstractmethod
    def inspect(self) -> Lease | None: ...

    @abstractmethod
    def break_(self) -> Lease | None: ...
