"""The remote's object formats: manifest, deltas and snapshots.

Layout under a remote prefix::

    manifest                      JSON; the ONLY object ever overwritten, always conditionally
    snapshots/<version>-<nonce>   immutable full image: MAGIC_SNAPSHOT + zstd(pages)
    deltas/<version>-<nonce>      immutable page set: MAGIC_DELTA + zstd(page table, pages)
    manifests/<version>-<nonce>   immutable archive of a manifest replaced by a compaction
                                  or a rollover (see BaseRef)

A manifest names the current version, the snapshot it starts from and the
deltas after it (small ones inline, base64), with checksums of every object and
of the database at every version. Every manifest's bytes are unique (a random
nonce), so an ETag can never come back (no ABA on ``If-Match``). A manifest also
carries a digest of its own body, so a truncated or edited manifest is caught.

Everything read from the remote is verified here before anyone uses it; any
mismatch is a :class:`~lambdalite.errors.CorruptionError` naming the object.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import zstandard

from lambdalite.errors import CorruptionError
from lambdalite.replica.pages import checksum_hex

__all__ = [
    "EMPTY_CHECKSUM",
    "FORMAT",
    "MANIFEST_KEY",
    "MAX_INLINE_DELTA",
    "MAX_PAGE_COUNT",
    "MAX_PAGE_SIZE",
    "MIN_PAGE_SIZE",
    "BaseRef",
    "Delta",
    "DeltaRef",
    "Manifest",
    "SnapshotRef",
    "Waiter",
    "WriteLease",
    "check_delta_growth",
    "decode_delta",
    "decode_manifest",
    "empty_manifest",
    "encode_delta",
    "encode_manifest",
    "new_nonce",
    "read_snapshot",
    "with_delta",
    "write_snapshot",
]

FORMAT = "lambdalite-manifest"
FORMAT_VERSION = 2
READABLE_VERSIONS = frozenset({1, 2})  # 2 added DeltaRef.nonce; 1 is read as having none
MANIFEST_KEY = "manifest"
MAGIC_DELTA = b"LLDELTA1"
MAGIC_SNAPSHOT = b"LLSNAP01"
_DELTA_HEADER = struct.Struct(">III")  # page_size, page_count, number of pages
_ZSTD_LEVEL = 3

# Bounds of what a manifest may claim (SQLite's own limits, https://sqlite.org/limits.html).
# With both, page_count * page_size stays within the largest database SQLite allows.
MIN_PAGE_SIZE = 512
MAX_PAGE_SIZE = 65536
MAX_PAGE_COUNT = 4294967294  # SQLite's largest page number
MAX_INLINE_DELTA = 1 << 20  # bytes; the engine inlines far less (12 KiB per manifest)
EMPTY_CHECKSUM = checksum_hex(0)  # the pages of version 0: none
_MAX_INT = 2**63 - 1  # versions (they fit a key's 20 digits), sizes, counters
_LOCK_BYTE_OFFSET = 0x40000000  # SQLite never uses the page holding this byte (1 GiB)
_CHECKSUM_RE = re.compile(r"[0-9a-f]{32}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_NONCE_RE = re.compile(r"[0-9a-f]{1,64}")
_OBJECT_KEY_RE = re.compile(r"(snapshots|deltas|manifests)/([0-9]{20})-([0-9a-f]{1,64})")
_UNREADABLE_ARCHIVE_RE = re.compile(r"manifests/unreadable-[0-9a-f]{1,64}")


def new_nonce() -> str:
    return secrets.token_hex(8)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class SnapshotRef:
    version: int
    key: str
    size: int
    sha256: str
    page_count: int
    checksum: str
    created_at: float


@dataclass(frozen=True, slots=True)
class BaseRef:
    """Where a manifest's deltas start when that is not its snapshot.

    A *rollover* archives a manifest whose delta list grew long and starts a
    new one at the same version: the new manifest's deltas continue from
    ``version`` (the archived manifest, ``archive``, holds the ones before).
    ``segments`` and ``delta_bytes`` count what lies between the snapshot and
    ``version``, so writers know when a new snapshot is worth its upload.
    """

    version: int
    checksum: str
    page_count: int
    archive: str
    segments: int
    delta_bytes: int


@dataclass(frozen=True, slots=True)
class DeltaRef:
    version: int
    committed_at: float
    base_checksum: str
    checksum: str
    page_count: int
    pages: int
    size: int
    sha256: str
    key: str | None = None
    inline: str | None = None  # base64 of the encoded delta object
    nonce: str | None = None  # the nonce of the manifest that published this version (format 2)

    def inline_bytes(self) -> bytes:
        assert self.inline is not None
        return base64.b64decode(self.inline)


@dataclass(frozen=True, slots=True)
class Waiter:
    """A write transaction waiting for the write lease (see :class:`WriteLease`)."""

    ticket: str  # random, one per waiting transaction
    owner: str  # the writer (host:pid), for people reading the manifest
    since: float  # when it joined the queue or last said it still waits (POSIX seconds)


@dataclass(frozen=True, slots=True)
class WriteLease:
    """Who may publish the next version: the manifest is its own lock (DESIGN §8).

    A writer *claims* the lease by writing the manifest (same version) with
    itself as holder, conditioned on the ETag it read; it *publishes* its commit
    with the next holder in the lease (the head of ``queue``), so handing over
    costs no request; a waiter joins ``queue`` with one conditional write and
    polls. Fencing stays in the storage: a holder that froze past
    ``expires_at`` and was replaced finds the ETag moved and cannot publish.
    Old readers ignore the field (safety never depends on it, only liveness).
    """

    ticket: str
    owner: str
    expires_at: float
    queue: tuple[Waiter, ...] = ()


@dataclass(frozen=True, slots=True)
class Manifest:
    lineage: str
    version: int
    nonce: str
    committed_at: float
    writer: str
    page_size: int
    page_count: int
    checksum: str
    snapshot: SnapshotRef | None
    deltas: tuple[DeltaRef, ...] = ()
    previous: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    base: BaseRef | None = None  # set after a rollover: the deltas start at base.version
    lease: WriteLease | None = None  # who may publish the next version (None: anyone)

    @property
    def base_version(self) -> int:
        """The version this manifest's deltas continue from."""
        if self.base is not None:
            return self.base.version
        return self.snapshot.version if self.snapshot else 0

    @property
    def base_pages(self) -> tuple[str, int]:
        """The checksum and page count of version ``base_version``."""
        if self.base is not None:
            return self.base.checksum, self.base.page_count
        if self.snapshot is not None:
            return self.snapshot.checksum, self.snapshot.page_count
        return EMPTY_CHECKSUM, 0

    def delta_bytes(self) -> int:
        return sum(d.size for d in self.deltas)

    def bytes_since_snapshot(self) -> int:
        """Delta bytes between the snapshot and this version, across rolled-over segments."""
        return (self.base.delta_bytes if self.base else 0) + self.delta_bytes()

    def segments_since_snapshot(self) -> int:
        """How many archived segments a cold start walks to reach the snapshot."""
        return self.base.segments if self.base else 0

    def deltas_after(self, version: int) -> tuple[DeltaRef, ...] | None:
        """The deltas that take version ``version`` to this manifest's, or None if not here."""
        if version == self.version:
            return ()
        if version < self.base_version or version > self.version:
            return None
        chain = tuple(d for d in self.deltas if d.version > version)
        if not chain or chain[0].version != version + 1:
            return None
        return chain

    def next(self, **changes: Any) -> Manifest:
        changes.setdefault("nonce", new_nonce())
        return replace(self, **changes)


def with_delta(
    base: Manifest | None,
    ref: DeltaRef,
    *,
    writer: str,
    page_size: int,
    lease: WriteLease | None = None,
) -> Manifest:
    """The manifest of version ``ref.version``: ``base`` plus the delta ``ref`` (published with
    the nonce ``ref.nonce``; the first version's lineage is that nonce), handing the write
    lease to ``lease``. Deterministic: the same arguments give the same bytes, so a write
    whose answer was lost can be resent."""
    assert ref.nonce is not None
    return Manifest(
        lineage=base.lineage if base else ref.nonce,
        version=ref.version,
        nonce=ref.nonce,
        committed_at=ref.committed_at,
        writer=writer,
        page_size=page_size,
        page_count=ref.page_count,
        checksum=ref.checksum,
        snapshot=base.snapshot if base else None,
        deltas=(base.deltas if base else ()) + (ref,),
        previous=base.previous if base else None,
        base=base.base if base else None,
        lease=lease,
    )


def empty_manifest(*, writer: str, now: float, lease: WriteLease | None) -> Manifest:
    """Version 0 of a new database: no pages yet (written to hold the first write lease)."""
    nonce = new_nonce()
    return Manifest(
        lineage=nonce,
        version=0,
        nonce=nonce,
        committed_at=now,
        writer=writer,
        page_size=4096,
        page_count=0,
        checksum=EMPTY_CHECKSUM,
        snapshot=None,
        lease=lease,
    )


def encode_manifest(m: Manifest) -> bytes:
    body: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lineage": m.lineage,
        "version": m.version,
        "nonce": m.nonce,
        "committed_at": m.committed_at,
        "writer": m.writer,
        "page_size": m.page_size,
        "page_count": m.page_count,
        "checksum": m.checksum,
        "snapshot": _snapshot_dict(m.snapshot) if m.snapshot else None,
        "deltas": [_delta_dict(d) for d in m.deltas],
        "previous": m.previous,
        "extra": dict(m.extra),
    }
    if m.base is not None:  # absent when unused, so older readers keep reading these manifests
        body["base"] = {
            "version": m.base.version,
            "checksum": m.base.checksum,
            "page_count": m.base.page_count,
            "archive": m.base.archive,
            "segments": m.base.segments,
            "delta_bytes": m.base.delta_bytes,
        }
    if m.lease is not None:  # absent when unused; readers that do not know it ignore it
        body["lease"] = {
            "ticket": m.lease.ticket,
            "owner": m.lease.owner,
            "expires_at": m.lease.expires_at,
            "queue": [
                {"ticket": w.ticket, "owner": w.owner, "since": w.since} for w in m.lease.queue
            ],
        }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["digest"] = _sha256(canonical)
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _snapshot_dict(s: SnapshotRef) -> dict[str, Any]:
    return {
        "version": s.version,
        "key": s.key,
        "size": s.size,
        "sha256": s.sha256,
        "page_count": s.page_count,
        "checksum": s.checksum,
        "created_at": s.created_at,
    }


def _delta_dict(d: DeltaRef) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": d.version,
        "committed_at": d.committed_at,
        "base_checksum": d.base_checksum,
        "checksum": d.checksum,
        "page_count": d.page_count,
        "pages": d.pages,
        "size": d.size,
        "sha256": d.sha256,
        "key": d.key,
        "inline": d.inline,
    }
    if d.nonce is not None:
        out["nonce"] = d.nonce
    return out


def decode_manifest(data: bytes, *, where: str = MANIFEST_KEY) -> Manifest:
    """Parse and verify a manifest; anything else is a CorruptionError naming ``where``.

    The digest only proves the body is the one its writer meant; the writer may
    be buggy or hostile. So every field is checked against its type and bounds,
    and against the others (see :func:`_check_manifest`), before anyone
    allocates for it or builds on it. The message names the offending field.
    """

    def bad(why: str) -> CorruptionError:
        return CorruptionError(
            f"object {where!r} is not a valid lambdalite manifest: {why}", key=where
        )

    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad("not JSON (truncated, or a foreign object)") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise bad("missing the lambdalite format marker (a foreign object?)")
    if body.get("format_version") not in READABLE_VERSIONS:
        raise bad(
            f"format_version {_show(body.get('format_version'))}; this lambdalite reads "
            f"{', '.join(map(str, sorted(READABLE_VERSIONS)))} (upgrade lambdalite?)"
        )
    digest = body.pop("digest", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if digest != _sha256(canonical):
        raise bad("its digest does not match its content (edited or damaged)")
    try:
        manifest = _parse_manifest(body)
        _check_manifest(manifest)
    except _FieldError as exc:
        raise bad(f"field {exc.field!r} {exc.why}") from None
    return manifest


class _FieldError(ValueError):
    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field} {why}")
        self.field = field
        self.why = why


def _show(v: Any) -> str:
    """``repr(v)``, cut short: a hostile value may be megabytes long."""
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


class _Fields:
    """Typed reads of one JSON object of a manifest; a bad field is a _FieldError naming it."""

    def __init__(self, obj: Any, path: str, known: frozenset[str] | None = None) -> None:
        if not isinstance(obj, dict):
            raise _FieldError(path, f"is {_show(obj)}, not an object")
        if known is not None and not set(obj) <= known:
            extra = sorted(set(obj) - known)
            raise _FieldError(f"{path}.{extra[0]}", "is not a field this lambdalite knows")
        self.obj: dict[str, Any] = obj
        self.path = path

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, *, optional: bool = False) -> Any:
        if key not in self.obj:
            if optional:
                return None
            raise _FieldError(self.name(key), "is missing")
        return self.obj[key]

    def integer(self, key: str, lo: int = 0, hi: int = _MAX_INT) -> int:
        v = self.get(key)
        if not isinstance(v, int) or isinstance(v, bool):
            raise _FieldError(self.name(key), f"is {_show(v)}, not an integer")
        if not lo <= v <= hi:
            raise _FieldError(self.name(key), f"is {v}, outside {lo}..{hi}")
        return v

    def time(self, key: str) -> float:
        v = self.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _FieldError(self.name(key), f"is {_show(v)}, not a number")
        if not math.isfinite(v) or v < 0:
            raise _FieldError(self.name(key), f"is {v}, not a time (finite, not negative)")
        return float(v)

    def text(
        self, key: str, pattern: re.Pattern[str] | None = None, what: str = "", max_len: int = 1024
    ) -> str:
        return self._text(key, self.get(key), pattern, what, max_len)

    def opt_text(
        self, key: str, pattern: re.Pattern[str] | None = None, what: str = "", max_len: int = 1024
    ) -> str | None:
        v = self.get(key, optional=True)
        return None if v is None else self._text(key, v, pattern, what, max_len)

    def _text(
        self, key: str, v: Any, pattern: re.Pattern[str] | None, what: str, max_len: int
    ) -> str:
        if not isinstance(v, str):
            raise _FieldError(self.name(key), f"is {_show(v)}, not a string")
        if len(v) > max_len:
            raise _FieldError(self.name(key), f"is {len(v)} characters long, over {max_len}")
        if pattern is not None and not pattern.fullmatch(v):
            raise _FieldError(self.name(key), f"is {_show(v)}, not {what}")
        return v


_HEX32 = "32 lowercase hex digits"
_HEX64 = "64 lowercase hex digits"
_HEX = "lowercase hex digits"


def _parse_manifest(body: dict[str, Any]) -> Manifest:
    f = _Fields(body, "")
    snap, deltas = f.get("snapshot"), f.get("deltas")
    base, extra = f.get("base", optional=True), f.get("extra", optional=True)
    lease = f.get("lease", optional=True)
    if not isinstance(deltas, list):
        raise _FieldError("deltas", f"is {_show(deltas)}, not a list")
    if extra is not None and not isinstance(extra, dict):
        raise _FieldError("extra", f"is {_show(extra)}, not an object")
    page_size = f.integer("page_size", MIN_PAGE_SIZE, MAX_PAGE_SIZE)
    if page_size & (page_size - 1):
        raise _FieldError("page_size", f"is {page_size}, not a power of two")
    return Manifest(
        lineage=f.text("lineage", _NONCE_RE, _HEX),
        version=f.integer("version"),
        nonce=f.text("nonce", _NONCE_RE, _HEX),
        committed_at=f.time("committed_at"),
        writer=f.text("writer"),
        page_size=page_size,
        page_count=f.integer("page_count", 0, MAX_PAGE_COUNT),
        checksum=f.text("checksum", _CHECKSUM_RE, _HEX32),
        snapshot=_parse_snapshot(snap) if snap is not None else None,
        deltas=tuple(_parse_delta(d, f"deltas[{i}]") for i, d in enumerate(deltas)),
        previous=f.opt_text("previous"),
        extra=extra or {},
        base=_parse_base(base) if base is not None else None,
        lease=_parse_lease(lease) if lease is not None else None,
    )


_LEASE_FIELDS = frozenset(("ticket", "owner", "expires_at", "queue"))
_WAITER_FIELDS = frozenset(("ticket", "owner", "since"))
MAX_WAITERS = 1024


def _parse_lease(obj: Any) -> WriteLease:
    f = _Fields(obj, "lease", _LEASE_FIELDS)
    queue = f.get("queue")
    if not isinstance(queue, list):
        raise _FieldError("lease.queue", f"is {_show(queue)}, not a list")
    if len(queue) > MAX_WAITERS:
        raise _FieldError("lease.queue", f"has {len(queue)} waiters, over {MAX_WAITERS}")
    waiters = []
    for i, item in enumerate(queue):
        w = _Fields(item, f"lease.queue[{i}]", _WAITER_FIELDS)
        waiters.append(
            Waiter(
                ticket=w.text("ticket", _NONCE_RE, _HEX),
                owner=w.text("owner", max_len=256),
                since=w.time("since"),
            )
        )
    return WriteLease(
        ticket=f.text("ticket", _NONCE_RE, _HEX),
        owner=f.text("owner", max_len=256),
        expires_at=f.time("expires_at"),
        queue=tuple(waiters),
    )


_SNAPSHOT_FIELDS = frozenset(
    ("version", "key", "size", "sha256", "page_count", "checksum", "created_at")
)
_BASE_FIELDS = frozenset(
    ("version", "checksum", "page_count", "archive", "segments", "delta_bytes")
)
_DELTA_FIELDS = frozenset(
    (
        "version",
        "committed_at",
        "base_checksum",
        "checksum",
        "page_count",
        "pages",
        "size",
        "sha256",
        "key",
        "inline",
        "nonce",
    )
)
_INLINE_CHARS = 4 * ((MAX_INLINE_DELTA + 2) // 3)  # base64 of the largest inline delta


def _parse_snapshot(obj: Any) -> SnapshotRef:
    f = _Fields(obj, "snapshot", _SNAPSHOT_FIELDS)
    return SnapshotRef(
        version=f.integer("version", 1),
        key=f.text("key"),
        size=f.integer("size"),
        sha256=f.text("sha256", _SHA256_RE, _HEX64),
        page_count=f.integer("page_count", 0, MAX_PAGE_COUNT),
        checksum=f.text("checksum", _CHECKSUM_RE, _HEX32),
        created_at=f.time("created_at"),
    )


def _parse_base(obj: Any) -> BaseRef:
    f = _Fields(obj, "base", _BASE_FIELDS)
    return BaseRef(
        version=f.integer("version", 1),
        checksum=f.text("checksum", _CHECKSUM_RE, _HEX32),
        page_count=f.integer("page_count", 0, MAX_PAGE_COUNT),
        archive=f.text("archive"),
        segments=f.integer("segments", 1),
        delta_bytes=f.integer("delta_bytes"),
    )


def _parse_delta(obj: Any, path: str) -> DeltaRef:
    f = _Fields(obj, path, _DELTA_FIELDS)
    ref = DeltaRef(
        version=f.integer("version", 1),
        committed_at=f.time("committed_at"),
        base_checksum=f.text("base_checksum", _CHECKSUM_RE, _HEX32),
        checksum=f.text("checksum", _CHECKSUM_RE, _HEX32),
        page_count=f.integer("page_count", 0, MAX_PAGE_COUNT),
        pages=f.integer("pages", 0, MAX_PAGE_COUNT),
        size=f.integer("size"),
        sha256=f.text("sha256", _SHA256_RE, _HEX64),
        key=f.opt_text("key"),
        inline=f.opt_text("inline", None, "", _INLINE_CHARS),
        nonce=f.opt_text("nonce", _NONCE_RE, _HEX),
    )
    if (ref.key is None) == (ref.inline is None):
        which = "both" if ref.key is not None else "neither"
        raise _FieldError(f"{path}.key", f"and {path}.inline: {which} set, exactly one must be")
    if ref.inline is not None:
        if ref.size > MAX_INLINE_DELTA:
            raise _FieldError(f"{path}.size", f"is {ref.size}, over {MAX_INLINE_DELTA} inline")
        try:
            length = len(base64.b64decode(ref.inline, validate=True))
        except ValueError:
            raise _FieldError(f"{path}.inline", "is not base64") from None
        if length != ref.size:
            raise _FieldError(f"{path}.inline", f"holds {length} bytes, its size says {ref.size}")
    return ref


def _key_version(field: str, key: str, prefix: str) -> int:
    """The version in object key ``<prefix>/<20 digits>-<hex nonce>``."""
    match = _OBJECT_KEY_RE.fullmatch(key)
    if match is None or match[1] != prefix:
        raise _FieldError(field, f"is {_show(key)}, not {prefix}/<20-digit version>-<hex nonce>")
    return int(match[2])


def _compressed_bound(raw: int, magic: bytes) -> int:
    """The largest object zstd may make of ``raw`` bytes (ZSTD_compressBound, and then some)."""
    return len(magic) + raw + (raw >> 7) + 1024


def _check_manifest(m: Manifest) -> None:
    """Every field against the others: a manifest the engine can build on without surprises.

    * the snapshot and base are of versions in 1..version, named by keys of their
      versions, and ``base`` (a rollover) continues its archive, ``previous``;
    * the deltas continue ``base_version`` one version at a time and link up: each
      starts from the pages (checksum) the one before ends at, the first from the
      base's, the snapshot's or the empty database's, and the manifest's own page
      count and checksum are the last delta's (or the start's when there are none);
    * object keys name the versions they hold, sizes are what a compressor can make of
      the pages they hold, and ``previous`` names an archive of an older manifest, never
      this one (only an import, which starts a new lineage at version 1 with a new
      snapshot, may replace a newer one).
    """
    snap = m.snapshot
    if snap is not None:
        if snap.version > m.version:
            raise _FieldError(
                "snapshot.version", f"is {snap.version}, newer than the manifest's {m.version}"
            )
        if _key_version("snapshot.key", snap.key, "snapshots") != snap.version:
            raise _FieldError("snapshot.key", f"is {snap.key!r}, not of version {snap.version}")
        bound = _compressed_bound(snap.page_count * m.page_size, MAGIC_SNAPSHOT)
        if not len(MAGIC_SNAPSHOT) < snap.size <= bound:
            raise _FieldError(
                "snapshot.size", f"is {snap.size}, not possible for {snap.page_count} pages"
            )
    base = m.base
    if base is not None:
        if base.version > m.version:
            raise _FieldError(
                "base.version", f"is {base.version}, newer than the manifest's {m.version}"
            )
        if snap is not None and snap.version > base.version:
            raise _FieldError(
                "base.version", f"is {base.version}, older than its snapshot's {snap.version}"
            )
        if (
            snap is not None
            and snap.version == base.version
            and ((snap.checksum, snap.page_count) != (base.checksum, base.page_count))
        ):
            raise _FieldError("base.checksum", "differs from the snapshot's of the same version")
        archived = _key_version("base.archive", base.archive, "manifests")
        if archived != base.version:
            raise _FieldError(
                "base.archive", f"is {base.archive!r}, not an archive of version {base.version}"
            )
        if m.previous != base.archive:
            raise _FieldError("previous", f"is {_show(m.previous)}, not base.archive")
        if base.segments > base.version:
            raise _FieldError(
                "base.segments", f"is {base.segments}, more than its {base.version} versions"
            )
    _check_previous(m)
    if m.version < m.base_version:
        raise _FieldError(
            "version", f"is {m.version}, older than the version {m.base_version} it continues"
        )
    versions = [d.version for d in m.deltas]
    if versions != list(range(m.base_version + 1, m.version + 1)):
        raise _FieldError(
            "deltas", f"are of versions {versions}, not continuing version {m.base_version}"
        )
    (checksum, count), source = m.base_pages, _start_name(m)
    for i, d in enumerate(m.deltas):
        if d.base_checksum != checksum:
            raise _FieldError(
                f"deltas[{i}].base_checksum",
                f"is {d.base_checksum}, not the checksum {checksum} of {source}",
            )
        if d.pages > d.page_count:
            raise _FieldError(f"deltas[{i}].pages", f"is {d.pages}, over its {d.page_count} pages")
        if d.key is not None and _key_version(f"deltas[{i}].key", d.key, "deltas") != d.version:
            raise _FieldError(f"deltas[{i}].key", f"is {d.key!r}, not of version {d.version}")
        raw = _DELTA_HEADER.size + d.pages * (4 + m.page_size)
        if not len(MAGIC_DELTA) < d.size <= _compressed_bound(raw, MAGIC_DELTA):
            raise _FieldError(f"deltas[{i}].size", f"is {d.size}, not possible for {d.pages} pages")
        checksum, count, source = d.checksum, d.page_count, f"version {d.version}"
    if (m.checksum, m.page_count) != (checksum, count):
        if m.checksum != checksum:
            raise _FieldError("checksum", f"is {m.checksum}, but {source} has {checksum}")
        raise _FieldError("page_count", f"is {m.page_count}, but {source} has {count}")


def _start_name(m: Manifest) -> str:
    if m.base is not None:
        return f"the base (version {m.base.version})"
    if m.snapshot is not None:
        return f"the snapshot (version {m.snapshot.version})"
    return "the empty database (version 0)"


def _check_previous(m: Manifest) -> None:
    if m.previous is None:
        return
    if m.snapshot is None and m.base is None:
        raise _FieldError(
            "previous", f"is {_show(m.previous)}, but the history starts at version 0"
        )
    if m.previous == f"manifests/{m.version:020d}-{m.nonce}":
        raise _FieldError("previous", f"is {m.previous!r}: the manifest's own archive")
    if _UNREADABLE_ARCHIVE_RE.fullmatch(m.previous):
        return  # what `import --force` keeps of a manifest it could not read
    archived = _key_version("previous", m.previous, "manifests")
    imported = m.base is None and m.snapshot is not None and m.snapshot.version == 1
    if archived > m.base_version and not imported:
        raise _FieldError(
            "previous",
            f"is {m.previous!r}, an archive of version {archived}, newer than the version "
            f"{m.base_version} this manifest continues",
        )


# ---------------------------------------------------------------------------- deltas


@dataclass(frozen=True, slots=True)
class Delta:
    page_size: int
    page_count: int
    pages: Mapping[int, bytes]


def encode_delta(page_size: int, page_count: int, pages: Mapping[int, bytes]) -> bytes:
    numbers = sorted(pages)
    raw = bytearray(_DELTA_HEADER.pack(page_size, page_count, len(numbers)))
    raw += struct.pack(f">{len(numbers)}I", *numbers)
    for n in numbers:
        raw += pages[n]
    return MAGIC_DELTA + zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(bytes(raw))


def decode_delta(data: bytes, ref: DeltaRef, *, where: str, page_size: int | None = None) -> Delta:
    """Verify a delta object against its manifest entry and decode it.

    ``page_size``: the page size of the manifest naming the delta; the delta's
    must be the same. Decompression stops as soon as the output outgrows what
    the entry's number of pages allows, so a hostile object cannot make this
    allocate for more than it says it holds; its page numbers must be in
    ``1..page_count``, ascending, each once.
    """

    def bad(why: str) -> CorruptionError:
        return CorruptionError(
            f"delta {where!r} (version {ref.version}) is corrupt: {why}", key=where
        )

    if len(data) != ref.size or _sha256(data) != ref.sha256:
        raise bad(f"sha256/size mismatch ({len(data)} bytes, expected {ref.size})")
    if not data.startswith(MAGIC_DELTA):
        raise bad("not a lambdalite delta (foreign object?)")
    largest = page_size if page_size is not None else MAX_PAGE_SIZE
    most = _DELTA_HEADER.size + ref.pages * (4 + largest)  # what its entry allows
    try:
        raw = _inflate(data[len(MAGIC_DELTA) :], most)
        size, page_count, n = _DELTA_HEADER.unpack_from(raw, 0)
    except (zstandard.ZstdError, struct.error, ValueError) as exc:
        raise bad(str(exc)) from exc
    if page_count != ref.page_count:
        raise bad(f"page count {page_count} != manifest's {ref.page_count}")
    if n != ref.pages:
        raise bad(f"it holds {n} pages, its manifest entry says {ref.pages}")
    if not _valid_page_size(size) or (page_size is not None and size != page_size):
        raise bad(f"its pages are of {size} bytes, its manifest's of {page_size or 'another size'}")
    off = _DELTA_HEADER.size + 4 * n
    if len(raw) != off + n * size:
        raise bad("length does not match the page table")
    numbers = struct.unpack_from(f">{n}I", raw, _DELTA_HEADER.size)
    if numbers and not (numbers[0] >= 1 and numbers[-1] <= page_count):
        raise bad(f"it holds pages outside 1..{page_count}")
    if any(a >= b for a, b in itertools.pairwise(numbers)):
        raise bad("its page numbers are not ascending and unique")
    pages = {pgno: raw[off + i * size : off + (i + 1) * size] for i, pgno in enumerate(numbers)}
    return Delta(size, page_count, pages)


def _inflate(payload: bytes, limit: int) -> bytes:
    """Decompress one zstd frame of at most ``limit`` bytes.

    The output grows only as the frame actually decompresses (never to a size
    its header merely declares) and stops once it passes ``limit``.
    """
    declared = zstandard.frame_content_size(payload)
    if declared > limit:
        raise ValueError(f"it declares {declared} bytes, more than the {limit} its entry allows")
    out = bytearray()
    with zstandard.ZstdDecompressor().stream_reader(payload) as r:
        while chunk := r.read(1 << 20):
            out += chunk
            if len(out) > limit:
                raise ValueError(f"it decompresses past the {limit} bytes its entry allows")
    return bytes(out)


def _valid_page_size(size: int) -> bool:
    return MIN_PAGE_SIZE <= size <= MAX_PAGE_SIZE and not size & (size - 1)


def check_delta_growth(ref: DeltaRef, delta: Delta, old_count: int, *, where: str) -> None:
    """Refuse a delta that adds pages to the database without carrying them.

    Call it before applying ``delta`` to a copy of ``old_count`` pages. A SQLite
    commit writes every page it adds (all but the lock-byte page at 1 GiB,
    which SQLite never uses), so a delta taking the database past
    ``old_count`` must carry each added page: past ``max(old_count, its
    highest page)`` nothing may be added at all. Whoever applies a delta that
    passes iterates and allocates only for pages the object holds (and that
    one lock-byte page), never for a page count a manifest merely claims.
    """
    new_count = delta.page_count
    if new_count <= old_count:
        return
    highest = max(delta.pages, default=0)
    carried = sum(1 for p in delta.pages if old_count < p <= new_count)
    lock_page = _LOCK_BYTE_OFFSET // delta.page_size + 1
    skipped = int(old_count < lock_page <= new_count and lock_page not in delta.pages)
    if new_count > max(old_count, highest) or carried + skipped < new_count - old_count:
        raise CorruptionError(
            f"delta {where!r} (version {ref.version}) grows the database from {old_count} to "
            f"{new_count} pages but carries only {carried} of the pages it adds",
            key=where,
        )


# ---------------------------------------------------------------------------- snapshots


def write_snapshot(
    src: str, dst: str, page_size: int, *, progress: Callable[[int], None] | None = None
) -> tuple[int, str]:
    """Compress database file ``src`` into snapshot object file ``dst``: (size, sha256)."""
    h = hashlib.sha256()
    size = 0

    class _Tee:
        def write(self, b: bytes) -> int:
            nonlocal size
            h.update(b)
            size += len(b)
            out.write(b)
            return len(b)

    with open(src, "rb") as inp, open(dst, "wb") as out:
        _Tee().write(MAGIC_SNAPSHOT)
        cctx = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        with cctx.stream_writer(_Tee(), closefd=False) as w:  # type: ignore[arg-type]
            while True:
                block = inp.read(page_size * 256)
                if not block:
                    break
                w.write(block)
                if progress:
                    progress(len(block))
        out.flush()
        os.fsync(out.fileno())
    return size, h.hexdigest()


def read_snapshot(
    src: str, dst: str, ref: SnapshotRef, *, where: str, page_size: int | None = None
) -> None:
    """Verify snapshot object file ``src`` against ``ref`` and decompress it to ``dst``.

    ``page_size``: the manifest's; the image must then be exactly ``ref.page_count``
    pages of it (without it, at most that many of the largest size). Decompression
    stops as soon as the image outgrows that, so a hostile object cannot fill the disk.
    """

    def bad(why: str) -> CorruptionError:
        return CorruptionError(
            f"snapshot {where!r} (version {ref.version}) is corrupt: {why}", key=where
        )

    h = hashlib.sha256()
    with open(src, "rb") as f:
        size = 0
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    if size != ref.size or h.hexdigest() != ref.sha256:
        raise bad(f"sha256/size mismatch ({size} bytes, expected {ref.size})")
    limit = ref.page_count * (page_size if page_size is not None else MAX_PAGE_SIZE)
    with open(src, "rb") as f, open(dst, "wb") as out:
        if f.read(len(MAGIC_SNAPSHOT)) != MAGIC_SNAPSHOT:
            raise bad("not a lambdalite snapshot (foreign object?)")
        try:
            written = _copy_decompressed(f, out, limit)
        except zstandard.ZstdError as exc:
            raise bad(str(exc)) from exc
        if written > limit:
            raise bad(f"it decompresses to more than {ref.page_count} pages ({limit} bytes)")
        if page_size is not None and written != limit:
            raise bad(f"it decompresses to {written} bytes, not {ref.page_count} pages")
        out.flush()
        os.fsync(out.fileno())


def _copy_decompressed(f: BinaryIO, out: BinaryIO, limit: int) -> int:
    """Decompress ``f`` into ``out``; the bytes written (stops once past ``limit``)."""
    dctx = zstandard.ZstdDecompressor()
    written = 0
    with dctx.stream_reader(f) as r:
        for block in iter(lambda: r.read(1 << 20), b""):
            out.write(block)
            written += len(block)
            if written > limit:
                break
    return written
