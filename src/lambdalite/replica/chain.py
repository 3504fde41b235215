"""Walking the manifest chain: the deltas between two versions, across archived manifests.

Rollovers and compactions archive the manifest they replace (``manifests/…``)
and name it as ``previous``; a manifest's deltas continue from its
``base_version``. To go from version V to the current one, a reader collects
the deltas of the current manifest and, while V is older than the segment's
base, of each archive behind it.
"""

from __future__ import annotations

from lambdalite.errors import CorruptionError, NotFoundError
from lambdalite.replica import format as fmt
from lambdalite.storage.base import Storage

__all__ = ["deltas_since", "settle"]


def deltas_since(
    storage: Storage,
    manifest: fmt.Manifest,
    version: int,
    *,
    required: bool,
    remote: str,
    max_segments: int,
) -> tuple[fmt.DeltaRef, ...] | None:
    """The deltas from ``version`` to ``manifest``'s, walking archived manifests back.

    None when they cannot be had (too many segments, an archive gone, a chain
    that does not continue: a history replaced by an import or restored in
    place). ``required``: the chain must exist (it leads from the manifest's
    own snapshot), so a gap is a CorruptionError naming it instead of None.

    Each archive must continue into the segment after it: the same lineage,
    of the version that segment's deltas start from, ending at the pages they
    start from. So the walk never goes forward; an archive claiming a newer
    version than the segment after it, or named twice (a cycle, among
    archives of one version), is broken and never followed.
    """
    segments = [manifest]
    current = manifest
    seen = {fmt.MANIFEST_KEY}

    def broken(key: str | None, why: str) -> CorruptionError:
        return CorruptionError(
            f"the manifest chain of {remote} is broken at {key!r}: {why}; run `lambdalite verify`",
            remote=remote,
            key=key,
        )

    for _ in range(max_segments + 2):
        if current.base_version <= version:
            break
        key = current.previous
        gap = f"the deltas from version {version} to {current.base_version} are missing"
        if key is None:
            if required:
                raise broken(key, gap)
            return None
        if key in seen:
            if required:
                raise broken(key, "it is named twice (a cycle)")
            return None
        seen.add(key)
        try:
            blob = storage.get(key)
        except NotFoundError as exc:
            if required:
                raise broken(key, gap) from exc
            return None
        assert blob is not None
        older = fmt.decode_manifest(blob.data, where=key)
        why = _discontinuity(older, current)
        if why is not None:
            if required:
                raise broken(key, why)
            return None
        segments.append(older)
        current = older
    else:
        return None
    refs = [d for m in reversed(segments) for d in m.deltas if d.version > version]
    if [d.version for d in refs] != list(range(version + 1, manifest.version + 1)):
        if required:
            raise broken(current.previous, f"its deltas do not lead from version {version}")
        return None
    return tuple(refs)


def _discontinuity(older: fmt.Manifest, newer: fmt.Manifest) -> str | None:
    """Why archive ``older`` does not continue into ``newer``'s deltas, or None."""
    start = newer.base_version
    if older.lineage != newer.lineage:
        return f"it is of lineage {older.lineage}, not {newer.lineage}"
    if older.version > start:
        return f"it claims version {older.version}, newer than the {start} after it"
    if older.version != start:
        return f"it ends at version {older.version}, not {start}"
    if older.page_size != newer.page_size:
        return f"its pages are of {older.page_size} bytes, not {newer.page_size}"
    checksum, count = newer.base_pages
    if (older.checksum, older.page_count) != (checksum, count):
        return (
            f"it ends at pages {older.checksum} ({older.page_count} pages), but the deltas "
            f"after it start from {checksum} ({count} pages)"
        )
    return None


def settle(
    current: tuple[fmt.Manifest, str, bytes] | None,
    nonce: str,
    ref: fmt.DeltaRef,
    base_etag: str | None,
) -> str:
    """After an ambiguous manifest write: did version ``ref.version`` land?

    "landed", "absent" (nothing changed: safe to retry), "moved" (another
    commit took the version) or "unknown" (compacted past it).
    """
    if current is None:
        return "absent" if base_etag is None else "moved"
    manifest, etag, _raw = current
    if manifest.nonce == nonce:
        return "landed"
    if etag == base_etag:
        return "absent"
    for d in manifest.deltas:
        if d.version == ref.version:
            same = d.checksum == ref.checksum and d.base_checksum == ref.base_checksum
            return "landed" if same else "moved"
    if manifest.version < ref.version:
        return "moved"
    return "unknown"
