"""The lock record shared by the memory, file and object locks, and its JSON form.

A record is who holds the lock (``owner``, ``None`` when free), until when, and the
generation of the last grant. Releasing keeps the record (owner ``None``) so the next
grant's generation is still one more than the last one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from lambdalite.locks.base import Lease, first_generation

__all__ = ["FORMAT", "Record", "decode", "encode"]

#: ``format`` field of the JSON form, so a foreign object is never taken for a lock.
FORMAT = "lambdalite-lock/1"


@dataclass(frozen=True, slots=True)
class Record:
    owner: str | None
    generation: int
    expires_at: float

    @staticmethod
    def granted(previous: Record | None, owner: str, now: float, expiration: float) -> Record:
        """The record of a new grant to ``owner`` after ``previous``."""
        generation = previous.generation + 1 if previous else first_generation(now)
        return Record(owner, generation, now + expiration)

    def free(self) -> Record:
        return Record(None, self.generation, 0.0)

    def takeable_by(self, owner: str, now: float) -> bool:
        """Free, expired, or already ours (a retried acquire is success, not contention)."""
        return self.owner is None or self.owner == owner or self.expires_at < now

    def holds(self, lease: Lease) -> bool:
        return self.owner == lease.owner and self.generation == lease.generation

    def released_after(self, lease: Lease) -> bool:
        """Free with ``lease``'s generation: nobody took it since (so releasing is done)."""
        return self.owner is None and self.generation == lease.generation

    def lease(self, key: str, token: str = "") -> Lease | None:
        if self.owner is None:
            return None
        return Lease(key, self.owner, self.generation, self.expires_at, token)


def encode(record: Record) -> bytes:
    body = {
        "format": FORMAT,
        "owner": record.owner,
        "generation": record.generation,
        "expires_at": record.expires_at,
    }
    return json.dumps(body, sort_keys=True).encode()


def decode(data: bytes) -> Record:
    """The record in ``data``; ``ValueError`` if it is not a lambdalite lock record."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} record")
    owner, generation = body.get("owner"), body.get("generation")
    expires_at = body.get("expires_at")
    if (
        not (owner is None or (isinstance(owner, str) and owner))
        or not isinstance(generation, int)
        or isinstance(generation, bool)
        or generation < 0
        or not isinstance(expires_at, int | float)
        or isinstance(expires_at, bool)
        or not math.isfinite(expires_at)
    ):
        raise ValueError(f"malformed {FORMAT} record")
    return Record(owner, generation, float(expires_at))
