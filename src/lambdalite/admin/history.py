"""The history of a remote: the chain of manifests, the versions it can restore, their images.

The manifest names the snapshot it starts from, the deltas of the latest commits and
``previous``: the archive (``manifests/<version>-<nonce>``) of the manifest it replaced.
A manifest is replaced rather than extended in two ways at the same version:

* a **rollover** (every ``compact_after_deltas`` commits): the snapshot stays, the delta
  list starts empty and ``base`` says its deltas continue from the archived manifest's
  version, not from the snapshot;
* a **compaction** (``lambdalite compact``, or a writer once the deltas since the snapshot
  are worth a new one): a new snapshot of the version, no deltas, no ``base``;

and in two at a new version: an in-place restore (a new snapshot at current + 1) and an
import (version 1 of a new lineage). So the history is a chain, newest first::

    manifest  v14: snapshot 12 + deltas 13..14            -> manifests/...12 (a compaction)
    ...12     v12: snapshot 3, base 9 + deltas 10..12     -> manifests/...09 (a rollover)
    ...09     v9:  snapshot 3, base 6 + deltas 7..9       -> manifests/...06 (a rollover)
    ...06     v6:  snapshot 3 + deltas 4..6               -> ...

Building version 11 takes snapshot 3 and the deltas 4..11 of three archives. Within a
lineage every version has one state, so :class:`Lineage` indexes its records as one line
of versions: *sources* where an image can start (every snapshot, and the empty database
when a record has none) and the delta of each version. A version is restorable when a
source at or below it is followed by the delta of every version up to it; its
:class:`Plan` starts from the nearest such source (the fewest deltas). A delta that no
source reaches is a broken history (:class:`~lambdalite.errors.CorruptionError`); a
version no record holds any more is simply not retained (gc removed it).

The chain ends where ``previous`` is empty, or names an archive that ``lambdalite gc``
removed (normal: nothing retained needs it), or one that cannot be read (reported by
``lambdalite verify``).

:func:`build_image` writes the database image of one version into a local file,
verifying every object (sha256 and format, through :mod:`lambdalite.replica.format`) and
every step of the page checksums: the snapshot's pages, each delta's ``base_checksum``
against the pages it is applied to, and its ``checksum`` against the pages it produces.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from lambdalite.config import Settings
from lambdalite.errors import ConfigurationError, CorruptionError, LambdaliteError, NotFoundError
from lambdalite.replica import format as fmt
from lambdalite.replica.pages import checksum_hex, file_checksum, page_hash, read_page, write_pages
from lambdalite.storage import open_storage
from lambdalite.storage.base import ProgressCallback, Storage

__all__ = [
    "EMPTY_CHECKSUM",
    "History",
    "Lineage",
    "ManifestRecord",
    "NoDatabaseError",
    "Plan",
    "PlanStep",
    "ProgressFactory",
    "Source",
    "VersionInfo",
    "VersionNotAvailableError",
    "apply_delta",
    "build_image",
    "fetch_delta",
    "load_history",
    "load_snapshot",
    "no_progress",
    "open_remote",
    "split_lineages",
]

log = logging.getLogger("lambdalite.admin")

EMPTY_CHECKSUM = checksum_hex(0)
"""The checksum of a database with no pages (before the first commit)."""


class NoDatabaseError(NotFoundError):
    """The remote has no manifest: nothing was ever committed or imported there."""


class VersionNotAvailableError(LambdaliteError, LookupError):
    """The version (or time) asked for is not in the remote's retained history."""


class ProgressFactory(Protocol):
    """Opens a progress display for one transfer of ``total`` bytes.

    The context manager yields the callback that receives byte counts as they move.
    """

    def __call__(self, label: str, total: int) -> AbstractContextManager[ProgressCallback]: ...


@contextlib.contextmanager
def no_progress(label: str, total: int) -> Iterator[ProgressCallback]:
    """A :class:`ProgressFactory` that shows nothing."""
    yield lambda _n: None


def open_remote(settings: Settings) -> Storage:
    """The storage of a replica-mode ``settings`` (no I/O)."""
    if settings.mode != "replica":
        raise ConfigurationError(
            f"{settings.remote!r} is a database file (shared-file mode); the remote commands "
            "need a remote URL: file:///abs/folder or s3://bucket/prefix",
            key="remote",
        )
    return open_storage(settings.remote, endpoint_url=settings.endpoint_url, region=settings.region)


# ---------------------------------------------------------------------------- the chain


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """One manifest of the chain: the current one (``key == "manifest"``) or an archive."""

    key: str
    manifest: fmt.Manifest
    raw: bytes
    etag: str

    @property
    def is_current(self) -> bool:
        return self.key == fmt.MANIFEST_KEY

    def delta_where(self, ref: fmt.DeltaRef) -> str:
        """How an error names delta ``ref``: its object key, or ``<manifest>#v<version>``."""
        return ref.key if ref.key is not None else f"{self.key}#v{ref.version}"

    def object_keys(self) -> set[str]:
        """The snapshot and delta objects this manifest names (not inline deltas)."""
        m = self.manifest
        keys = {d.key for d in m.deltas if d.key is not None}
        if m.snapshot is not None:
            keys.add(m.snapshot.key)
        return keys

    def versions(self) -> set[int]:
        """The versions whose state this manifest holds: its snapshot's and its deltas'."""
        m = self.manifest
        held = {d.version for d in m.deltas}
        if m.snapshot is not None:
            held.add(m.snapshot.version)
        return held


@dataclass(frozen=True, slots=True)
class PlanStep:
    """One delta of a plan, with the manifest record that names it."""

    record: ManifestRecord
    ref: fmt.DeltaRef

    @property
    def where(self) -> str:
        """How errors name the delta: its object key, or ``<manifest>#v<version>`` inline."""
        return self.record.delta_where(self.ref)


@dataclass(frozen=True, slots=True)
class Source:
    """Where an image can start: a snapshot (``record``: the newest manifest naming it), or
    the empty database at version 0 (no snapshot, no record)."""

    version: int
    snapshot: fmt.SnapshotRef | None
    record: ManifestRecord | None

    @property
    def checksum(self) -> str:
        return self.snapshot.checksum if self.snapshot is not None else EMPTY_CHECKSUM

    @property
    def page_count(self) -> int:
        return self.snapshot.page_count if self.snapshot is not None else 0


_EMPTY = Source(0, None, None)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One restorable version and where its image comes from (the nearest snapshot)."""

    version: int
    committed_at: float
    committed_at_exact: bool  # False: only known as "at or before the snapshot's creation"
    lineage: str
    manifest_key: str  # the manifest holding the version: its delta's, or its snapshot's
    snapshot_key: str | None
    snapshot_version: int  # where the image starts (0: the empty database)
    delta_keys: tuple[str, ...]
    manifest_keys: tuple[str, ...] = ()  # every manifest the build reads, in that order

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "committed_at": self.committed_at,
            "committed_at_exact": self.committed_at_exact,
            "lineage": self.lineage,
            "manifest": self.manifest_key,
            "manifests": list(self.manifest_keys),
            "snapshot": self.snapshot_key,
            "snapshot_version": self.snapshot_version,
            "deltas": list(self.delta_keys),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What it takes to build the image of ``version``: a source, then one delta per version.

    The deltas may come from several manifests (a rollover continues a manifest in a new
    one); each step carries the record that names its delta.
    """

    version: int
    record: ManifestRecord  # the manifest holding ``version``: its delta's, or its snapshot's
    source: Source
    steps: tuple[PlanStep, ...]

    @property
    def snapshot(self) -> fmt.SnapshotRef | None:
        return self.source.snapshot

    @property
    def deltas(self) -> tuple[fmt.DeltaRef, ...]:
        return tuple(step.ref for step in self.steps)

    @property
    def records(self) -> tuple[ManifestRecord, ...]:
        """Every manifest the build reads (the snapshot's, then the deltas'), once each."""
        named = [self.source.record] if self.source.record is not None else []
        named += [step.record for step in self.steps]
        return tuple({r.key: r for r in named}.values())

    @property
    def page_size(self) -> int:
        return self.record.manifest.page_size

    @property
    def checksum(self) -> str:
        return self.steps[-1].ref.checksum if self.steps else self.source.checksum

    @property
    def page_count(self) -> int:
        return self.steps[-1].ref.page_count if self.steps else self.source.page_count

    @property
    def transfer_bytes(self) -> int:
        """Bytes downloaded as objects (inline deltas travel inside the manifest)."""
        size = self.snapshot.size if self.snapshot is not None else 0
        return size + sum(s.ref.size for s in self.steps if s.ref.key is not None)


class Lineage:
    """The records of one lineage (newest first), indexed by version (see the module doc).

    Where several records name the delta or a snapshot of one version, the newest one is
    used; the others (normally none: each delta lives in exactly one manifest) are listed
    in ``other_steps`` and ``other_sources`` for ``verify``.
    """

    def __init__(self, records: Sequence[ManifestRecord]) -> None:
        self.records = tuple(records)
        self.id = self.records[0].manifest.lineage
        self.steps: dict[int, PlanStep] = {}
        self.sources: dict[int, Source] = {}
        self.other_steps: list[PlanStep] = []
        self.other_sources: list[Source] = []
        self._times: dict[int, float] = {}
        for record in self.records:
            self._add(record)
        for record in reversed(self.records):  # the oldest record knows when it was committed
            m = record.manifest
            for d in m.deltas:
                self._times.setdefault(d.version, d.committed_at)
            self._times.setdefault(m.version, m.committed_at)
        self._reach = self._nearest_sources()

    def _add(self, record: ManifestRecord) -> None:
        m = record.manifest
        for ref in m.deltas:
            known = self.steps.setdefault(ref.version, PlanStep(record, ref))
            if known.ref != ref:
                self.other_steps.append(PlanStep(record, ref))
        snap = m.snapshot
        source = Source(snap.version, snap, record) if snap is not None else _EMPTY
        known_source = self.sources.setdefault(source.version, source)
        if known_source.snapshot != source.snapshot:
            self.other_sources.append(source)

    def _nearest_sources(self) -> dict[int, int]:
        """Every buildable version -> the version of the nearest source below it."""
        reach: dict[int, int] = {}
        for v in sorted(self.sources.keys() | self.steps.keys()):
            if v in self.sources:
                reach[v] = v
            elif v - 1 in reach:
                reach[v] = reach[v - 1]
        return reach

    @property
    def page_size(self) -> int:
        return self.records[0].manifest.page_size

    def restorable(self) -> list[int]:
        """Every version a plan can build, oldest first (never 0, the empty database)."""
        return sorted(v for v in self._reach if v > 0)

    def unbuildable(self) -> list[int]:
        """Versions whose delta is held but that no source reaches (a broken history)."""
        return sorted(v for v in self.steps if v not in self._reach)

    def missing_before(self, version: int) -> int:
        """The newest version at or below ``version`` that no record holds (a gap)."""
        v = version
        while v in self.steps and v not in self.sources:
            v -= 1
        return v

    def recorded_checksum(self, version: int) -> str | None:
        """The checksum the records give ``version`` (its delta's, else its source's)."""
        if version in self.steps:
            return self.steps[version].ref.checksum
        source = self.sources.get(version)
        return source.checksum if source is not None else None

    def plan(self, version: int) -> Plan | None:
        """The plan of ``version`` from its nearest source, or None if it cannot be built."""
        start = self._reach.get(version)
        if start is None or version == 0:
            return None
        source = self.sources[start]
        steps = tuple(self.steps[v] for v in range(start + 1, version + 1))
        record = steps[-1].record if steps else source.record
        assert record is not None  # a source without a record is version 0
        return Plan(version, record, source, steps)

    def committed_at(self, version: int) -> tuple[float, bool]:
        """(when ``version`` was committed, exactly known?); else its snapshot's creation."""
        if version in self._times:
            return self._times[version], True
        snapshot = self.sources[version].snapshot
        assert snapshot is not None  # only a snapshot version can lack a time
        return snapshot.created_at, False

    def info(self, version: int) -> VersionInfo:
        plan = self.plan(version)
        assert plan is not None
        at, exact = self.committed_at(version)
        return VersionInfo(
            version=version,
            committed_at=at,
            committed_at_exact=exact,
            lineage=self.id,
            manifest_key=plan.record.key,
            snapshot_key=plan.snapshot.key if plan.snapshot is not None else None,
            snapshot_version=plan.source.version,
            delta_keys=tuple(step.where for step in plan.steps),
            manifest_keys=tuple(r.key for r in plan.records),
        )

    def version_at(self, when: float) -> int | None:
        """The newest restorable version committed at or before POSIX time ``when``."""
        found = [v for v in self.restorable() if self.committed_at(v)[0] <= when]
        return max(found) if found else None

    def records_needed(self, versions: Iterable[int]) -> set[str]:
        """The keys of the records the plans of ``versions`` read (unbuildable ones skipped)."""
        newest: dict[int, int] = {}  # source -> the newest version built from it
        for v in versions:
            start = self._reach.get(v)
            if start is not None and v > 0:
                newest[start] = max(v, newest.get(start, v))
        keys: set[str] = set()
        for v in newest.values():  # a plan's steps include those of older versions
            plan = self.plan(v)
            assert plan is not None
            keys.update(r.key for r in plan.records)
        return keys


def split_lineages(records: Sequence[ManifestRecord]) -> tuple[Lineage, ...]:
    """The chain cut into its lineages (consecutive records of one lineage), newest first."""
    groups: list[list[ManifestRecord]] = []
    for record in records:
        if groups and groups[-1][0].manifest.lineage == record.manifest.lineage:
            groups[-1].append(record)
        else:
            groups.append([record])
    return tuple(Lineage(group) for group in groups)


@dataclass(frozen=True, slots=True)
class History:
    """The manifest chain of a remote, newest first (``records[0]`` is the current manifest)."""

    remote: str
    records: tuple[ManifestRecord, ...]
    end_key: str | None = None  # the `previous` that could not be read, if any
    end_error: CorruptionError | None = None  # None with an end_key: it is missing (gc)
    lineages: tuple[Lineage, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "lineages", split_lineages(self.records))

    @property
    def current(self) -> ManifestRecord:
        return self.records[0]

    @property
    def lineage(self) -> str:
        return self.current.manifest.lineage

    @property
    def current_lineage(self) -> Lineage:
        return self.lineages[0]

    def lineage_records(self) -> tuple[ManifestRecord, ...]:
        """The records of the current lineage (the chain up to the first foreign one)."""
        return self.current_lineage.records

    def versions(self) -> list[VersionInfo]:
        """Every restorable version of the current lineage, oldest first."""
        lineage = self.current_lineage
        return [lineage.info(v) for v in lineage.restorable()]

    def version_info(self, version: int) -> VersionInfo:
        """What :meth:`versions` says of ``version``; raises as :meth:`plan` does."""
        self.plan(version)
        return self.current_lineage.info(version)

    def plan(self, version: int) -> Plan:
        """How to build ``version``: from the nearest snapshot at or below it (the fewest
        deltas; the newest manifest naming it), then the delta of every version after it."""
        lineage = self.current_lineage
        plan = lineage.plan(version)
        if plan is not None:
            return plan
        if version in lineage.steps:
            raise self._broken(version)
        raise VersionNotAvailableError(
            f"version {version} is not in the retained history of {self.remote} "
            f"({self.describe_range()})"
        )

    def _broken(self, version: int) -> CorruptionError:
        gap = self.current_lineage.missing_before(version)
        why = f"no manifest of its history holds the delta of version {gap}"
        if self.end_key is not None:
            state = "missing" if self.end_error is None else "unreadable"
            why += f" (the history ends at {self.end_key!r}, which is {state})"
        return CorruptionError(
            f"version {version} of {self.remote} cannot be built: {why}; run lambdalite verify",
            remote=self.remote,
            key=self.end_key,
        )

    def latest_plan(self) -> Plan:
        """The plan of the current version, checked against what the manifest records."""
        record = self.current
        m = record.manifest
        plan = self.plan(m.version)
        if plan.checksum != m.checksum or plan.page_count != m.page_count:
            raise CorruptionError(
                f"manifest of {self.remote}: its history ends at pages {plan.checksum} "
                f"({plan.page_count} pages), it says {m.checksum} ({m.page_count} pages)",
                remote=self.remote,
                key=record.key,
            )
        return plan

    def version_at(self, when: float) -> VersionInfo:
        """The newest version committed at or before POSIX time ``when``."""
        version = self.current_lineage.version_at(when)
        if version is None:
            raise VersionNotAvailableError(
                f"no version of {self.remote} committed at or before that time is retained "
                f"({self.describe_range()})"
            )
        return self.current_lineage.info(version)

    def describe_range(self) -> str:
        lineage = self.current_lineage
        versions = lineage.restorable()
        text = (
            f"versions {versions[0]} to {versions[-1]} are retained"
            if versions
            else "no version is retained"
        )
        broken = lineage.unbuildable()
        if broken:
            text += f"; versions {broken[0]} to {broken[-1]} cannot be built"
        if self.end_key is not None and (broken or self.end_error is not None):
            text += f"; the history is broken at {self.end_key!r}"
        if broken or self.end_error is not None:
            text += " (run lambdalite verify)"
        return text


def load_history(storage: Storage, *, remote: str | None = None) -> History:
    """Read the manifest and follow its ``previous`` chain.

    A missing manifest is :class:`NoDatabaseError`; a corrupt current manifest
    raises :class:`CorruptionError`. An archive that is missing ends the chain
    (gc removes expired archives), one that is corrupt ends it with
    ``History.end_error`` set.
    """
    where = remote or storage.url
    try:
        blob = storage.get(fmt.MANIFEST_KEY)
    except NotFoundError as exc:
        raise NoDatabaseError(
            f"no database at {where}: import one with `lambdalite import`",
            remote=where,
            key=fmt.MANIFEST_KEY,
        ) from exc
    assert blob is not None
    current = fmt.decode_manifest(blob.data)
    records = [ManifestRecord(fmt.MANIFEST_KEY, current, blob.data, blob.etag)]
    seen = {fmt.MANIFEST_KEY}
    key = records[0].manifest.previous
    while key is not None:
        if key in seen:
            return History(where, tuple(records), key, _chain_error(where, key, "a cycle"))
        seen.add(key)
        try:
            blob = storage.get(key)
        except NotFoundError:
            log.debug("history of %s ends at %s (removed)", where, key)
            return History(where, tuple(records), key, None)
        assert blob is not None
        try:
            m = fmt.decode_manifest(blob.data, where=key)
        except CorruptionError as exc:
            _locate(exc, where)
            return History(where, tuple(records), key, exc)
        newer = records[-1].manifest
        if m.lineage == newer.lineage and m.version > newer.version:
            why = f"version {m.version}, newer than the manifest naming it ({newer.version})"
            return History(where, tuple(records), key, _chain_error(where, key, why))
        records.append(ManifestRecord(key, m, blob.data, blob.etag))
        key = m.previous
    return History(where, tuple(records))


def _chain_error(remote: str, key: str, why: str) -> CorruptionError:
    return CorruptionError(
        f"archived manifest {key!r} breaks the history chain: {why}", remote=remote, key=key
    )


# ---------------------------------------------------------------------------- images


def fetch_delta(
    storage: Storage, record: ManifestRecord, ref: fmt.DeltaRef, *, remote: str | None = None
) -> tuple[bytes, fmt.Delta]:
    """The bytes of delta ``ref`` (inline or an object) and its verified decoding."""
    where = record.delta_where(ref)
    if ref.inline is not None:
        data = ref.inline_bytes()
    else:
        assert ref.key is not None
        try:
            blob = storage.get(ref.key)
        except NotFoundError as exc:
            raise CorruptionError(
                f"delta {ref.key!r} (version {ref.version}) named by {record.key!r} is missing",
                remote=remote,
                key=ref.key,
            ) from exc
        assert blob is not None
        data = blob.data
    try:
        delta = fmt.decode_delta(data, ref, where=where, page_size=record.manifest.page_size)
    except CorruptionError as exc:
        _locate(exc, remote)
        raise
    return data, delta


def apply_delta(
    path: str, ref: fmt.DeltaRef, delta: fmt.Delta, checksum: int, *, where: str
) -> int:
    """Verify ``delta`` continues the pages of ``path`` (``checksum``), write it, return the new
    checksum; a mismatch either side is a :class:`CorruptionError` naming ``where``."""
    if checksum_hex(checksum) != ref.base_checksum:
        raise CorruptionError(
            f"delta {where!r} (version {ref.version}) does not continue version "
            f"{ref.version - 1}: it starts from pages {ref.base_checksum}, version "
            f"{ref.version - 1} has {checksum_hex(checksum)}",
            key=where,
        )
    size = delta.page_size
    old_count = os.path.getsize(path) // size
    fmt.check_delta_growth(ref, delta, old_count, where=where)  # before iterating the new pages
    new_count = delta.page_count
    acc = checksum
    zeros = b"\0" * size
    with open(path, "rb") as f:
        for p in range(new_count + 1, old_count + 1):  # cut off
            acc ^= page_hash(p, read_page(f, p, size))
        for p in range(old_count + 1, new_count + 1):  # added; zeros unless written below
            acc ^= page_hash(p, zeros)
        for p, data in delta.pages.items():
            if p <= new_count:
                acc ^= page_hash(p, read_page(f, p, size) if p <= old_count else zeros)
                acc ^= page_hash(p, data)
    if checksum_hex(acc) != ref.checksum:
        raise CorruptionError(
            f"delta {where!r} (version {ref.version}) produces pages that fail their checksum "
            f"(expected {ref.checksum}, got {checksum_hex(acc)})",
            key=where,
        )
    write_pages(path, delta.pages, new_count, size, fsync=False)
    return acc


def load_snapshot(
    storage: Storage,
    snap: fmt.SnapshotRef,
    dest: str,
    page_size: int,
    *,
    progress: ProgressCallback | None = None,
    remote: str | None = None,
) -> int:
    """Download, verify and decompress snapshot ``snap`` into ``dest``; its checksum."""
    packed = dest + ".zst"
    try:
        try:
            storage.get_file(snap.key, packed, progress=progress)
        except NotFoundError as exc:
            raise CorruptionError(
                f"snapshot {snap.key!r} (version {snap.version}) is missing",
                remote=remote,
                key=snap.key,
            ) from exc
        try:
            fmt.read_snapshot(packed, dest, snap, where=snap.key, page_size=page_size)
        except CorruptionError as exc:
            _locate(exc, remote)
            raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(packed)
    checksum, count = file_checksum(dest, page_size)
    if checksum_hex(checksum) != snap.checksum or count != snap.page_count:
        raise CorruptionError(
            f"snapshot {snap.key!r} (version {snap.version}) decompressed to pages that fail "
            f"their checksum ({count} pages, expected {snap.page_count})",
            remote=remote,
            key=snap.key,
        )
    return checksum


def build_image(
    storage: Storage,
    plan: Plan,
    dest: str,
    *,
    progress: ProgressCallback | None = None,
    remote: str | None = None,
) -> None:
    """Write the verified database image of ``plan.version`` to ``dest`` (replaced)."""
    tick: Callable[[int], None] = progress or (lambda _n: None)
    if plan.snapshot is not None:
        checksum = load_snapshot(
            storage, plan.snapshot, dest, plan.page_size, progress=progress, remote=remote
        )
    else:
        open(dest, "wb").close()
        checksum = 0
    for step in plan.steps:
        data, delta = fetch_delta(storage, step.record, step.ref, remote=remote)
        if step.ref.key is not None:
            tick(len(data))
        try:
            checksum = apply_delta(dest, step.ref, delta, checksum, where=step.where)
        except CorruptionError as exc:
            _locate(exc, remote)
            raise
    with open(dest, "rb+") as f:
        os.fsync(f.fileno())


def _locate(exc: CorruptionError, remote: str | None) -> None:
    """Fill in ``exc.remote`` (format-level errors know only the key)."""
    if remote is not None and exc.remote is None:
        exc.remote = remote
