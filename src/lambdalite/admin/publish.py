"""Publishing a new snapshot: the steps compaction, in-place restore and import share.

The protocol is the engine's (:meth:`lambdalite.replica.engine.Replica.compact`):

1. upload the snapshot (``snapshots/<version>-<nonce>``, a new key: never overwritten);
2. archive the manifest being replaced (``manifests/<version>-<nonce of that manifest>``,
   created with ``If-None-Match``), so the history stays a chain;
3. publish the new manifest, whose ``previous`` names the archive and whose ``base`` is
   empty (its deltas start at the new snapshot, not at a rolled-over segment), with
   ``If-Match`` on the ETag the operation started from: if another instance committed
   meanwhile, nothing is replaced and the caller decides (compaction gives up, restore and
   import fail with :class:`~lambdalite.errors.ConflictError`).

A snapshot uploaded for a manifest that then loses its race is deleted again; if even that
fails it is an orphan that ``lambdalite gc`` removes after the retention window.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time

from lambdalite.admin.history import ManifestRecord, ProgressFactory
from lambdalite.errors import CorruptionError, PreconditionFailedError, StorageError
from lambdalite.replica import format as fmt
from lambdalite.replica.pages import checksum_hex, file_checksum
from lambdalite.storage.base import Storage

__all__ = ["archive_manifest", "discard_snapshot", "upload_snapshot", "writer_id"]


def writer_id() -> str:
    """The ``writer`` recorded in manifests the admin commands publish."""
    return f"lambdalite-admin@{socket.gethostname()}:{os.getpid()}"


def upload_snapshot(
    storage: Storage,
    image: str,
    version: int,
    page_size: int,
    progress: ProgressFactory,
    *,
    nonce: str,
    checksum: int | None = None,
) -> fmt.SnapshotRef:
    """Compress database file ``image`` and upload it as the snapshot of ``version``.

    ``checksum`` is the image's page checksum when the caller already verified it.
    """
    if checksum is None:
        checksum, count = file_checksum(image, page_size)
    else:
        count = os.path.getsize(image) // page_size
    packed = image + ".snapshot"
    try:
        size, sha = fmt.write_snapshot(image, packed, page_size)
        key = f"snapshots/{version:020d}-{nonce}"
        with progress(f"uploading {key}", size) as tick:
            storage.put_file(key, packed, progress=tick)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(packed)
    return fmt.SnapshotRef(
        version=version,
        key=key,
        size=size,
        sha256=sha,
        page_count=count,
        checksum=checksum_hex(checksum),
        created_at=time.time(),
    )


def archive_manifest(storage: Storage, record: ManifestRecord) -> str:
    """Keep ``record`` (the manifest about to be replaced) as an immutable archive; its key."""
    m = record.manifest
    key = f"manifests/{m.version:020d}-{m.nonce}"
    try:
        storage.put(key, record.raw, if_none_match=True)
    except PreconditionFailedError:
        blob = storage.get(key)  # archived before (an earlier attempt): it must be the same
        assert blob is not None
        if blob.data != record.raw:
            raise CorruptionError(
                f"archive {key!r} already exists with other content", key=key
            ) from None
    return key


def discard_snapshot(storage: Storage, ref: fmt.SnapshotRef, cause: BaseException) -> None:
    """Delete a snapshot whose manifest was never published; a failure is noted on ``cause``."""
    try:
        storage.delete(ref.key)
    except StorageError as exc:
        cause.add_note(
            f"the unpublished snapshot {ref.key!r} could not be deleted ({exc}); "
            "lambdalite gc removes it after the retention window"
        )
