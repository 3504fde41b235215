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
import json
import os
import secrets
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO

import zstandard

from lambdalite.errors import CorruptionError

__all__ = [
    "FORMAT",
    "MANIFEST_KEY",
    "BaseRef",
    "DeltaRef",
    "Manifest",
    "SnapshotRef",
    "decode_delta",
    "decode_manifest",
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

    @property
    def base_version(self) -> int:
        """The version this manifest's deltas continue from."""
        if self.base is not None:
            return self.base.version
        return self.snapshot.version if self.snapshot else 0

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


def with_delta(base: Manifest | None, ref: DeltaRef, *, writer: str, page_size: int) -> Manifest:
    """The manifest of version ``ref.version``: ``base`` plus the delta ``ref`` (published with
    the nonce ``ref.nonce``; the first version's lineage is that nonce). Deterministic: the
    same arguments give the same bytes, so a write whose answer was lost can be resent."""
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
    """Parse and verify a manifest; anything else is a CorruptionError naming ``where``."""

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
            f"format_version {body.get('format_version')!r}; this lambdalite reads "
            f"{', '.join(map(str, sorted(READABLE_VERSIONS)))} (upgrade lambdalite?)"
        )
    digest = body.pop("digest", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    if digest != _sha256(canonical):
        raise bad("its digest does not match its content (edited or damaged)")
    try:
        snap = body["snapshot"]
        manifest = Manifest(
            lineage=str(body["lineage"]),
            version=_int(body["version"]),
            nonce=str(body["nonce"]),
            committed_at=float(body["committed_at"]),
            writer=str(body["writer"]),
            page_size=_int(body["page_size"]),
            page_count=_int(body["page_count"]),
            checksum=str(body["checksum"]),
            snapshot=SnapshotRef(**snap) if snap is not None else None,
            deltas=tuple(DeltaRef(**d) for d in body["deltas"]),
            previous=body.get("previous"),
            extra=body.get("extra") or {},
            base=BaseRef(**body["base"]) if body.get("base") is not None else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"malformed field ({exc})") from exc
    versions = [d.version for d in manifest.deltas]
    expected = list(range(manifest.base_version + 1, manifest.version + 1))
    if versions != expected:
        raise bad(f"delta versions {versions} do not continue version {manifest.base_version}")
    if manifest.base is not None and (
        manifest.previous != manifest.base.archive
        or (manifest.snapshot is not None and manifest.snapshot.version > manifest.base.version)
    ):
        raise bad("its base does not match its previous manifest and snapshot")
    return manifest


def _int(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return v


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


def decode_delta(data: bytes, ref: DeltaRef, *, where: str) -> Delta:
    """Verify a delta object against its manifest entry and decode it."""

    def bad(why: str) -> CorruptionError:
        return CorruptionError(
            f"delta {where!r} (version {ref.version}) is corrupt: {why}", key=where
        )

    if len(data) != ref.size or _sha256(data) != ref.sha256:
        raise bad(f"sha256/size mismatch ({len(data)} bytes, expected {ref.size})")
    if not data.startswith(MAGIC_DELTA):
        raise bad("not a lambdalite delta (foreign object?)")
    try:
        raw = zstandard.ZstdDecompressor().decompress(data[len(MAGIC_DELTA) :])
        page_size, page_count, n = _DELTA_HEADER.unpack_from(raw, 0)
        off = _DELTA_HEADER.size
        numbers = struct.unpack_from(f">{n}I", raw, off)
        off += 4 * n
        if len(raw) != off + n * page_size:
            raise ValueError("length does not match the page table")
        pages = {
            pgno: raw[off + i * page_size : off + (i + 1) * page_size]
            for i, pgno in enumerate(numbers)
        }
    except (zstandard.ZstdError, struct.error, ValueError) as exc:
        raise bad(str(exc)) from exc
    if page_count != ref.page_count:
        raise bad(f"page count {page_count} != manifest's {ref.page_count}")
    return Delta(page_size, page_count, pages)


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


def read_snapshot(src: str, dst: str, ref: SnapshotRef, *, where: str) -> None:
    """Verify snapshot object file ``src`` against ``ref`` and decompress it to ``dst``."""

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
    with open(src, "rb") as f, open(dst, "wb") as out:
        if f.read(len(MAGIC_SNAPSHOT)) != MAGIC_SNAPSHOT:
            raise bad("not a lambdalite snapshot (foreign object?)")
        try:
            _copy_decompressed(f, out)
        except zstandard.ZstdError as exc:
            raise bad(str(exc)) from exc
        out.flush()
        os.fsync(out.fileno())


def _copy_decompressed(f: BinaryIO, out: BinaryIO) -> None:
    dctx = zstandard.ZstdDecompressor()
    with dctx.stream_reader(f) as r:
        for block in iter(lambda: r.read(1 << 20), b""):
            out.write(block)
