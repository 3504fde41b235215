"""``lambdalite gc``: delete what no version within the retention window needs.

The history is a chain: the manifest, then the archive its ``previous`` names, and so on
(:mod:`.history`). A version is built from the nearest snapshot at or below it plus the
delta of every version after that snapshot, and after rollovers those deltas lie in
several archives: the *current* version may need every archive back to its snapshot,
however old they are. So gc decides by the versions that must stay restorable, not by the
age of archives:

* **retained versions**: every version a point-in-time restore reaches within the window,
  that is the versions committed less than ``retention`` seconds ago, plus the newest one
  committed before that (it was current when the window starts), and so always the
  current version. A lineage that an import replaced is retained the same way up to the
  import: its last version stays retained until the import is older than the retention.
* **kept**: the chain, from the manifest down to the oldest archive that the build of a
  retained version reads (the manifest naming its snapshot, or one holding one of its
  deltas), and every snapshot and delta those manifests name. Every version a kept
  manifest holds stays buildable too: the archives its build reads are kept as well.
  The chain is only ever cut below its oldest kept archive, so it stays linked.
  **Nothing the current version needs is ever deleted**, whatever the retention (even 0).
* **garbage**: the archives below the cut, the snapshots and deltas only they name, plus
  *orphans*: objects under ``snapshots/``, ``deltas/`` and ``manifests/`` that no manifest
  of the chain names (an upload whose commit lost its race, a crashed compaction or
  rollover, the history of a lineage an import replaced once gc cut it), once they are
  older (by the store's modification time) than both the retention and
  :data:`ORPHAN_GRACE`, so an upload whose manifest is about to be published is never
  taken for one.

Deletion order keeps the remote consistent if gc is interrupted: expired archives first,
newest first (the chain then simply ends earlier), then the objects they named, then the
orphans. A chain that cannot be read (a corrupt archive) or that cannot build a version it
holds (a missing archive) makes gc refuse to delete anything: run ``lambdalite verify``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lambdalite.admin.history import History, Lineage, ManifestRecord, load_history, open_remote
from lambdalite.config import Settings
from lambdalite.errors import CorruptionError
from lambdalite.replica import format as fmt
from lambdalite.storage.base import ObjectInfo, Storage

__all__ = ["ORPHAN_GRACE", "GcItem", "GcReport", "gc", "kept_count", "retained_versions"]

log = logging.getLogger("lambdalite.admin")

ORPHAN_GRACE = 3600.0
"""Seconds an unreferenced object is left alone whatever the retention (uploads in flight)."""

_OURS = re.compile(r"(snapshots|deltas|manifests)/(\d{20}|unreadable)-[0-9a-f]+")
_PREFIXES = ("snapshots/", "deltas/", "manifests/")


@dataclass(frozen=True, slots=True)
class GcItem:
    key: str
    size: int
    reason: str


@dataclass(slots=True)
class GcReport:
    remote: str
    dry_run: bool
    retention: float
    cutoff: float  # POSIX time: the start of the window (restorable to any time after it)
    deleted: list[GcItem] = field(default_factory=list)  # or, in a dry run, would be
    kept: list[str] = field(default_factory=list)  # the manifests kept: the chain's newest
    oldest_version: int | None = None  # the oldest version restorable once gc is done

    @property
    def deleted_bytes(self) -> int:
        return sum(item.size for item in self.deleted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "dry_run": self.dry_run,
            "retention": self.retention,
            "cutoff": self.cutoff,
            "deleted": [dataclasses.asdict(item) for item in self.deleted],
            "deleted_count": len(self.deleted),
            "deleted_bytes": self.deleted_bytes,
            "kept_manifests": self.kept,
            "oldest_version": self.oldest_version,
        }


# ---------------------------------------------------------------------------- the rule


def _published_at(record: ManifestRecord) -> float:
    """When ``record`` (the oldest of its lineage) replaced an older lineage: its snapshot's
    creation (an import), else its commit."""
    m = record.manifest
    return m.snapshot.created_at if m.snapshot is not None else m.committed_at


def retained_versions(lineage: Lineage, cutoff: float, replaced_at: float | None) -> set[int]:
    """The versions of ``lineage`` a restore to any time after ``cutoff`` may ask for.

    ``replaced_at``: when an import replaced the lineage (None: it is the current one).
    """
    if replaced_at is not None and replaced_at < cutoff:
        return set()
    versions = lineage.restorable()
    retained = {v for v in versions if lineage.committed_at(v)[0] >= cutoff}
    current_then = lineage.version_at(cutoff)
    if current_then is not None:
        retained.add(current_then)
    if replaced_at is None and versions:
        retained.add(versions[-1])  # the current version, whatever the clocks say
    return retained


def kept_count(history: History, cutoff: float) -> int:
    """How many records of the chain (newest first) gc keeps (see the module docstring)."""
    position = {record.key: i for i, record in enumerate(history.records)}
    lineages = history.lineages
    wanted = [
        retained_versions(lineage, cutoff, _replaced_at(lineages, i))
        for i, lineage in enumerate(lineages)
    ]
    count = 1
    while True:
        for lineage, versions in zip(lineages, wanted, strict=True):
            keys = lineage.records_needed(versions)
            count = max([count, *(position[key] + 1 for key in keys)])
        grown = False
        for lineage, versions in zip(lineages, wanted, strict=True):
            held = {v for r in lineage.records if position[r.key] < count for v in r.versions()}
            if not held <= versions:
                versions |= held
                grown = True
        if not grown:
            return count


def _replaced_at(lineages: Sequence[Lineage], index: int) -> float | None:
    return None if index == 0 else _published_at(lineages[index - 1].records[-1])


def _refuse_broken(history: History) -> None:
    """gc deletes nothing from a history it cannot fully read or build."""
    broken = [v for lineage in history.lineages for v in lineage.unbuildable()]
    if history.end_error is None and not broken:
        return
    why = (
        str(history.end_error)
        if history.end_error is not None
        else f"versions {broken[0]} to {broken[-1]} cannot be built"
    )
    raise CorruptionError(
        f"gc refuses to delete anything: the history of {history.remote} is broken at "
        f"{history.end_key!r} ({why}); run lambdalite verify",
        remote=history.remote,
        key=history.end_key,
    ) from history.end_error


# ---------------------------------------------------------------------------- gc


def gc(settings: Settings, *, dry_run: bool = True, now: float | None = None) -> GcReport:
    """Delete (or with ``dry_run`` only list) the garbage of the remote; see the module doc."""
    now = time.time() if now is None else now
    cutoff = now - settings.retention
    storage = open_remote(settings)
    try:
        history = load_history(storage, remote=settings.remote)
        _refuse_broken(history)
        count = kept_count(history, cutoff)
        kept, expired = history.records[:count], history.records[count:]
        report = GcReport(
            settings.remote, dry_run, settings.retention, cutoff, kept=[r.key for r in kept],
            oldest_version=_oldest_after(history, kept),
        )
        report.deleted = _garbage(storage, history, kept, expired, min(cutoff, now - ORPHAN_GRACE))
        if not dry_run:
            for item in report.deleted:
                storage.delete(item.key)
                log.info("gc %s: deleted %s (%s)", settings.remote, item.key, item.reason)
    finally:
        storage.close()
    return report


def _oldest_after(history: History, kept: Sequence[ManifestRecord]) -> int | None:
    lineage = Lineage([r for r in kept if r.manifest.lineage == history.lineage])
    versions = lineage.restorable()
    return versions[0] if versions else None


def _garbage(
    storage: Storage,
    history: History,
    kept: Sequence[ManifestRecord],
    expired: Sequence[ManifestRecord],
    orphan_cutoff: float,
) -> list[GcItem]:
    """What to delete, in the order to delete it (see the module docstring)."""
    keep = {fmt.MANIFEST_KEY} | {r.key for r in kept}
    for record in kept:
        keep |= record.object_keys()
    named = {r.key for r in history.records}
    for record in history.records:
        named |= record.object_keys()
    listing: dict[str, ObjectInfo] = {}
    for prefix in _PREFIXES:
        listing.update((info.key, info) for info in storage.list(prefix))
    doomed: list[GcItem] = []

    def doom(key: str, reason: str) -> None:
        if key in listing and key not in keep:
            doomed.append(GcItem(key, listing.pop(key).size, reason))

    for record in expired:
        doom(record.key, "expired archive: no retained version needs it")
    for record in expired:
        for key in sorted(record.object_keys()):
            doom(key, f"named only by expired archive {record.key}")
    for key, info in sorted(listing.items()):
        if key not in named and _OURS.fullmatch(key) and info.modified < orphan_cutoff:
            doom(key, "orphan: named by no manifest")
    return doomed
