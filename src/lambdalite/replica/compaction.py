"""Compaction: keeping the manifest small and cold starts short, after a commit.

Both operations change how the *same* version is stored, never its content,
so losing their conditional write to another writer only means that writer's
manifest wins; and neither deletes anything (old objects are ``gc``'s job).

* **Rollover** (:meth:`Compactor.roll_over`): the manifest is archived
  (``manifests/<version>-<nonce>``) and continued by a short manifest at the
  same version whose ``base`` names the archive, so every commit, which
  rewrites the manifest, moves a small, bounded number of bytes besides its
  own pages.
* **Compaction** (:meth:`Compactor.compact`): a new snapshot of the current
  version, uploaded from the local copy once its page digests prove it is that
  version; written only when the deltas since the last snapshot add up to a
  quarter of its size (at least ``compact_after_bytes``) or a cold start would
  walk too many archived segments, so its cost per commit stays proportional to
  the commits' own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from typing import TYPE_CHECKING

from lambdalite.errors import PreconditionFailedError, StorageError
from lambdalite.replica import format as fmt
from lambdalite.replica.commit import INLINE_BUDGET, crash_point
from lambdalite.replica.local import Doubt
from lambdalite.replica.pages import PageHashes, checksum_hex
from lambdalite.replica.pull import MAX_SEGMENTS

if TYPE_CHECKING:
    from lambdalite.replica.engine import Replica

__all__ = ["ROLLOVER_BYTES", "Compactor"]

log = logging.getLogger("lambdalite.replica")

ROLLOVER_BYTES = 24 * 1024  # a manifest larger than this is rolled over after the commit


class Compactor:
    """Rollovers and compactions of one replica (called by the writer, after its commit)."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica

    def maybe_compact(self) -> None:
        """After a commit: roll over or compact when it pays off (see the module docstring)."""
        local = self.r.local
        m = local.manifest
        if m is None or not m.deltas:
            return
        snapshot_size = m.snapshot.size if m.snapshot is not None else 0
        options = self.r.options
        try:
            if (
                m.bytes_since_snapshot() >= max(options.compact_after_bytes, snapshot_size // 4)
                or m.segments_since_snapshot() >= MAX_SEGMENTS
            ):
                self.compact()
            elif (
                len(m.deltas) >= options.compact_after_deltas
                or len(local.manifest_raw or b"") > ROLLOVER_BYTES
                or sum(d.size for d in m.deltas if d.inline) >= INLINE_BUDGET * 3 // 4
            ):
                self.roll_over()  # (the last: so that the next commits' deltas fit inline)
        except (StorageError, OSError, sqlite3.Error, Doubt) as exc:
            log.warning("compaction of %s skipped: %s", self.r.remote, exc)

    def roll_over(self) -> bool:
        """Archive the manifest and continue with an empty delta list (writer held)."""
        local = self.r.local
        m, raw, etag = local.manifest, local.manifest_raw, local.etag
        if m is None or raw is None or etag is None:
            return False
        archive = self._archive(m, raw)
        new = m.next(
            deltas=(),
            previous=archive,
            base=fmt.BaseRef(
                version=m.version,
                checksum=m.checksum,
                page_count=m.page_count,
                archive=archive,
                segments=m.segments_since_snapshot() + 1,
                delta_bytes=m.bytes_since_snapshot(),
            ),
        )
        return self._publish_same_version(new, etag, "rolled over")

    def compact(self) -> bool:
        """Fold the deltas into a new snapshot of the current version (writer held)."""
        r, local = self.r, self.r.local
        m, raw, etag = local.manifest, local.manifest_raw, local.etag
        if m is None or raw is None or etag is None:
            return False
        with r.gate.cond:
            if not local.checkpoint(required=False):
                return False
            hashes = PageHashes.of_file(local.db_path, m.page_size)
        if hashes.checksum != local.checksum or hashes.count != m.page_count:
            log.error("local copy does not match version %d; not compacting", m.version)
            return False
        packed = r.cache.tmp_path("snapshot")
        try:
            size, sha = fmt.write_snapshot(local.db_path, packed, m.page_size)
            nonce = fmt.new_nonce()
            snap_key = f"snapshots/{m.version:020d}-{nonce}"
            r.storage.put_file(snap_key, packed)
            crash_point("after-snapshot-upload")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(packed)
        archive = self._archive(m, raw)
        new = m.next(
            nonce=nonce,
            snapshot=fmt.SnapshotRef(
                version=m.version,
                key=snap_key,
                size=size,
                sha256=sha,
                page_count=m.page_count,
                checksum=checksum_hex(hashes.checksum),
                created_at=r.clock(),
            ),
            deltas=(),
            previous=archive,
            base=None,
        )
        return self._publish_same_version(new, etag, f"compacted ({size} bytes)")

    def _archive(self, m: fmt.Manifest, raw: bytes) -> str:
        key = f"manifests/{m.version:020d}-{m.nonce}"
        with contextlib.suppress(PreconditionFailedError):  # archived before: the same bytes
            self.r.storage.put(key, raw, if_none_match=True)
        return key

    def _publish_same_version(self, new: fmt.Manifest, etag: str, what: str) -> bool:
        r, local = self.r, self.r.local
        new_raw = fmt.encode_manifest(new)
        fmt.decode_manifest(new_raw)  # never publish what a reader would refuse
        try:
            new_etag = r.storage.put(fmt.MANIFEST_KEY, new_raw, if_match=etag)
        except PreconditionFailedError:
            log.info("%s of %s lost to a newer commit", what, r.remote)
            return False
        with r.gate.cond:
            if local.etag == etag:
                local.adopt(new, new_etag, new_raw)
                local.save_state()
        log.info("%s %s at version %d", what, r.remote, new.version)
        return True
