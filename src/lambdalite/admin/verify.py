"""``lambdalite verify``: check every object the manifest chain reaches.

For each manifest of the chain (the current one, then each archive its ``previous``
names), newest first:

* the manifest decodes and its digest matches (:func:`~lambdalite.replica.format.decode_manifest`);
* its snapshot: present, sha256 and size as recorded, decompresses, its pages match their checksum;
* each delta (object or inline): present, sha256 and size, decodes; it continues the version
  before it (its ``base_checksum`` is the checksum after the previous delta, or the
  snapshot's); applied to the image, its pages give its ``checksum``;
* the image at the manifest's version has the manifest's checksum and page count, and
  equals the snapshot the newer manifest starts from when that is the same version;
* the current version's image passes ``PRAGMA integrity_check``.

The report names every broken object. Objects under ``snapshots/``, ``deltas/`` and
``manifests/`` that no manifest of the chain names are listed as *unreferenced*: not an
error (a commit or a compaction in flight, or garbage that ``lambdalite gc`` removes after
the retention window).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Literal

from lambdalite.admin.history import (
    EMPTY_CHECKSUM,
    History,
    ManifestRecord,
    ProgressFactory,
    apply_delta,
    fetch_delta,
    load_history,
    load_snapshot,
    no_progress,
    open_remote,
)
from lambdalite.admin.sqlitefile import integrity_check
from lambdalite.config import Settings
from lambdalite.errors import CorruptionError
from lambdalite.replica import format as fmt
from lambdalite.replica.pages import checksum_hex
from lambdalite.storage.base import ProgressCallback, Storage

__all__ = ["ObjectCheck", "VerifyReport", "verify"]

log = logging.getLogger("lambdalite.admin")

Kind = Literal["manifest", "snapshot", "delta"]
_PREFIXES = ("snapshots/", "deltas/", "manifests/")


@dataclass(frozen=True, slots=True)
class ObjectCheck:
    """The verdict on one object (``key``: an object key, or ``<manifest>#v<n>`` inline)."""

    key: str
    kind: Kind
    version: int | None
    ok: bool
    message: str
    named_by: str | None = None  # the manifest that names it


@dataclass(slots=True)
class VerifyReport:
    remote: str
    version: int | None = None
    lineage: str | None = None
    objects: list[ObjectCheck] = field(default_factory=list)
    integrity: list[str] | None = None  # PRAGMA integrity_check of the current image
    unreferenced: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[ObjectCheck]:
        return [o for o in self.objects if not o.ok]

    @property
    def ok(self) -> bool:
        return not self.problems and self.integrity == ["ok"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "ok": self.ok,
            "version": self.version,
            "lineage": self.lineage,
            "integrity": self.integrity,
            "problems": [dataclasses.asdict(o) for o in self.problems],
            "objects": [dataclasses.asdict(o) for o in self.objects],
            "unreferenced": self.unreferenced,
            "notes": self.notes,
        }


class _Checker:
    def __init__(self, storage: Storage, remote: str, report: VerifyReport, work: str,
                 tick: ProgressCallback) -> None:
        self.storage = storage
        self.remote = remote
        self.report = report
        self.work = work
        self.tick = tick
        self._seen: dict[str, int] = {}

    def add(self, check: ObjectCheck) -> None:
        """Record ``check`` once per key; a failure replaces an earlier success."""
        index = self._seen.get(check.key)
        if index is None:
            self._seen[check.key] = len(self.report.objects)
            self.report.objects.append(check)
        elif not check.ok and self.report.objects[index].ok:
            self.report.objects[index] = check
        if not check.ok:
            log.warning("verify %s: %s", self.remote, check.message)

    def record(self, record: ManifestRecord, newer: ManifestRecord | None) -> None:
        """Check one manifest of the chain and everything it names."""
        m = record.manifest
        self.add(ObjectCheck(record.key, "manifest", m.version, True, "decodes"))
        image = os.path.join(self.work, "image")
        valid, checksum = self._snapshot(record, image)
        expected = m.snapshot.checksum if m.snapshot is not None else EMPTY_CHECKSUM
        for ref in m.deltas:
            valid, checksum = self._delta(record, ref, image, valid, checksum, expected)
            expected = ref.checksum
        if valid:
            count = os.path.getsize(image) // m.page_size
            if checksum_hex(checksum) != m.checksum or count != m.page_count:
                self.add(ObjectCheck(
                    record.key, "manifest", m.version, False,
                    f"{record.key!r}: its snapshot and deltas give pages {checksum_hex(checksum)} "
                    f"({count} pages); it records {m.checksum} ({m.page_count} pages)",
                ))
                valid = False
        if newer is not None:
            self._continuity(record, newer)
        if record.is_current:
            self.report.integrity = integrity_check(image) if valid else None
            if not valid:
                self.report.notes.append(
                    "the current version's image could not be built: no integrity check"
                )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(image)

    def _snapshot(self, record: ManifestRecord, image: str) -> tuple[bool, int]:
        snap = record.manifest.snapshot
        if snap is None:
            open(image, "wb").close()
            return True, 0
        try:
            checksum = load_snapshot(self.storage, snap, image, record.manifest.page_size,
                                     progress=self.tick, remote=self.remote)
        except CorruptionError as exc:
            self.add(ObjectCheck(snap.key, "snapshot", snap.version, False, str(exc), record.key))
            return False, 0
        self.add(ObjectCheck(snap.key, "snapshot", snap.version, True, "ok", record.key))
        return True, checksum

    def _delta(self, record: ManifestRecord, ref: fmt.DeltaRef, image: str, valid: bool,
               checksum: int, expected: str) -> tuple[bool, int]:
        where = record.delta_where(ref)

        def bad(message: str) -> tuple[bool, int]:
            self.add(ObjectCheck(where, "delta", ref.version, False, message, record.key))
            return False, checksum

        try:
            data, delta = fetch_delta(self.storage, record, ref, remote=self.remote)
        except CorruptionError as exc:
            return bad(str(exc))
        if ref.key is not None:
            self.tick(len(data))
        if ref.base_checksum != expected:
            return bad(
                f"delta {where!r} (version {ref.version}) does not continue version "
                f"{ref.version - 1}: it starts from pages {ref.base_checksum}, version "
                f"{ref.version - 1} ends at {expected}"
            )
        if not valid:
            self.add(ObjectCheck(where, "delta", ref.version, True,
                                 "decodes (not applied: an earlier object is broken)", record.key))
            return False, checksum
        try:
            checksum = apply_delta(image, ref, delta, checksum, where=where)
        except CorruptionError as exc:
            return bad(str(exc))
        self.add(ObjectCheck(where, "delta", ref.version, True, "ok", record.key))
        return True, checksum

    def _continuity(self, older: ManifestRecord, newer: ManifestRecord) -> None:
        """An archive must end where the manifest that replaced it starts (same lineage)."""
        o, n = older.manifest, newer.manifest
        if o.lineage != n.lineage or n.snapshot is None or n.base_version != o.version:
            return
        if n.snapshot.checksum != o.checksum:
            self.add(ObjectCheck(
                older.key, "manifest", o.version, False,
                f"archive {older.key!r} ends at pages {o.checksum} but {newer.key!r} starts "
                f"version {o.version} from snapshot pages {n.snapshot.checksum}",
            ))


def verify(settings: Settings, *, progress: ProgressFactory = no_progress) -> VerifyReport:
    """Check every object reachable from the manifest chain (see the module docstring)."""
    storage = open_remote(settings)
    report = VerifyReport(settings.remote)
    try:
        try:
            history = load_history(storage, remote=settings.remote)
        except CorruptionError as exc:
            report.objects.append(ObjectCheck(fmt.MANIFEST_KEY, "manifest", None, False, str(exc)))
            return report
        report.version = history.current.manifest.version
        report.lineage = history.lineage
        total = _transfer_bytes(history)
        os.makedirs(settings.cache_dir, exist_ok=True)
        with (
            tempfile.TemporaryDirectory(prefix="verify-", dir=settings.cache_dir) as work,
            progress("verifying", total) as tick,
        ):
            checker = _Checker(storage, settings.remote, report, work, tick)
            newer = None
            for record in history.records:
                checker.record(record, newer)
                newer = record
        _history_end(history, report)
        report.unreferenced = _unreferenced(storage, history)
    finally:
        storage.close()
    return report


def _transfer_bytes(history: History) -> int:
    total = 0
    for record in history.records:
        m = record.manifest
        total += m.snapshot.size if m.snapshot is not None else 0
        total += sum(d.size for d in m.deltas if d.key is not None)
    return total


def _history_end(history: History, report: VerifyReport) -> None:
    if history.end_key is None:
        return
    if history.end_error is not None:
        report.objects.append(
            ObjectCheck(history.end_key, "manifest", None, False, str(history.end_error))
        )
    else:
        report.notes.append(
            f"the history ends at {history.end_key!r}, which no longer exists "
            "(removed by gc after the retention window)"
        )


def _unreferenced(storage: Storage, history: History) -> list[str]:
    named = {r.key for r in history.records}
    for record in history.records:
        named |= record.object_keys()
    return sorted(
        info.key for prefix in _PREFIXES for info in storage.list(prefix) if info.key not in named
    )

