"""``lambdalite verify``: check every object the manifest chain reaches.

The chain (the current manifest, then each archive its ``previous`` names) is cut into
lineages; each lineage's versions are built once, oldest first, the way restores build
them (:class:`~lambdalite.admin.history.Lineage`): each snapshot is loaded, each delta is
applied to the image of the version before it, wherever that delta lives (a rollover
continues a manifest's deltas in the next one). Along the way:

* every manifest decodes and its digest matches
  (:func:`~lambdalite.replica.format.decode_manifest`);
* every snapshot: present, sha256 and size as recorded, decompresses, its pages match their
  checksum;
* every delta (object or inline): present, sha256 and size, decodes; it continues the version
  before it (its ``base_checksum`` is what the history records for that version); applied to
  the image, its pages give its ``checksum``;
* every manifest's version (and its ``base`` version) is built to the checksum and page count
  it records;
* each archive continues into the manifest that replaced it: a rollover's ``base`` is the
  archive's version and checksum, with the same snapshot or a newer one; a compaction's
  snapshot has the archive's checksum;
* every delta can be built from some snapshot: one that cannot means a manifest it needs is
  missing or unreadable (named), not that gc removed what nothing needs (a note);
* the current version's image passes ``PRAGMA integrity_check``.

The report names every broken object. Objects under ``snapshots/``, ``deltas/`` and
``manifests/`` that no manifest of the chain names are listed as *unreferenced*: not an
error (a commit or a compaction in flight, or garbage that ``lambdalite gc`` removes after
the retention window).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Literal

from lambdalite.admin.history import (
    History,
    Lineage,
    ManifestRecord,
    PlanStep,
    ProgressFactory,
    Source,
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
    def __init__(self, storage: Storage, history: History, report: VerifyReport, work: str,
                 tick: ProgressCallback) -> None:
        self.storage = storage
        self.history = history
        self.remote = history.remote
        self.report = report
        self.image = os.path.join(work, "image")
        self.loaded = os.path.join(work, "snapshot")
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

    def run(self) -> None:
        for record in self.history.records:
            self.add(ObjectCheck(record.key, "manifest", record.manifest.version, True, "decodes"))
        for newer, older in zip(self.history.records, self.history.records[1:], strict=False):
            self._continuity(older, newer)
        for lineage in self.history.lineages:
            states = self._walk(lineage)
            for record in lineage.records:
                self._states_match(record, states)
            self._gaps(lineage)
        self._others()

    # ------------------------------------------------------------------ the walk

    def _walk(self, lineage: Lineage) -> dict[int, tuple[str, int]]:
        """Build every version of ``lineage`` once, oldest first: apply each delta to the
        image of the version before it, load each snapshot (the image continues from it).
        Every object is checked on the way; the result is each verified version's
        (checksum, page count)."""
        states: dict[int, tuple[str, int]] = {}
        current = lineage is self.history.current_lineage
        top = self.history.current.manifest.version
        at: int | None = None  # the version the image holds, None when it is not verified
        checksum = 0
        versions = sorted(lineage.sources.keys() | lineage.steps.keys())
        for v in versions:
            step = lineage.steps.get(v)
            if step is not None:
                applied = self._delta(lineage, step, checksum, at == v - 1)
                at, checksum = (v, applied) if applied is not None else (None, checksum)
            source = lineage.sources.get(v)
            if source is not None:
                loaded = self._source(source, lineage.page_size)
                if loaded is not None:
                    at, checksum = v, loaded
            if at == v:
                states[v] = (checksum_hex(checksum), os.path.getsize(self.image)
                             // lineage.page_size)
            if current and v == top:
                self._integrity(at == v)
        if current and top not in versions:
            self._integrity(False)
        return states

    def _integrity(self, built: bool) -> None:
        self.report.integrity = integrity_check(self.image) if built else None
        if not built:
            self.report.notes.append(
                "the current version's image could not be built: no integrity check"
            )

    def _source(self, source: Source, page_size: int) -> int | None:
        """Check a source's snapshot; its checksum once it is the image (None if broken)."""
        snap = source.snapshot
        if snap is None:  # the empty database
            open(self.image, "wb").close()
            return 0
        named_by = source.record.key if source.record is not None else None
        try:
            checksum = load_snapshot(self.storage, snap, self.loaded, page_size,
                                     progress=self.tick, remote=self.remote)
        except CorruptionError as exc:
            self.add(ObjectCheck(snap.key, "snapshot", snap.version, False, str(exc), named_by))
            return None
        self.add(ObjectCheck(snap.key, "snapshot", snap.version, True, "ok", named_by))
        os.replace(self.loaded, self.image)
        return checksum

    def _delta(self, lineage: Lineage, step: PlanStep, checksum: int,
               applicable: bool) -> int | None:
        """Check one delta, and apply it if the image holds the version before it."""
        ref, where, named_by = step.ref, step.where, step.record.key

        def bad(message: str) -> int | None:
            self.add(ObjectCheck(where, "delta", ref.version, False, message, named_by))
            return None

        try:
            data, delta = fetch_delta(self.storage, step.record, ref, remote=self.remote)
        except CorruptionError as exc:
            return bad(str(exc))
        if ref.key is not None:
            self.tick(len(data))
        expected = lineage.recorded_checksum(ref.version - 1)
        if expected is not None and ref.base_checksum != expected:
            return bad(
                f"delta {where!r} (version {ref.version}) does not continue version "
                f"{ref.version - 1}: it starts from pages {ref.base_checksum}, version "
                f"{ref.version - 1} ends at {expected}"
            )
        if not applicable:
            self.add(ObjectCheck(where, "delta", ref.version, True,
                                 f"decodes (not applied: version {ref.version - 1} could not be "
                                 "built)", named_by))
            return None
        try:
            new = apply_delta(self.image, ref, delta, checksum, where=where)
        except CorruptionError as exc:
            return bad(str(exc))
        self.add(ObjectCheck(where, "delta", ref.version, True, "ok", named_by))
        return new

    # ------------------------------------------------------------------ the records

    def _states_match(self, record: ManifestRecord, states: dict[int, tuple[str, int]]) -> None:
        """The versions a manifest records (its own, its base) have the pages it says."""
        m = record.manifest
        claims = [(m.version, m.checksum, m.page_count, "it records")]
        if m.base is not None:
            claims.append((m.base.version, m.base.checksum, m.base.page_count, "its base says"))
        for version, checksum, count, says in claims:
            state = states.get(version)
            if state is not None and state != (checksum, count):
                self.add(ObjectCheck(
                    record.key, "manifest", m.version, False,
                    f"{record.key!r}: version {version} is built to pages {state[0]} "
                    f"({state[1]} pages); {says} {checksum} ({count} pages)",
                ))

    def _continuity(self, older: ManifestRecord, newer: ManifestRecord) -> None:
        """An archive must end where the manifest that replaced it starts (same lineage)."""
        o, n = older.manifest, newer.manifest
        if o.lineage != n.lineage:
            return
        if n.base is not None:
            why = _rollover_mismatch(older, newer)
        elif n.snapshot is not None and n.snapshot.version == o.version:
            why = (
                None if n.snapshot.checksum == o.checksum
                else f"archive {older.key!r} ends at pages {o.checksum} but {newer.key!r} starts "
                f"version {o.version} from snapshot pages {n.snapshot.checksum}"
            )
        else:
            return  # an in-place restore: a new snapshot at a new version
        if why is not None:
            self.add(ObjectCheck(older.key, "manifest", o.version, False, why))

    def _gaps(self, lineage: Lineage) -> None:
        """Deltas that no snapshot reaches: a manifest they need is missing or broken."""
        broken = lineage.unbuildable()
        if not broken:
            return
        span = f"versions {broken[0]} to {broken[-1]} cannot be built"
        history = self.history
        if lineage is history.lineages[-1] and history.end_key is not None:
            if history.end_error is None:
                self.add(ObjectCheck(
                    history.end_key, "manifest", None, False,
                    f"archive {history.end_key!r} is missing, but the manifests after it continue "
                    f"from it: {span}",
                ))
            else:
                self.report.notes.append(f"{span}: they need {history.end_key!r}")
            return
        step = lineage.steps[broken[0]]
        gap = lineage.missing_before(broken[0])
        self.add(ObjectCheck(
            step.record.key, "manifest", step.record.manifest.version, False,
            f"{step.record.key!r}: no manifest of the chain holds version {gap}, which its "
            f"deltas continue: {span}",
        ))

    def _others(self) -> None:
        """Objects a newer manifest shadows: intact, and the same version's state."""
        for lineage in self.history.lineages:
            for step in lineage.other_steps:
                self._other_delta(lineage, step)
            for source in lineage.other_sources:
                self._other_snapshot(lineage, source)

    def _other_delta(self, lineage: Lineage, step: PlanStep) -> None:
        ref, where = step.ref, step.where
        try:
            fetch_delta(self.storage, step.record, ref, remote=self.remote)
        except CorruptionError as exc:
            self.add(ObjectCheck(where, "delta", ref.version, False, str(exc), step.record.key))
            return
        used = lineage.steps[ref.version].ref
        same = (used.base_checksum, used.checksum) == (ref.base_checksum, ref.checksum)
        message = "ok" if same else (
            f"delta {where!r} gives version {ref.version} pages {ref.checksum}, but "
            f"{lineage.steps[ref.version].where!r} gives it {used.checksum}"
        )
        self.add(ObjectCheck(where, "delta", ref.version, same, message, step.record.key))

    def _other_snapshot(self, lineage: Lineage, source: Source) -> None:
        assert source.snapshot is not None and source.record is not None
        loaded = self._source(source, lineage.page_size)
        used = lineage.sources[source.version]
        if loaded is not None and used.checksum != source.checksum:
            self.add(ObjectCheck(
                source.snapshot.key, "snapshot", source.version, False,
                f"snapshot {source.snapshot.key!r} has other pages than "
                f"{used.snapshot.key if used.snapshot else 'the empty database'!r} "
                f"(version {source.version})", source.record.key,
            ))


def _rollover_mismatch(older: ManifestRecord, newer: ManifestRecord) -> str | None:
    """Why ``newer`` (its ``base`` set) does not continue archive ``older``, or None."""
    o, n = older.manifest, newer.manifest
    base = n.base
    assert base is not None
    if base.version != o.version:
        return (f"{newer.key!r} continues version {base.version} from archive {older.key!r}, "
                f"which is version {o.version}")
    if (base.checksum, base.page_count) != (o.checksum, o.page_count):
        return (f"archive {older.key!r} ends at pages {o.checksum} ({o.page_count} pages) but "
                f"{newer.key!r} continues from pages {base.checksum} ({base.page_count} pages)")
    old_snap, new_snap = o.snapshot, n.snapshot
    if old_snap is not None and (
        new_snap is None
        or new_snap.version < old_snap.version
        or (new_snap.version == old_snap.version and new_snap.checksum != old_snap.checksum)
    ):
        return (f"{newer.key!r} continues archive {older.key!r} but starts from an older or "
                "different snapshot")
    return None


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
        os.makedirs(settings.cache_dir, exist_ok=True)
        with (
            tempfile.TemporaryDirectory(prefix="verify-", dir=settings.cache_dir) as work,
            progress("verifying", _transfer_bytes(history)) as tick,
        ):
            _Checker(storage, history, report, work, tick).run()
        _history_end(history, report)
        report.unreferenced = _unreferenced(storage, history)
    finally:
        storage.close()
    return report


def _transfer_bytes(history: History) -> int:
    sizes: dict[str, int] = {}
    for record in history.records:
        m = record.manifest
        if m.snapshot is not None:
            sizes[m.snapshot.key] = m.snapshot.size
        sizes.update((d.key, d.size) for d in m.deltas if d.key is not None)
    return sum(sizes.values())


def _history_end(history: History, report: VerifyReport) -> None:
    if history.end_key is None:
        return
    if history.end_error is not None:
        report.objects.append(
            ObjectCheck(history.end_key, "manifest", None, False, str(history.end_error))
        )
    elif not history.lineages[-1].unbuildable():
        report.notes.append(
            f"the history ends at {history.end_key!r}, which no longer exists "
            "(removed by gc: no retained version needs it)"
        )


def _unreferenced(storage: Storage, history: History) -> list[str]:
    named = {r.key for r in history.records}
    for record in history.records:
        named |= record.object_keys()
    return sorted(
        info.key for prefix in _PREFIXES for info in storage.list(prefix) if info.key not in named
    )
