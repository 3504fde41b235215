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
    """
    segments = [manifest]
    current = manifest
    for _ in range(max_segments + 2):
        if current.base_version <= version:
            break
        key = current.previous
        try:
            if key is None:
                raise NotFoundError("no previous manifest", key=key)
            blob = storage.get(key)
        except NotFoundError as exc:
            if not required:
                return None
            raise CorruptionError(
                f"the manifest chain of {remote} is broken at {key!r}: the deltas from "
                f"version {version} to {current.base_version} are missing; run "
                "`lambdalite verify`",
                remote=remote,
                key=key,
            ) from exc
        assert blob is not None and key is not None
        older = fmt.decode_manifest(blob.data, where=key)
        if older.lineage != current.lineage or older.version != current.base_version:
            if not required:
                return None
            raise CorruptionError(
                f"archived manifest {key!r} does not continue into version {current.base_version}",
                remote=remote,
                key=key,
            )
        segments.append(older)
        current = older
    else:
        return None
    refs = [d for m in reversed(segments) for d in m.deltas if d.version > version]
    if [d.version for d in refs] != list(range(version + 1, manifest.version + 1)):
        return None
    return tuple(refs)


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
