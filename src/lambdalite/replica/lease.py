"""The write lease: writers wait their turn, fairly, with the manifest as the lock (DESIGN §8).

No extra service and no extra object: the lease lives in the manifest
(:class:`~lambdalite.replica.format.WriteLease`), so it is fenced by the same
conditional writes as every commit.

* **Claim.** A writer whose transaction is about to write reads the manifest
  (usually a 304: it just did) and, when nobody holds the lease, writes the
  same version back with itself as holder, ``If-Match`` the ETag it read. Its
  commit is later published ``If-Match`` the ETag of that claim, so nothing
  can come between: a transaction that starts by writing never conflicts.
* **Wait.** When another writer holds it, the waiter joins the queue with one
  conditional write, then polls with conditional GETs (a 304 costs no body).
  The holder's commit names the queue's head as the next holder: the lease is
  handed over by the publishing write itself. First come, first served, so no
  waiter starves.
* **Release.** A writer that ends without publishing (a rollback, a
  transaction that changed nothing) hands the lease over with one write.
* **Expiry.** A holder that died or froze loses the lease after ``duration``
  seconds; the next writer takes it over. If the old holder wakes up, the
  manifest's ETag has moved and its publish is refused: the storage fences it.
  A waiter that stopped polling is dropped from the queue after ``duration``.

The lease only decides who should write now; the conditional write of the
manifest still decides what is published, so a bug or a clock far off can cost
time, never a lost update.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from lambdalite.errors import (
    ConflictError,
    LockTimeoutError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
    TransientStorageError,
)
from lambdalite.locks.base import AttemptBudget
from lambdalite.replica import format as fmt
from lambdalite.replica.chain import Read, read_manifest
from lambdalite.replica.pages import checksum_hex

if TYPE_CHECKING:
    from lambdalite.replica.engine import Replica

__all__ = ["LeaseKeeper", "handoff", "next_holder"]

log = logging.getLogger("lambdalite.replica.lease")

_POLL = (0.005, 0.05)  # seconds between two polls of a waiter: from, up to
_FREE = "0"  # the ticket of a free lease that still has a queue (its head claims it next)


def next_holder(lease: fmt.WriteLease | None, now: float, duration: float) -> fmt.WriteLease | None:
    """The lease a manifest carries once its holder is done: the first live waiter's, or None."""
    if lease is None:
        return None
    queue = [w for w in lease.queue if w.since + duration >= now]
    if not queue:
        return None
    head = queue[0]
    return fmt.WriteLease(head.ticket, head.owner, now + duration, tuple(queue[1:]))


class LeaseKeeper:
    """Claims and hands over the write lease of one replica's remote (one claim at a time)."""

    def __init__(
        self, replica: Replica, duration: float, *, max_attempts: int | None = None
    ) -> None:
        self.r = replica
        self.duration = duration
        self.max_attempts = max_attempts  # looks while waiting (``lock_max_attempts``)
        self.ticket: str | None = None  # the lease this process holds, if any
        self.hold_estimate = 0.1  # seconds a claim is held, as seen here (a moving average)
        self._held_since = 0.0
        self._asked = 0.0  # time.monotonic() when the last request to the manifest was sent
        self._claim_asked = 0.0  # ... for the manifest of the current claim

    # ------------------------------------------------------------------ claim

    def acquire(self, timeout: float, *, read_version: int | None = None) -> Read:
        """Hold the lease; the manifest of the claim (its version is the newest) is returned.

        Waits up to ``timeout`` seconds, then :class:`LockTimeoutError` names the holder.
        ``read_version``: the transaction already read that version; if another writer
        holds the lease (or the version moved) it will have published by the time this one
        gets its turn, so waiting is pointless: :class:`ConflictError` at once.
        """
        r = self.r
        ticket = fmt.new_nonce()
        deadline = time.monotonic() + max(timeout, 0.0)
        local = r.local
        current: Read | None
        if local.manifest is not None and local.etag is not None and local.manifest_raw:
            current = (local.manifest, local.etag, local.manifest_raw)  # usually just confirmed
        else:
            current = self._read(None)
        queued = False
        budget = AttemptBudget(self.max_attempts)  # lock_max_attempts, if set
        while True:
            now = r.clock()
            m = current[0] if current is not None else None
            lease = m.lease if m is not None else None
            if lease is not None and lease.ticket == ticket:
                assert current is not None
                self._hold(ticket)
                self._confirmed()
                return current  # handed over by the holder's commit
            live = [w for w in lease.queue if w.since + self.duration >= now] if lease else []
            free = lease is None or lease.expires_at < now
            ours_next = not live or live[0].ticket == ticket
            if read_version is not None and (
                not free or not ours_next or (m is not None and m.version != read_version)
            ):
                raise ConflictError(
                    "another instance is writing (or wrote) since this transaction read version "
                    f"{read_version}; retry the transaction (BEGIN IMMEDIATE waits its turn)"
                )
            if free and ours_next:
                claim = fmt.WriteLease(
                    ticket,
                    r.writer_id,
                    now + self.duration,
                    tuple(w for w in live if w.ticket != ticket),
                )
                done = self._write(current, claim)
                if done is not None:
                    self._hold(ticket)
                    self._confirmed()
                    return done
                current = self._read(current)
                continue
            mine = next((w for w in live if w.ticket == ticket), None)
            if not queued or mine is None or mine.since + self.duration / 2 < now:
                waiter = fmt.Waiter(ticket, r.writer_id, now)
                others = tuple(w for w in live if w.ticket != ticket)
                # a free lease stays free (expired) for the head of the queue to claim
                keep = lease if lease is not None else fmt.WriteLease(_FREE, "(free)", 0.0)
                written = self._write(current, replace(keep, queue=(*others, waiter)))
                queued = written is not None
                current = written if written is not None else self._read(current)
                continue
            remaining = deadline - time.monotonic()
            budget.look()
            if remaining <= 0 or budget.spent:
                holder = lease.owner if lease is not None else None
                bound = (
                    f"tried {budget.counted} time(s) (lock_max_attempts)"
                    if remaining > 0
                    else f"waited {timeout:g} s"
                )
                self._leave(current, ticket)
                raise LockTimeoutError(
                    f"database is locked: {bound} for the write lease of {r.remote} (held by "
                    f"{holder}, {len(live)} waiting); raise `timeout`",
                    owner=holder,
                    expires_at=lease.expires_at if lease is not None else None,
                )
            ahead = 1 + next((i for i, w in enumerate(live) if w.ticket == ticket), len(live))
            pause = min(remaining, self._pause(ahead))
            budget.paused(pause)
            time.sleep(pause)
            current = self._read(current)

    def _confirmed(self) -> None:
        """The manifest of a claim is the newest version as of the request that showed it."""
        self._claim_asked = self._asked

    def _leave(self, current: Read | None, ticket: str) -> None:
        """A waiter that gives up leaves the queue, so the lease is never handed to it.

        If it was handed over at that very moment, it is passed on to the next waiter.
        Best effort: an entry left behind goes stale after ``duration`` by itself.
        """
        try:
            for _ in range(5):
                if current is None or current[0].lease is None:
                    return
                lease = current[0].lease
                if lease.ticket == ticket:
                    new = next_holder(lease, self.r.clock(), self.duration)
                elif any(w.ticket == ticket for w in lease.queue):
                    queue = tuple(w for w in lease.queue if w.ticket != ticket)
                    free = not queue and lease.ticket == _FREE
                    new = None if free else replace(lease, queue=queue)
                else:
                    return
                if self._write(current, new) is not None:
                    return
                current = self._read(current)
        except StorageError as exc:
            log.warning("could not leave the write lease's queue (the entry expires): %s", exc)

    def _pause(self, ahead: int) -> float:
        """How long a waiter with ``ahead`` writers before it sleeps before its next poll.

        About the time those writers take (from how long this process's own claims lasted),
        so a wait costs a few conditional GETs, not one every few milliseconds.
        """
        hold = self.hold_estimate
        pause = max((ahead - 0.5) * hold, _POLL[0])  # about when our turn should come
        return min(pause, 2.0) * (0.75 + random.random() / 2)

    def catch_up(
        self, token: int, claim: Read, snapshot_version: int | None, timeout: float
    ) -> None:
        """Build on the version of the claim: adopt its manifest, or pull up to it first.

        A transaction that already read (``snapshot_version``) must not have missed a
        version: then it conflicts, as SQLite's ``SQLITE_BUSY_SNAPSHOT`` rule says.
        """
        r, local = self.r, self.r.local
        m, etag, raw = claim
        same = (m.version == local.version == 0 and local.page_count == 0) or (
            m.lineage == local.lineage
            and m.version == local.version
            and m.checksum == checksum_hex(local.checksum)
        )
        if snapshot_version is not None and not same:
            raise ConflictError(
                f"another instance committed version {m.version} after this transaction read "
                f"version {snapshot_version}; retry the transaction"
            )
        if same:
            with r.gate.cond:  # only the lease changed: no page to pull
                local.adopt(m, etag, raw)
                local.save_state()
        else:
            r.puller.pull_to(token, claim, timeout)  # the claim is the newest manifest: no GET
        # the local copy is now as new as the remote was when we asked: reads in the same
        # request need no freshness check of their own (lambdalite.scope)
        r.confirmed_at = max(r.confirmed_at, self._claim_asked)

    def _read(self, known: Read | None) -> Read | None:
        """The manifest now (a conditional GET when one is known)."""
        storage = self.r.storage
        self._asked = time.monotonic()
        for attempt in range(3):
            try:
                if known is None:
                    return read_manifest(storage)
                blob = storage.get(fmt.MANIFEST_KEY, if_none_match=known[1])
            except NotFoundError:
                return None
            except TransientStorageError:
                if attempt == 2:
                    raise
                time.sleep(_poll_delay(attempt + 2))
                continue
            if blob is None:
                return known
            return fmt.decode_manifest(blob.data), blob.etag, blob.data
        raise AssertionError("unreachable")

    def _write(self, current: Read | None, lease: fmt.WriteLease | None) -> Read | None:
        """Write ``current`` back with ``lease`` (an empty version 0 if there is none yet).

        Returns the new manifest as written, or None when the manifest moved first. A
        write whose answer was lost is read back: it counts only if it is there.
        """
        r = self.r
        if current is None:
            new = fmt.empty_manifest(writer=r.writer_id, now=r.clock(), lease=lease)
        else:
            new = current[0].next(lease=lease)
        raw = fmt.encode_manifest(new)
        fmt.decode_manifest(raw)  # never publish what a reader would refuse
        self._asked = time.monotonic()
        try:
            if current is None:
                etag = r.storage.put(fmt.MANIFEST_KEY, raw, if_none_match=True)
            else:
                etag = r.storage.put(fmt.MANIFEST_KEY, raw, if_match=current[1])
        except PreconditionFailedError:
            return None
        except TransientStorageError:
            back = self._read(None)
            if back is not None and back[0].nonce == new.nonce:
                return back
            return None  # it may still land: then the next read shows it (and whose it is)
        return new, etag, raw

    # ------------------------------------------------------------------ hand over

    def handoff(self, base: fmt.Manifest | None) -> fmt.WriteLease | None:
        """The lease the manifest publishing our commit carries (the next waiter's)."""
        if base is None or base.lease is None or base.lease.ticket != self.ticket:
            return base.lease if base is not None else None
        return next_holder(base.lease, self.r.clock(), self.duration)

    def still_ours(self, manifest: fmt.Manifest) -> bool:
        """Whether we may publish on ``manifest``: the lease we claimed is still ours, or,
        with no claim (a transaction that read while the lease was free), it is still free."""
        if self.ticket is None:
            return self.unclaimed(manifest)
        return self.holds(manifest)

    def needed(self, snapshot_version: int | None, manifest: fmt.Manifest | None) -> bool:
        """Whether a transaction about to write must claim the lease first.

        Not when it read (``snapshot_version``) a ``manifest`` whose lease nobody held or
        waited for: its commit is published ``If-Match`` what it read, one write instead of
        two. A writer that claims meanwhile makes that publish fail (:meth:`still_ours`): a
        conflict, as it would have been anyway, the claimant publishing first.
        """
        return snapshot_version is None or not self.unclaimed(manifest)

    def unclaimed(self, manifest: fmt.Manifest | None) -> bool:
        """Nobody holds the lease of ``manifest`` (or it expired) and nobody waits for it."""
        lease = manifest.lease if manifest is not None else None
        if lease is None:
            return True
        now = self.r.clock()
        live = any(w.since + self.duration >= now for w in lease.queue)
        return lease.expires_at < now and not live

    def holds(self, manifest: fmt.Manifest) -> bool:
        return (
            self.ticket is not None
            and manifest.lease is not None
            and manifest.lease.ticket == self.ticket
        )

    def _hold(self, ticket: str) -> None:
        self.ticket = ticket
        self._held_since = time.monotonic()

    def _let_go(self) -> None:
        if self.ticket is not None:
            held = time.monotonic() - self._held_since
            self.hold_estimate = 0.8 * self.hold_estimate + 0.2 * min(held, 5.0)
        self.ticket = None

    def done(self) -> None:
        """The lease went with a published commit."""
        self._let_go()

    def release(self) -> None:
        """Hand the lease over without a new version (rollback, nothing to publish)."""
        ticket = self.ticket
        if ticket is None:
            return
        self._let_go()
        try:
            current = self._read(None)
            for _ in range(5):
                if current is None or current[0].lease is None or current[0].lease.ticket != ticket:
                    return  # expired and taken, or already handed over
                nxt = next_holder(current[0].lease, self.r.clock(), self.duration)
                if self._write(current, nxt) is not None:
                    return
                current = self._read(current)
        except StorageError as exc:
            log.warning("could not hand the write lease over (it expires by itself): %s", exc)


def handoff(keeper: LeaseKeeper | None, base: fmt.Manifest | None) -> fmt.WriteLease | None:
    """The lease a commit on ``base`` publishes (optimistic writers leave it as it is)."""
    if keeper is not None:
        return keeper.handoff(base)
    return base.lease if base is not None else None


def _poll_delay(attempt: int) -> float:
    low, high = _POLL
    return float(min(high, low * 2**attempt) * (0.5 + random.random() / 2))
