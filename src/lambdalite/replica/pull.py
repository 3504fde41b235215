"""Pulling: bringing the local copy to the remote's newest version (DESIGN §2.4, §3).

At the start of a transaction the engine sends ``GET manifest`` with
``If-None-Match: <etag we hold>``; a 304 costs no body. On a new manifest it
downloads what it lacks, verifies every byte, and only then writes pages into
the local copy, while no connection of the process holds a snapshot, and makes
every connection drop its page cache:

* **Deltas** when the local copy holds an earlier version of the same history:
  the deltas in the manifest, or in the archived manifests behind it after a
  rollover or compaction (one small GET each). Each is checked against the
  page digests of the local copy (its base checksum, the pages it adds, the
  checksum it produces) without reading the local file.
* **A full image** on a cold start, after a doubt, on another history, or when
  the deltas would cost more than the snapshot: the snapshot, then the deltas
  after it, assembled and verified in a temporary file, then moved into place.

Before pulling, the local copy is checked (:meth:`~lambdalite.replica.heal.Healer.check`):
a copy in doubt is discarded, and the pull installs a full image.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lambdalite.errors import (
    BusyError,
    ConflictError,
    CorruptionError,
    NotFoundError,
    StorageError,
)
from lambdalite.replica import format as fmt
from lambdalite.replica.chain import Read, deltas_since
from lambdalite.replica.local import Doubt
from lambdalite.replica.pages import PageHashes, checksum_hex, copy_in_place, write_pages
from lambdalite.scope import current_scope
from lambdalite.storage.base import Blob

if TYPE_CHECKING:
    from lambdalite.replica.engine import Replica

__all__ = ["MAX_SEGMENTS", "Puller"]

log = logging.getLogger("lambdalite.replica")

MAX_SEGMENTS = 16  # archived segments a cold start may walk before a new snapshot is due


@dataclass(slots=True)
class _Download:
    manifest: fmt.Manifest
    etag: str
    raw: bytes
    deltas: list[tuple[fmt.DeltaRef, fmt.Delta]]
    image: str | None  # assembled database file to install, or None (deltas only)
    hashes: PageHashes | None  # the image's page digests


class Puller:
    """The read side of one replica."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica

    def refresh(self, token: int, *, max_staleness: float, timeout: float) -> None:
        """Bring the local copy to the remote's newest version."""
        r, local = self.r, self.r.local
        r.ensure_open()
        started = time.monotonic()
        scope = current_scope()
        enough = scope is None or local.version >= scope.at_least(r.remote, local.lineage)
        if not local.needs_image and enough and (
            (max_staleness > 0 and started - r.confirmed_at <= max_staleness)
            or (scope is not None and r.confirmed_at >= scope.started)
        ):
            return  # confirmed recently enough, or already in this request
        with r.refresh_mutex:
            if r.confirmed_at >= started:
                return  # another thread checked while we waited
            for _attempt in range(5):
                if r.gate.is_holder(token):
                    return  # our own snapshot is open: nothing may move under it
                r.healer.check()
                if self._refresh_once(token, timeout):
                    r.confirmed_at = started
                    return
            if r.local.needs_image:
                raise BusyError(
                    "database is locked: the local copy must be pulled again, but other "
                    "connections of this process kept changing it"
                )
            log.info(
                "the local copy kept moving during a pull; reading version %d", r.local.version
            )

    def pull_to(self, token: int, known: Read, timeout: float) -> None:
        """Bring the local copy to the manifest ``known`` (just read or written: no GET)."""
        r = self.r
        with r.refresh_mutex:
            for _attempt in range(5):
                r.healer.check()
                if self._refresh_once(token, timeout, known):
                    r.confirmed_at = time.monotonic()
                    return
        raise BusyError("database is locked: the local copy kept moving during a pull")

    def _refresh_once(self, token: int, timeout: float, known: Read | None = None) -> bool:
        """One pull; False if the local copy moved meanwhile (try again)."""
        r, local = self.r, self.r.local
        needs_image = local.needs_image
        try:
            if known is not None:
                blob: Blob | None = Blob(known[2], known[1])
            else:
                blob = r.storage.get(
                    fmt.MANIFEST_KEY, if_none_match=None if needs_image else local.etag
                )
        except NotFoundError:
            if local.etag is not None:
                raise StorageError(
                    f"the manifest of {r.remote} has disappeared although version "
                    f"{local.version} was published; refusing to continue on a remote that "
                    "lost its history (restore it, or import the database again)",
                    remote=r.remote,
                    key=fmt.MANIFEST_KEY,
                ) from None
            if needs_image:
                with r.gate.cond:  # nothing to pull: the new, empty file is the database
                    local.needs_image = False
                    local.note_files()
                    local.save_state()
            return True
        if blob is None:
            return True
        manifest = fmt.decode_manifest(blob.data)
        if (
            not needs_image
            and manifest.lineage == local.lineage
            and manifest.version == local.version
            and manifest.checksum == checksum_hex(local.checksum)
        ):
            with r.gate.cond:  # the same pages, stored anew or with another lease holder
                local.adopt(manifest, blob.etag, blob.data)
                local.save_state()
            return True
        start = (local.version, local.checksum, needs_image, r.cache.generation)
        download = self._download(manifest, blob.etag, blob.data, needs_image)
        try:
            with r.gate.exclusive(token, timeout) as ok:
                if not ok:
                    if local.needs_image:
                        raise BusyError(
                            "database is locked: the local copy must be pulled again, but "
                            "another connection of this process holds it open"
                        )
                    log.info("local copy busy; this transaction reads version %d", local.version)
                    return True
                if (local.version, local.checksum, local.needs_image, r.cache.generation) != start:
                    return False  # another connection of this process committed meanwhile
                try:
                    self._install(download)
                except (Doubt, OSError, sqlite3.Error) as exc:
                    reason = exc.reason if isinstance(exc, Doubt) else f"a pull failed ({exc})"
                    r.healer.discard(reason)
                    if not isinstance(exc, Doubt):
                        raise
                    return False
        finally:
            if download.image:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(download.image)
        return True

    def check_unchanged(self, rebasable: Callable[[fmt.Manifest], bool]) -> None:
        """With a lock just taken: the transaction's snapshot is still the newest version, or
        ConflictError (a compaction that only stored the same version anew is adopted)."""
        r, local = self.r, self.r.local
        try:
            blob = r.storage.get(fmt.MANIFEST_KEY, if_none_match=local.etag)
        except NotFoundError:
            if local.etag is None:
                return  # still no database anywhere: nothing to conflict with
            raise
        if blob is None:
            return
        current = fmt.decode_manifest(blob.data)
        if not rebasable(current):
            raise ConflictError(
                f"another instance committed version {current.version} after this transaction "
                f"read version {local.version}; retry the transaction"
            )
        with r.gate.cond:  # a compaction changed how the same version is stored
            local.adopt(current, blob.etag, blob.data)
            local.save_state()

    # ------------------------------------------------------------------ downloading

    def _download(
        self, manifest: fmt.Manifest, etag: str, raw: bytes, needs_image: bool
    ) -> _Download:
        """Fetch and verify what it takes to reach ``manifest`` (no local change yet)."""
        local = self.r.local
        if not needs_image and local.version > 0 and local.lineage == manifest.lineage:
            chain = self._chain_to(manifest)
            if chain is not None and (
                chain == () or chain[0].base_checksum == checksum_hex(local.checksum)
            ):
                deltas = [(ref, self._fetch_delta(ref, manifest.page_size)) for ref in chain]
                with self.r.gate.cond:  # the digests change only under this condition
                    hashes = local.hashes if len(chain) <= 1 else local.hashes.copy()
                    for ref, delta in deltas:
                        self._verify(hashes, ref, delta, apply=len(chain) > 1)
                return _Download(manifest, etag, raw, deltas, None, None)
        return self._download_image(manifest, etag, raw)

    def _chain_to(self, manifest: fmt.Manifest) -> tuple[fmt.DeltaRef, ...] | None:
        """The deltas from the local version to ``manifest``'s, or None (pull an image).

        Compactions and rollovers keep the version and archive the manifest
        they replace, so an instance behind finds its deltas in those archives
        (one small GET each) instead of downloading a snapshot.
        """
        version = self.r.local.version
        chain = manifest.deltas_after(version)
        if chain is not None:
            return chain
        chain = self._deltas_since(manifest, version, required=False)
        snap_size = manifest.snapshot.size if manifest.snapshot is not None else None
        if chain is not None and snap_size is not None and sum(d.size for d in chain) > snap_size:
            return None  # so far behind that the snapshot is the cheaper way
        return chain

    def _deltas_since(
        self, manifest: fmt.Manifest, version: int, *, required: bool
    ) -> tuple[fmt.DeltaRef, ...] | None:
        return deltas_since(
            self.r.storage,
            manifest,
            version,
            required=required,
            remote=self.r.remote,
            max_segments=MAX_SEGMENTS,
        )

    def _fetch_delta(self, ref: fmt.DeltaRef, page_size: int) -> fmt.Delta:
        if ref.inline is not None:
            where = f"manifest#v{ref.version}"
            delta = fmt.decode_delta(ref.inline_bytes(), ref, where=where, page_size=page_size)
        else:
            assert ref.key is not None
            try:
                blob = self.r.storage.get(ref.key)
            except NotFoundError as exc:
                raise CorruptionError(
                    f"delta {ref.key!r} (version {ref.version}) named by the manifest is "
                    "missing; run `lambdalite verify` on the remote",
                    remote=self.r.remote,
                    key=ref.key,
                ) from exc
            assert blob is not None
            delta = fmt.decode_delta(blob.data, ref, where=ref.key, page_size=page_size)
        if delta.page_size != page_size:
            raise CorruptionError(
                f"delta for version {ref.version} has pages of {delta.page_size} bytes in a "
                f"database of {page_size}-byte pages",
                remote=self.r.remote,
                key=ref.key,
            )
        return delta

    def _verify(
        self, hashes: PageHashes, ref: fmt.DeltaRef, delta: fmt.Delta, *, apply: bool
    ) -> None:
        """Check ``delta`` against the digests of the version it starts from (and apply it)."""

        def bad(why: str) -> CorruptionError:
            return CorruptionError(
                f"delta for version {ref.version} {why}", remote=self.r.remote, key=ref.key
            )

        if checksum_hex(hashes.checksum) != ref.base_checksum:
            raise bad(
                f"does not start from the pages it is applied to (expected "
                f"{ref.base_checksum}, have {checksum_hex(hashes.checksum)})"
            )
        fmt.check_delta_growth(ref, delta, hashes.count, where=ref.key or f"v{ref.version}")
        new = hashes.checksum_after(delta.pages, delta.page_count, delta.page_size)
        if checksum_hex(new) != ref.checksum:
            raise bad("produces pages that fail their checksum")
        if apply:
            hashes.apply(delta.pages, delta.page_count, delta.page_size)

    def _download_image(self, manifest: fmt.Manifest, etag: str, raw: bytes) -> _Download:
        r = self.r
        image = r.cache.tmp_path(f"image-{manifest.version}-{manifest.nonce}")
        open(image, "wb").close()
        hashes = PageHashes()
        try:
            if manifest.snapshot is not None:
                snap = manifest.snapshot
                packed = image + ".zst"
                try:
                    r.storage.get_file(snap.key, packed)
                    fmt.read_snapshot(
                        packed, image, snap, where=snap.key, page_size=manifest.page_size
                    )
                except NotFoundError as exc:
                    raise CorruptionError(
                        f"snapshot {snap.key!r} named by the manifest is missing; run "
                        "`lambdalite verify` on the remote",
                        remote=r.remote,
                        key=snap.key,
                    ) from exc
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(packed)
                hashes = PageHashes.of_file(image, manifest.page_size)
                if (
                    checksum_hex(hashes.checksum) != snap.checksum
                    or hashes.count != snap.page_count
                ):
                    raise CorruptionError(
                        f"snapshot {snap.key!r} decompressed to pages that fail their checksum",
                        remote=r.remote,
                        key=snap.key,
                    )
            start = manifest.snapshot.version if manifest.snapshot is not None else 0
            refs = self._deltas_since(manifest, start, required=True)
            if refs is None:
                raise CorruptionError(
                    f"the history of {r.remote} from its snapshot (version {start}) to "
                    f"version {manifest.version} is longer or less continuous than a manifest "
                    "chain may be; run `lambdalite verify`",
                    remote=r.remote,
                )
            for ref in refs:
                delta = self._fetch_delta(ref, manifest.page_size)
                self._verify(hashes, ref, delta, apply=True)
                write_pages(image, delta.pages, delta.page_count, delta.page_size, fsync=False)
            if checksum_hex(hashes.checksum) != manifest.checksum or (
                hashes.count != manifest.page_count
            ):
                raise CorruptionError(
                    f"the manifest of {r.remote} names version {manifest.version} with a "
                    "checksum or size its snapshot and deltas do not produce",
                    remote=r.remote,
                    key=fmt.MANIFEST_KEY,
                )
            with open(image, "rb+") as f:
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(image)
            raise
        return _Download(manifest, etag, raw, [], image, hashes)

    # ------------------------------------------------------------------ installing

    def _install(self, d: _Download) -> None:
        """Write a verified download into the local copy (exclusive access held)."""
        r, local = self.r, self.r.local
        local.save_state(clean=False)
        m = d.manifest
        if d.image is not None:
            assert d.hashes is not None
            if r.open_raw_now() == 0:
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(local.db_path + suffix)
                os.replace(d.image, local.db_path)
            else:
                local.checkpoint(required=True, fold_unpublished=local.needs_image)
                copy_in_place(d.image, local.db_path, m.page_size)
                local.invalidate_caches()
            local.hashes = d.hashes
        else:
            local.checkpoint(required=True)
            for _ref, delta in d.deltas:
                write_pages(local.db_path, delta.pages, delta.page_count, delta.page_size)
                local.hashes.apply(delta.pages, delta.page_count, delta.page_size)
            if d.deltas:
                local.invalidate_caches()
        local.adopt(m, d.etag, d.raw)
        local.needs_image = False
        local.checkpoint(required=True)
        local.note_files()
        local.save_state()
        log.debug("local copy of %s now at version %d", r.remote, m.version)
