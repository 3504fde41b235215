"""Walking the manifest chain: the deltas between two versions, across archived manifests.

Rollovers and compactions archive the manifest they replace (``manifests/…``)
and name it as ``previous``; a manifest's deltas continue from its
``base_version``. To go from version V to the current one, a reader collects
the deltas of the current manifest and, while V is older than the segment's
base, of each archive behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lambdalite.errors import CorruptionError, NotFoundError
from lambdalite.replica import format as fmt
from lambdalite.storage.base import Storage

__all__ = ["Read", "Verdict", "deltas_since", "read_manifest", "settle"]


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


Read = tuple[fmt.Manifest, str, bytes]
"""A manifest as read: (decoded, ETag, bytes)."""

Outcome = Literal["landed", "absent", "rebase", "moved", "unknown"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What settling an unanswered manifest write found out.

    * ``landed``: the version was published with our nonce (``current`` is the
      manifest read; ours if its nonce is ours, else a later one).
    * ``absent``: the manifest is still the one the write was conditioned on.
      The write did not land *yet*: only the same bytes may be sent again.
    * ``rebase``: the manifest moved without a new version (a compaction or a
      rollover of the base): the write can never land now; publishing on top of
      ``current`` is safe.
    * ``moved``: another commit took the version: the write can never land.
    * ``unknown``: the history that would tell was replaced or removed.
    """

    outcome: Outcome
    current: Read | None
    why: str = ""


def settle(
    storage: Storage,
    current: Read | None,
    *,
    nonce: str,
    version: int,
    base: fmt.Manifest | None,
    base_etag: str | None,
    remote: str,
    max_segments: int,
) -> Verdict:
    """After a manifest write whose answer was not seen: did ``version`` land with ``nonce``?

    ``current`` is the manifest read after the write (None: there is none);
    ``base`` and ``base_etag`` are what the write was conditioned on (None for
    the first version). Proof is by nonce only: every manifest carries a random
    one, and every delta records the nonce of the manifest that published it,
    so the version is looked up through the archived manifests when later
    commits, rollovers or compactions followed it.
    """
    if current is None:
        if base_etag is None:
            return Verdict("absent", None)
        return Verdict("unknown", None, "the manifest has disappeared")
    manifest, etag, _raw = current
    if manifest.nonce == nonce:
        return Verdict("landed", current)
    if etag == base_etag:
        return Verdict("absent", current)
    if base is not None and manifest.lineage != base.lineage:
        return Verdict("unknown", current, "the history was replaced (import or restore)")
    if manifest.version < version:
        if (
            base is not None
            and manifest.version == base.version
            and manifest.checksum == base.checksum
        ):
            return Verdict("rebase", current)
        return Verdict("moved", current)
    refs = deltas_since(
        storage, manifest, version - 1, required=False, remote=remote, max_segments=max_segments
    )
    if not refs or refs[0].version != version:
        return Verdict(
            "unknown", current, f"the manifests that would name version {version} are gone"
        )
    if refs[0].nonce == nonce:
        return Verdict("landed", current)
    return Verdict("moved", current)


def read_manifest(storage: Storage) -> Read | None:
    """The current manifest (decoded and verified), or None if the remote has none."""
    try:
        blob = storage.get(fmt.MANIFEST_KEY)
    except NotFoundError:
        return None
    assert blob is not None
    return fmt.decode_manifest(blob.data), blob.etag, blob.data
