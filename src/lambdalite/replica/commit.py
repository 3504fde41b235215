"""The commit path: from a local ``COMMIT`` to a version published in the remote.

Read top to bottom, this is everything a write transaction goes through
(DESIGN §2, §3, §5):

1. ``begin_write`` makes the connection the process's writer before its first
   write: the write lease (:mod:`~lambdalite.replica.lease`; not claimed by a
   transaction that read while it was free) or the lock, the check of a
   transaction that already read (SQLite's ``SQLITE_BUSY_SNAPSHOT`` rule), the
   check of the local copy, and the WAL position where the transaction starts.
2. ``commit_write`` closes the gate (no new snapshots), commits locally, publishes.
3. ``_take_change`` turns the WAL frames the transaction appended into the
   change, and proves its base is the published version: the files are the
   ones the engine left, exactly one local commit was added, it carries every
   page it adds, and every pre-image matches the published page digests. On
   any doubt nothing is published: the copy is discarded and
   :class:`~lambdalite.errors.LocalCopyError` raised (retry the transaction).
4. ``_push`` uploads the delta (unless it fits in the manifest) and publishes
   the manifest with ``If-Match`` on the ETag the transaction started from
   (``If-None-Match: *`` for the first version).
5. A write whose answer was not seen is never turned into a definite answer
   without proof: the manifest is read back and the version looked up by its
   nonce, through the archives if later commits followed
   (:func:`~lambdalite.replica.chain.settle`); unproven either way it is
   :class:`~lambdalite.errors.CommitOutcomeUnknownError`. The write is resent
   only with the very same bytes while it might still land.
6. ``_adopt`` advances the page digests, the manifest and the WAL position; a
   definite failure or an unknown outcome undoes the local commit from the
   verified pre-images instead (:meth:`~lambdalite.replica.heal.Healer.undo`).

Nothing is ever deleted here: a delta of a commit that did not land is an
orphan for ``lambdalite gc``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lambdalite.errors import (
    BusyError,
    CommitOutcomeUnknownError,
    ConflictError,
    LambdaliteError,
    LocalCopyError,
    PreconditionFailedError,
    StorageError,
    TransientStorageError,
)
from lambdalite.replica import format as fmt
from lambdalite.replica.heal import Undo
from lambdalite.replica.lease import LeaseKeeper, handoff
from lambdalite.replica.local import file_id
from lambdalite.replica.pages import (
    WalFrame,
    WalPosition,
    checksum_hex,
    frame_pages,
    read_page,
    read_wal,
)
from lambdalite.replica.writes import (
    ATTEMPTS,
    backoff,
    create_once,
    read_quietly,
    settle_by_reading,
)
from lambdalite.scope import current_scope

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable, Mapping

    from lambdalite.locks.base import Lease
    from lambdalite.replica.engine import Replica

__all__ = ["Committer", "crash_point"]

log = logging.getLogger("lambdalite.replica")

crash_hook: Callable[[str], None] | None = None
"""Tests set this to kill the process at a named step of the commit path."""

INLINE_BUDGET = 12 * 1024  # bytes of inline deltas a manifest may carry in all
UNKNOWN_ETAG = "unknown"  # matches no real ETag: the next read fetches the manifest
_REBASES = 100  # times the manifest may move under a publish without a new version


def crash_point(name: str) -> None:
    if crash_hook is not None:
        crash_hook(name)


@dataclass(slots=True)
class _Change:
    """One local commit, ready to publish, with the proof of its base."""

    pages: dict[int, bytes]
    page_count: int
    page_size: int
    undo: Undo
    checksum: int  # of the database after the change
    position: WalPosition  # the WAL's end, the change included


@dataclass(frozen=True, slots=True)
class _Published:
    manifest: fmt.Manifest
    raw: bytes
    etag: str


class Committer:
    """The write side of one replica: one writer at a time in the process."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica
        self._mutex = threading.Lock()
        self._writer: int | None = None
        self._lease: Lease | None = None
        self._write_pos = WalPosition.empty()
        self._generation = 0
        self._wal_file: tuple[int, int] | None = None
        opts = replica.options
        self.lease = (
            LeaseKeeper(replica, opts.lease_duration, max_attempts=opts.lease_max_attempts)
            if opts.write_lease
            else None
        )

    # ------------------------------------------------------------------ 1. begin

    def begin_write(self, token: int, snapshot_version: int | None, timeout: float) -> None:
        """Make connection ``token`` the writer before its first write.

        ``snapshot_version`` is the version the transaction has read, or None
        when it has not taken its snapshot yet (it will, after this call).
        """
        r = self.r
        deadline = time.monotonic() + max(timeout, 0.0)
        if not self._mutex.acquire(timeout=max(timeout, 0.0)):
            raise BusyError("database is locked: another connection of this process is writing")
        try:
            r.ensure_open()
            r.gate.wait_for_repairs(token, max(deadline - time.monotonic(), 0.0))
            if snapshot_version is not None and snapshot_version != r.local.version:
                raise ConflictError(
                    f"another connection committed version {r.local.version} after this "
                    f"transaction read version {snapshot_version}; retry the transaction"
                )
            self._check_local(token, snapshot_version, timeout)
            if self.lease is not None and self.lease.needed(snapshot_version, r.local.manifest):
                remaining = max(deadline - time.monotonic(), 0.0)  # wait for our turn, then
                claim = self.lease.acquire(remaining, read_version=snapshot_version)
                self.lease.catch_up(token, claim, snapshot_version, timeout)  # build on it
            elif r.lock is not None:
                self._lease = r.lock.acquire(max(deadline - time.monotonic(), 0.0))
                if snapshot_version is None:
                    r.confirmed_at = float("-inf")
                    r.puller.refresh(token, max_staleness=0, timeout=timeout)
                else:
                    r.puller.check_unchanged(self._rebasable)
            with r.gate.cond:
                self._write_pos = read_wal(r.local.wal_path).position
                self._generation = r.cache.generation
                self._wal_file = file_id(r.local.wal_path)
                if self._write_pos.committed and self._write_pos != r.local.published_pos:
                    self._doubt("its WAL holds committed changes that were never published")
            self._writer = token
        except BaseException as exc:
            if isinstance(exc, ConflictError):
                r.confirmed_at = float("-inf")  # the remote moved: the next read pulls
            self._release_lease()
            self._mutex.release()
            raise

    def _check_local(self, token: int, snapshot_version: int | None, timeout: float) -> None:
        """Never build on a local copy in doubt: a transaction that read it must retry."""
        r = self.r
        with r.gate.cond:
            reason = r.local.doubt()
        if reason is None:
            return
        if snapshot_version is not None or not r.local.needs_image:
            r.healer.discard(reason)
        if snapshot_version is not None:
            raise LocalCopyError(
                f"the local copy could not be trusted ({reason}); it was discarded and will be "
                "pulled again: retry the transaction"
            )
        r.puller.refresh(token, max_staleness=0, timeout=timeout)  # nothing read yet: heal now

    # ------------------------------------------------------------------ 2. commit

    def commit_write(
        self, token: int, raw: sqlite3.Connection, timeout: float, *, committed: bool = False
    ) -> None:
        """Commit connection ``token``'s transaction locally and publish it; raise on failure.

        ``committed``: the statement committed by itself (VACUUM); only publish.
        """
        assert self._writer == token
        r = self.r
        try:
            if r.generation_of(raw) != self._generation:
                raise _discarded()
            r.gate.close_for_commit(timeout)
            try:
                if not committed:
                    raw.execute("COMMIT")
            except BaseException:
                r.gate.reopen()
                raise
            try:
                self._publish()
            finally:
                r.gate.reopen()
            r.compactor.maybe_compact()
        finally:
            self._end()

    def abort_write(self, token: int) -> None:
        """The writer rolled back (or SQLite did): nothing may have been committed locally."""
        if self._writer != token:
            return
        r = self.r
        try:
            with r.gate.cond:
                if r.cache.generation == self._generation and (
                    read_wal(r.local.wal_path).position != self._write_pos
                ):
                    r.healer.discard("a transaction that was rolled back left committed changes")
        finally:
            self._end()

    def _end(self) -> None:
        self._writer = None
        self._release_lease()
        self._mutex.release()

    def _release_lease(self) -> None:  # never fails: an unreleased lease expires
        if self.lease is not None:
            self.lease.release()
        lease, self._lease = self._lease, None
        if lease is not None and self.r.lock is not None:
            try:
                self.r.lock.release(lease)
            except LambdaliteError as exc:
                log.warning("could not release the lock (it will expire): %s", exc)

    def _publish(self) -> None:
        change = self._take_change()
        if change is None:
            return  # the transaction changed nothing
        try:
            crash_point("before-push")
            if self._lease is not None and self.r.lock is not None:
                self._lease = self.r.lock.ensure(self._lease, min_remaining=5.0)
            published = self._push(change)
        except BaseException as exc:
            self.r.healer.undo(change.undo, exclude=self._writer)
            if isinstance(exc, PreconditionFailedError):
                raise ConflictError(
                    "another instance committed first; the transaction was rolled back, retry it"
                ) from exc
            raise
        self._adopt(change, published)

    # ------------------------------------------------------------------ 3. the change and its proof

    def _doubt(self, reason: str) -> None:
        self.r.healer.discard(reason)
        raise LocalCopyError(
            f"the local copy could not be trusted ({reason}); nothing was published, the copy "
            "was discarded and will be pulled again: retry the transaction"
        )

    def _take_change(self) -> _Change | None:
        """The commit's pages, with the proof that they apply to the published version."""
        r, local = self.r, self.r.local
        if r.cache.generation != self._generation:
            raise _discarded()
        reason = local.doubt(check_wal=False)
        if reason is None and self._wal_file and file_id(local.wal_path) != self._wal_file:
            reason = "its WAL file was deleted or replaced during the transaction"
        if reason is not None:
            self._doubt(reason)
        wal = read_wal(local.wal_path)
        if self._write_pos.committed and wal.salts != self._write_pos.salts:
            self._doubt("its WAL was reset during the transaction")
        ours = wal.since(self._write_pos)
        if not ours:
            return None
        if sum(1 for f in ours if f.commit_size) != 1 or not ours[-1].commit_size:
            self._doubt("SQLite committed more than once during one transaction")
        page_size, new_count = wal.page_size, ours[-1].commit_size
        if local.page_count and page_size != local.page_size:
            self._doubt(f"its page size changed from {local.page_size} to {page_size}")
        pages = frame_pages(local.wal_path, ours, page_size)
        pages = {p: data for p, data in pages.items() if p <= new_count}
        missing = local.hashes.missing_growth(pages, new_count, page_size)
        if missing:
            self._doubt(f"the commit grows the database without writing pages {missing}")
        undo = self._pre_images(wal.before(self._write_pos), pages, new_count, page_size)
        checksum = local.hashes.checksum_after(pages, new_count, page_size)
        return _Change(pages, new_count, page_size, undo, checksum, wal.position)

    def _pre_images(
        self,
        before: tuple[WalFrame, ...],
        pages: Mapping[int, bytes],
        new_count: int,
        page_size: int,
    ) -> Undo:
        """The published content of every page the commit changed or cut off, verified."""
        local = self.r.local
        base_count = local.page_count
        wanted = sorted(
            {p for p in pages if p <= base_count} | set(range(new_count + 1, base_count + 1))
        )
        newest = {f.pgno: f for f in before}  # published frames not yet checkpointed
        out: dict[int, bytes] = {}
        with open(local.wal_path, "rb") as wal, open(local.db_path, "rb") as db:
            for p in wanted:
                frame = newest.get(p)
                if frame is not None:
                    wal.seek(frame.offset)
                    data = wal.read(page_size)
                else:
                    data = read_page(db, p, page_size)
                if not local.hashes.matches(p, data):
                    self._doubt(f"page {p} does not match version {local.version} (damaged)")
                out[p] = data
        return Undo(out, base_count)

    # ------------------------------------------------------------------ 4-5. push

    def _push(self, change: _Change) -> _Published:
        r, local = self.r, self.r.local
        encoded = fmt.encode_delta(change.page_size, change.page_count, change.pages)
        nonce = fmt.new_nonce()
        ref = fmt.DeltaRef(
            version=local.version + 1,
            committed_at=r.clock(),
            base_checksum=checksum_hex(local.checksum),
            checksum=checksum_hex(change.checksum),
            page_count=change.page_count,
            pages=len(change.pages),
            size=len(encoded),
            sha256=hashlib.sha256(encoded).hexdigest(),
            nonce=nonce,
        )
        base = local.manifest
        inline_used = sum(d.size for d in base.deltas if d.inline) if base else 0
        if len(encoded) <= min(r.options.inline_delta_max, INLINE_BUDGET - inline_used):
            ref = replace(ref, inline=base64.b64encode(encoded).decode())
        else:
            key = f"deltas/{ref.version:020d}-{nonce}"
            create_once(r.storage, key, encoded, attempts=ATTEMPTS)
            ref = replace(ref, key=key)
            crash_point("after-delta-upload")
        return self._publish_manifest(base, local.etag, ref, change)

    def _publish_manifest(
        self, base: fmt.Manifest | None, base_etag: str | None, ref: fmt.DeltaRef, change: _Change
    ) -> _Published:
        """The conditional PUT of the manifest that names ``ref``, settled when unanswered."""
        r = self.r
        nonce = ref.nonce
        assert nonce is not None
        maybe_sent = False  # a request of ours that may still land is out there
        error: StorageError | None = None
        lease_after, lease_of = handoff(self.lease, base), base
        attempt = rebases = 0
        while attempt < ATTEMPTS and rebases < _REBASES:  # a rebase is no failed attempt
            attempt += 1
            if lease_of is not base:  # the same bytes for the same base: computed once
                lease_after, lease_of = handoff(self.lease, base), base
            manifest = fmt.with_delta(
                base, ref, writer=r.writer_id, page_size=change.page_size, lease=lease_after
            )
            raw = fmt.encode_manifest(manifest)  # the same bytes for the same base: retry-safe
            fmt.decode_manifest(raw)  # never publish what a reader would refuse
            try:
                if base_etag is None:
                    etag = r.storage.put(fmt.MANIFEST_KEY, raw, if_none_match=True)
                else:
                    etag = r.storage.put(fmt.MANIFEST_KEY, raw, if_match=base_etag)
                crash_point("after-manifest")
                if self.lease is not None:
                    self.lease.done()  # handed over by this very write
                return _Published(manifest, raw, etag)
            except PreconditionFailedError as exc:
                error = exc
                if not maybe_sent:  # this request, the only one sent, did not write
                    current = read_quietly(r.storage)
                    if current is not None and self._rebasable(current[0], base):
                        base, base_etag = current[0], current[1]  # compacted, or a waiter came
                        attempt, rebases = attempt - 1, rebases + 1
                        continue
                    raise
            except TransientStorageError as exc:
                error = exc
                maybe_sent = maybe_sent or exc.request_sent
                if not maybe_sent:
                    backoff(attempt)
                    continue  # it never reached the server: send it again
            except StorageError as exc:  # refused outright (credentials, a missing bucket...)
                if not maybe_sent:
                    raise
                error = exc  # ...but an earlier attempt may have landed
            verdict = settle_by_reading(
                r.storage, nonce=nonce, version=ref.version, base=base, base_etag=base_etag
            )
            if verdict.outcome == "landed":
                assert verdict.current is not None
                current = verdict.current
                if self.lease is not None:
                    self.lease.done()
                if current[0].nonce == nonce:
                    return _Published(current[0], current[2], current[1])
                return _Published(manifest, raw, UNKNOWN_ETAG)  # later commits followed ours
            if verdict.outcome == "absent":
                backoff(attempt)
                continue
            if verdict.outcome == "rebase":
                assert verdict.current is not None
                base, base_etag = verdict.current[0], verdict.current[1]
                maybe_sent = False  # what was sent was conditioned on an ETag that is gone
                continue
            if verdict.outcome == "moved":
                raise ConflictError(
                    "another instance committed first (after a write whose answer was lost); "
                    "the transaction was rolled back, retry it"
                ) from error
            raise CommitOutcomeUnknownError(
                f"publishing version {ref.version} failed ({error}) and whether it landed "
                f"cannot be told: {verdict.why}",
                remote=r.remote,
                key=fmt.MANIFEST_KEY,
            ) from error
        if maybe_sent:
            raise CommitOutcomeUnknownError(
                f"publishing version {ref.version} kept failing ({error}); the last attempt may "
                "still land",
                remote=r.remote,
                key=fmt.MANIFEST_KEY,
            ) from error
        raise TransientStorageError(
            f"could not publish version {ref.version}: {error}", remote=r.remote
        ) from error

    def _rebasable(self, current: fmt.Manifest, base: fmt.Manifest | None = None) -> bool:
        """Whether ``current`` is the base version only stored differently (compacted, or the
        lease or its queue changed), and the lease lets us publish on it (``still_ours``)."""
        base = base or self.r.local.manifest
        if base is None or (self.lease is not None and not self.lease.still_ours(current)):
            return False  # our claim was taken over (fenced), or a claim was made since we read
        same = (current.lineage, current.version, current.checksum)
        return same == (base.lineage, base.version, base.checksum)

    # ------------------------------------------------------------------ 6. adopt

    def _adopt(self, change: _Change, published: _Published) -> None:
        """The commit is durable: the published base advances. Nothing here may fail it."""
        r, local = self.r, self.r.local
        if (scope := current_scope()) is not None:  # the client's bookmark: this version
            scope.wrote(r.remote, published.manifest.lineage, published.manifest.version)
        with r.gate.cond:
            local.adopt(published.manifest, published.etag, published.raw)
            local.hashes.apply(change.pages, change.page_count, change.page_size)
            local.published_pos = change.position
            r.confirmed_at = time.monotonic()
            try:
                local.checkpoint(required=False)
                local.note_files()
                local.save_state()
            except Exception as exc:  # durable already: a local hiccup must not fail it
                log.warning(
                    "version %d is durable, but the cache state was not saved: %s",
                    local.version,
                    exc,
                )


def _discarded() -> LocalCopyError:
    return LocalCopyError(
        "the local copy was discarded during the transaction; nothing was published: "
        "retry the transaction"
    )
