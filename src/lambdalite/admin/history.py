"""The history of a remote: the chain of manifests, the versions it can restore, their images.

The manifest names the snapshot it starts from and the deltas after it. When a
writer compacts (or an operator restores in place, or imports over a database),
the manifest it replaces is first archived as ``manifests/<version>-<nonce>``
and the new manifest's ``previous`` names that archive, so the history is a
chain, newest first::

    manifest (v12: snapshot 9, deltas 10..12) -> manifests/...09 (v9: snapshot 6, deltas 7..9)
                                              -> manifests/...06 (v6: snapshot 3, deltas 4..6) ...

Every manifest of the chain covers the versions from its snapshot's version to
its own; a version is restorable when some manifest of the current lineage
covers it. The chain ends where ``previous`` is empty, or names an archive that
``lambdalite gc`` removed after the retention window (normal), or one that
cannot be read (reported by ``lambdalite verify``).

:func:`build_image` writes the database image of one version into a local
file, verifying every object (sha256 and format, through
:mod:`lambdalite.replica.format`) and every step of the page checksums: the
snapshot's pages, each delta's ``base_checksum`` against the pages it is
applied to, and its ``checksum`` against the pages it produces.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
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
    "ManifestRecord",
    "NoDatabaseError",
    "Plan",
    "ProgressFactory",
    "VersionInfo",
    "VersionNotAvailableError",
    "apply_delta",
    "build_image",
    "fetch_delta",
    "load_history",
    "load_snapshot",
    "no_progress",
    "open_remote",
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


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One restorable version and where its image comes from (the cheapest source)."""

    version: int
    committed_at: float
    committed_at_exact: bool  # False: only known as "at or before the snapshot's creation"
    lineage: str
    manifest_key: str
    snapshot_key: str | None
    snapshot_version: int
    delta_keys: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "committed_at": self.committed_at,
            "committed_at_exact": self.committed_at_exact,
            "lineage": self.lineage,
            "manifest": self.manifest_key,
            "snapshot": self.snapshot_key,
            "snapshot_version": self.snapshot_version,
            "deltas": list(self.delta_keys),
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What it takes to build the image of ``version``: a snapshot (or nothing) plus deltas."""

    version: int
    record: ManifestRecord
    snapshot: fmt.SnapshotRef | None
    deltas: tuple[fmt.DeltaRef, ...]

    @property
    def page_size(self) -> int:
        return self.record.manifest.page_size

    @property
    def checksum(self) -> str:
        if self.deltas:
            return self.deltas[-1].checksum
        return self.snapshot.checksum if self.snapshot is not None else EMPTY_CHECKSUM

    @property
    def page_count(self) -> int:
        if self.deltas:
            return self.deltas[-1].page_count
        return self.snapshot.page_count if self.snapshot is not None else 0

    @property
    def transfer_bytes(self) -> int:
        """Bytes downloaded as objects (inline deltas travel inside the manifest)."""
        size = self.snapshot.size if self.snapshot is not None else 0
        return size + sum(d.size for d in self.deltas if d.key is not None)


@dataclass(frozen=True, slots=True)
class History:
    """The manifest chain of a remote, newest first (``records[0]`` is the current manifest)."""

    remote: str
    records: tuple[ManifestRecord, ...]
    end_key: str | None = None  # the `previous` that could not be read, if any
    end_error: CorruptionError | None = None  # None with an end_key: it is missing (gc)

    @property
    def current(self) -> ManifestRecord:
        return self.records[0]

    @property
    def lineage(self) -> str:
        return self.current.manifest.lineage

    def lineage_records(self) -> tuple[ManifestRecord, ...]:
        """The records of the current lineage (the chain up to the first foreign one)."""
        out = []
        for record in self.records:
            if record.manifest.lineage != self.lineage:
                break
            out.append(record)
        return tuple(out)

    def versions(self) -> list[VersionInfo]:
        """Every restorable version of the current lineage, oldest first."""
        records = self.lineage_records()
        times: dict[int, float] = {}
        for record in reversed(records):
            m = record.manifest
            for d in m.deltas:
                times.setdefault(d.version, d.committed_at)
            times.setdefault(m.version, m.committed_at)
        out = []
        for v in sorted(self._covered(records)):
            plan = self.plan(v)
            exact = v in times
            if exact:
                at = times[v]
            else:
                assert plan.snapshot is not None  # only a snapshot version can lack a time
                at = plan.snapshot.created_at
            out.append(
                VersionInfo(
                    version=v,
                    committed_at=at,
                    committed_at_exact=exact,
                    lineage=self.lineage,
                    manifest_key=plan.record.key,
                    snapshot_key=plan.snapshot.key if plan.snapshot is not None else None,
                    snapshot_version=plan.record.manifest.base_version,
                    delta_keys=tuple(plan.record.delta_where(d) for d in plan.deltas),
                )
            )
        return out

    @staticmethod
    def _covered(records: tuple[ManifestRecord, ...]) -> set[int]:
        out: set[int] = set()
        for record in records:
            m = record.manifest
            low = m.base_version if m.snapshot is not None else max(1, m.base_version)
            out.update(range(low, m.version + 1))
        return out

    def plan(self, version: int) -> Plan:
        """The cheapest way to build ``version``: fewest deltas, the newest manifest on a tie."""
        best: tuple[int, ManifestRecord] | None = None
        for record in self.lineage_records():
            m = record.manifest
            if not m.base_version <= version <= m.version or (version == 0 and m.snapshot is None):
                continue
            cost = version - m.base_version
            if best is None or cost < best[0]:
                best = (cost, record)
        if best is None:
            raise VersionNotAvailableError(
                f"version {version} is not in the retained history of {self.remote} "
                f"({self.describe_range()})"
            )
        record = best[1]
        deltas = tuple(d for d in record.manifest.deltas if d.version <= version)
        return Plan(version, record, record.manifest.snapshot, deltas)

    def latest_plan(self) -> Plan:
        """The plan of the current version, from the current manifest itself."""
        record = self.current
        m = record.manifest
        plan = Plan(m.version, record, m.snapshot, m.deltas)
        if plan.checksum != m.checksum or plan.page_count != m.page_count:
            raise CorruptionError(
                f"manifest of {self.remote}: its deltas end at pages {plan.checksum} "
                f"({plan.page_count} pages), it says {m.checksum} ({m.page_count} pages)",
                remote=self.remote,
                key=record.key,
            )
        return plan

    def version_at(self, when: float) -> VersionInfo:
        """The newest version committed at or before POSIX time ``when``."""
        found = [v for v in self.versions() if v.committed_at <= when]
        if not found:
            raise VersionNotAvailableError(
                f"no version of {self.remote} committed at or before that time is retained "
                f"({self.describe_range()})"
            )
        return max(found, key=lambda v: v.version)

    def describe_range(self) -> str:
        versions = self.versions()
        if not versions:
            return "no version is retained"
        text = f"versions {versions[0].version} to {versions[-1].version} are retained"
        if self.end_error is not None:
            text += f"; the history beyond {self.end_key!r} is unreadable (run lambdalite verify)"
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
        delta = fmt.decode_delta(data, ref, where=where)
    except CorruptionError as exc:
        _locate(exc, remote)
        raise
    if delta.page_size != record.manifest.page_size:
        raise CorruptionError(
            f"delta {where!r} (version {ref.version}) has pages of {delta.page_size} bytes, "
            f"its manifest says {record.manifest.page_size}",
            remote=remote,
            key=where,
        )
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
            fmt.read_snapshot(packed, dest, snap, where=snap.key)
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
    record = plan.record
    if plan.snapshot is not None:
        checksum = load_snapshot(
            storage, plan.snapshot, dest, plan.page_size, progress=progress, remote=remote
        )
    else:
        open(dest, "wb").close()
        checksum = 0
    for ref in plan.deltas:
        data, delta = fetch_delta(storage, record, ref, remote=remote)
        if ref.key is not None:
            tick(len(data))
        try:
            checksum = apply_delta(dest, ref, delta, checksum, where=record.delta_where(ref))
        except CorruptionError as exc:
            _locate(exc, remote)
            raise
    with open(dest, "rb+") as f:
        os.fsync(f.fileno())


def _locate(exc: CorruptionError, remote: str | None) -> None:
    """Fill in ``exc.remote`` (format-level errors know only the key)."""
    if remote is not None and exc.remote is None:
        exc.remote = remote
