"""``lambdalite gc``: delete what no manifest within the retention window can reach.

The history is a chain: the manifest, then the archive its ``previous`` names, and so on
(:mod:`.history`). An archive stopped being the manifest when the manifest that names it
was published, which is when that manifest's snapshot was created (a compaction, an
in-place restore or an import); from then on it is only needed to restore the versions
it alone covers, which were all superseded by that time. So:

* an archive is **expired** when the manifest that replaced it was published more than
  ``retention`` seconds ago; every older archive of the chain is expired too;
* **kept**: the manifest, every unexpired archive, and every snapshot and delta they name.
  Nothing the current manifest reaches is ever deleted, whatever the retention;
* **garbage**: the expired archives and the objects only they name, plus *orphans*:
  objects under ``snapshots/``, ``deltas/`` and ``manifests/`` that no manifest of the
  chain names (an upload whose commit lost its race, a crashed compaction, the history of
  a lineage an import replaced), once they are older (by the store's modification time)
  than both the retention and :data:`ORPHAN_GRACE`, so an upload whose manifest is about
  to be published is never taken for one.

Deletion order keeps the remote consistent if gc is interrupted: expired archives first,
newest first (the chain then simply ends earlier), then the objects they named, then the
orphans. A chain that cannot be read (a corrupt archive) makes gc refuse to delete
anything: run ``lambdalite verify``.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from lambdalite.admin.history import ManifestRecord, load_history, open_remote
from lambdalite.config import Settings
from lambdalite.errors import CorruptionError
from lambdalite.replica import format as fmt
from lambdalite.storage.base import ObjectInfo

__all__ = ["ORPHAN_GRACE", "GcItem", "GcReport", "gc"]

log = logging.getLogger("lambdalite.admin")

ORPHAN_GRACE = 3600.0
"""Seconds an unreferenced object is left alone whatever the retention (uploads in flight)."""

_OURS = re.compile(r"(snapshots|deltas|manifests)/(\d{20}|unreadable)-[0-9a-f]+")


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
    cutoff: float  # POSIX time: superseded before this is expired
    deleted: list[GcItem] = field(default_factory=list)  # or, in a dry run, would be
    kept: list[str] = field(default_factory=list)  # the manifests kept (archives in the window)

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
        }


def _published_at(record: ManifestRecord) -> float:
    """When ``record`` replaced the archive it names: its snapshot's creation."""
    m = record.manifest
    return m.snapshot.created_at if m.snapshot is not None else m.committed_at


def gc(settings: Settings, *, dry_run: bool = True, now: float | None = None) -> GcReport:
    """Delete (or with ``dry_run`` only list) the garbage of the remote; see the module doc."""
    now = time.time() if now is None else now
    cutoff = now - settings.retention
    storage = open_remote(settings)
    try:
        history = load_history(storage, remote=settings.remote)
        if history.end_error is not None:
            raise CorruptionError(
                f"gc refuses to delete anything: the history of {settings.remote} cannot be "
                f"read at {history.end_key!r} ({history.end_error}); run lambdalite verify",
                remote=settings.remote,
                key=history.end_key,
            ) from history.end_error
        kept = [history.current]
        expired: list[ManifestRecord] = []
        for newer, older in zip(history.records, history.records[1:], strict=False):
            if expired or _published_at(newer) < cutoff:
                expired.append(older)
            else:
                kept.append(older)
        keep = {fmt.MANIFEST_KEY} | {r.key for r in kept}
        for record in kept:
            keep |= record.object_keys()
        named = keep | {r.key for r in expired}
        for record in expired:
            named |= record.object_keys()
        listing: dict[str, ObjectInfo] = {}
        for prefix in ("snapshots/", "deltas/", "manifests/"):
            listing.update((info.key, info) for info in storage.list(prefix))
        report = GcReport(settings.remote, dry_run, settings.retention, cutoff,
                          kept=[r.key for r in kept])

        def doom(key: str, reason: str) -> None:
            if key in listing and key not in keep:
                report.deleted.append(GcItem(key, listing.pop(key).size, reason))

        for record in expired:
            doom(record.key, "expired archive")
        for record in expired:
            for key in sorted(record.object_keys()):
                doom(key, f"named only by expired archive {record.key}")
        orphan_cutoff = min(cutoff, now - ORPHAN_GRACE)
        for key, info in sorted(listing.items()):
            if key not in named and _OURS.fullmatch(key) and info.modified < orphan_cutoff:
                doom(key, "orphan: named by no manifest")
        if not dry_run:
            for item in report.deleted:
                storage.delete(item.key)
                log.info("gc %s: deleted %s (%s)", settings.remote, item.key, item.reason)
    finally:
        storage.close()
    return report
