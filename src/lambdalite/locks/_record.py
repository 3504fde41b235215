"""The lock record shared by the memory and object locks (and, for its JSON form, the file
lock), and the queue rules every backend follows.

A record is who holds the lock (``owner``, ``None`` when free), until when, the
generation of the last grant, ``released`` (set by a release: the generation it ended,
so that a retried release is recognised after a hand-over too; a grant taken by its
new holder clears it), and the **queue** of
waiters: owner ids in arrival order, each with the time it last said it still waits
(``since``, by the waiter's clock).

The rules (the manifest's write lease of :mod:`lambdalite.replica.lease` is the model):

* an entry is *live* while ``since + expiration >= now``; a waiter refreshes its entry
  once it is older than half the expiration, so only a waiter that stopped polling
  (died, froze, gave up without leaving) goes stale, and stale entries are ignored and
  dropped by the next write;
* a contender may take the lock when it is free or expired **and** no live waiter is
  ahead of it (the queue is empty or it is the live head); a lock held by the contender
  itself is always takeable (a retried acquire is success, not contention);
* releasing *hands the lock over* to the live head: the record names the head as owner,
  with a new generation and a fresh expiry, so the next holder takes it without a write
  of its own; with no live waiter the lock is freed.

Releasing keeps the record (owner ``None``) so the next grant's generation is still one
more than the last one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Any, TypeGuard

from lambdalite.locks.base import Lease, first_generation

__all__ = ["FORMAT", "Record", "Waiter", "decode", "encode"]

#: ``format`` field of the JSON form, so a foreign object is never taken for a lock. The
#: queue and ``released`` are optional fields: a record without them is read as before,
#: and an older lambdalite ignores them (it does not queue, but still excludes).
FORMAT = "lambdalite-lock/1"


@dataclass(frozen=True, slots=True)
class Waiter:
    """One entry of the queue: who waits, and when it last said so (POSIX seconds)."""

    owner: str
    since: float

    def live(self, now: float, expiration: float) -> bool:
        return self.since + expiration >= now


def live_queue(queue: tuple[Waiter, ...], now: float, expiration: float) -> tuple[Waiter, ...]:
    """The live entries, first come first; an owner listed twice counts at its first place."""
    seen: set[str] = set()
    out = []
    for waiter in queue:
        if waiter.owner not in seen and waiter.live(now, expiration):
            seen.add(waiter.owner)
            out.append(waiter)
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Record:
    owner: str | None
    generation: int
    expires_at: float
    queue: tuple[Waiter, ...] = ()
    released: int | None = None

    @staticmethod
    def granted(previous: Record | None, owner: str, now: float, expiration: float) -> Record:
        """The record of a new grant to ``owner`` after ``previous`` (its live waiters stay
        queued, ``owner`` leaves the queue)."""
        if previous is None:
            return Record(owner, first_generation(now), now + expiration)
        queue = tuple(w for w in previous.live(now, expiration) if w.owner != owner)
        return Record(owner, previous.generation + 1, now + expiration, queue)

    def free(self) -> Record:
        """The lock taken away (``break_``): free, the queue kept for its head to take."""
        return Record(None, self.generation, 0.0, self.queue)

    def held(self, now: float) -> bool:
        return self.owner is not None and self.expires_at >= now

    def live(self, now: float, expiration: float) -> tuple[Waiter, ...]:
        return live_queue(self.queue, now, expiration)

    def position(self, owner: str, now: float, expiration: float) -> int | None:
        """``owner``'s place in the live queue (0: next), or ``None`` if it is not in it."""
        for index, waiter in enumerate(self.live(now, expiration)):
            if waiter.owner == owner:
                return index
        return None

    def takeable_by(self, owner: str, now: float, expiration: float) -> bool:
        """Ours already, or free or expired with no live waiter ahead of ``owner``."""
        if self.owner == owner:
            return True
        if self.held(now):
            return False
        live = self.live(now, expiration)
        return not live or live[0].owner == owner

    def must_queue(self, owner: str, now: float, expiration: float) -> bool:
        """Should ``owner`` (waiting) write its entry: missing, going stale, or listed twice?"""
        mine = [w for w in self.queue if w.owner == owner]
        return len(mine) != 1 or mine[0].since + expiration / 2 < now

    def enqueued(self, owner: str, now: float, expiration: float) -> Record:
        """``owner`` in the queue, said to be waiting at ``now``: appended when new, else
        refreshed in its place (stale entries dropped)."""
        queue = []
        placed = False
        for waiter in self.live(now, expiration):
            if waiter.owner == owner:
                waiter = Waiter(owner, now)
                placed = True
            queue.append(waiter)
        if not placed:
            queue.append(Waiter(owner, now))
        return replace(self, queue=tuple(queue))

    def without(self, owner: str, now: float, expiration: float) -> Record:
        """``owner`` gone from the queue (it gave up), stale entries dropped."""
        queue = tuple(w for w in self.live(now, expiration) if w.owner != owner)
        return replace(self, queue=queue)

    def handed_over(self, now: float, expiration: float) -> Record:
        """The record once its holder is done: granted to the live head, else free. Either
        way ``released`` names the generation that ended."""
        queue = tuple(w for w in self.live(now, expiration) if w.owner != self.owner)
        if not queue:
            return Record(None, self.generation, 0.0, (), self.generation)
        head = queue[0]
        return Record(head.owner, self.generation + 1, now + expiration, queue[1:], self.generation)

    def holds(self, lease: Lease) -> bool:
        return self.owner == lease.owner and self.generation == lease.generation

    def released_after(self, lease: Lease) -> bool:
        """``lease``'s holder released it already (freed, or handed over), so releasing
        again is done: not a loss."""
        if self.holds(lease):
            return False
        return self.released == lease.generation or (
            self.owner is None and self.generation == lease.generation
        )

    def lease(self, key: str, token: str = "") -> Lease | None:
        if self.owner is None:
            return None
        return Lease(key, self.owner, self.generation, self.expires_at, token)


def encode(record: Record) -> bytes:
    body: dict[str, Any] = {
        "format": FORMAT,
        "owner": record.owner,
        "generation": record.generation,
        "expires_at": record.expires_at,
    }
    if record.queue:
        body["queue"] = [{"owner": w.owner, "since": w.since} for w in record.queue]
    if record.released is not None:
        body["released"] = record.released
    return json.dumps(body, sort_keys=True).encode()


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _queue(value: object) -> tuple[Waiter, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError(f"malformed {FORMAT} queue")
    queue = []
    for entry in value:
        if not isinstance(entry, dict):
            raise ValueError(f"malformed {FORMAT} queue entry")
        owner, since = entry.get("owner"), entry.get("since")
        if not (isinstance(owner, str) and owner) or not _number(since):
            raise ValueError(f"malformed {FORMAT} queue entry")
        queue.append(Waiter(owner, float(since)))
    return tuple(queue)


def decode(data: bytes) -> Record:
    """The record in ``data``; ``ValueError`` if it is not a lambdalite lock record."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} record")
    owner, generation = body.get("owner"), body.get("generation")
    expires_at, released = body.get("expires_at"), body.get("released")
    if (
        not (owner is None or (isinstance(owner, str) and owner))
        or not isinstance(generation, int)
        or isinstance(generation, bool)
        or generation < 0
        or not _number(expires_at)
        or not (released is None or (isinstance(released, int) and not isinstance(released, bool)))
    ):
        raise ValueError(f"malformed {FORMAT} record")
    return Record(owner, generation, float(expires_at), _queue(body.get("queue")), released)
