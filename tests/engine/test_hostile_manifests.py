"""Hostile manifests: a valid digest, absurd fields (issue 8, item 16).

A digest only proves that a manifest is the one its writer meant; anyone who can write the
bucket (or a bug) can publish a well-formed one that claims 10**12 pages, pages of 3 bytes,
or a ``previous`` naming itself. Every such manifest must be a CorruptionError naming the
field, before anything is allocated, applied or published.

Each case edits the manifest of a real remote (a snapshot, a rolled-over base, a delta
object and an inline delta) and re-digests it the way :func:`encode_manifest` does. The
hostile manifests fail in ``decode_manifest``; what ``decode_manifest`` cannot see (a cycle
of archives, a delta object's own page table, a delta that grows the database without its
pages) is tested against ``deltas_since``, ``decode_delta`` and ``check_delta_growth``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import struct
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import zstandard

import lambdalite
from lambdalite.admin import pull
from lambdalite.config import Settings
from lambdalite.errors import CorruptionError
from lambdalite.replica import format as fmt
from lambdalite.replica.chain import deltas_since
from lambdalite.replica.engine import forget_replicas
from lambdalite.replica.pages import checksum_hex
from lambdalite.storage import open_storage
from lambdalite.storage.memory import MemoryStorage
from tests.engine.conftest import Instance

Body = dict[str, Any]


def _digested(body: Body) -> bytes:
    """``body`` as a manifest whose digest is valid (as :func:`fmt.encode_manifest` makes it)."""
    body = {k: v for k, v in body.items() if k != "digest"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["digest"] = hashlib.sha256(canonical).hexdigest()
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------- the remote


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A remote at version 6: snapshot 2, base 4 (a rollover), deltas 5 (an object) and 6
    (inline). Built once; each test works on a copy."""
    root = tmp_path_factory.mktemp("hostile-template")
    url = (root / "remote").as_uri()

    def commit(name: str, sql: str, **options: object) -> None:
        conn = lambdalite.connect(
            url, cache_dir=str(root / f"cache-{name}"), isolation_level=None, **options
        )
        conn.execute(sql)
        conn.close()

    forget_replicas()
    big = {"compact_after_bytes": 10**9}
    commit("w0", "CREATE TABLE t(v)", **big)
    commit("w1", "INSERT INTO t VALUES (1)", compact_after_bytes=1)  # snapshot of version 2
    commit("w2", "INSERT INTO t VALUES (2)", compact_after_deltas=2, **big)
    commit("w2", "INSERT INTO t VALUES (3)")  # two deltas: rolled over at version 4
    commit("w3", "INSERT INTO t VALUES (4)", inline_delta_max=0, **big)  # a delta object
    commit("w4", "INSERT INTO t VALUES (5)", **big)  # inline
    forget_replicas()
    body = json.loads((root / "remote" / "manifest").read_bytes())
    assert body["version"] == 6 and body["snapshot"]["version"] == 2
    assert body["base"]["version"] == 4
    assert [(d["version"], d["key"] is None) for d in body["deltas"]] == [(5, False), (6, True)]
    yield root / "remote"


@pytest.fixture
def remote_copy(template: Path, remote: str) -> str:
    """The template's objects at this test's ``remote`` (the one ``instance`` opens)."""
    shutil.copytree(template, Path(remote.removeprefix("file://")))
    return remote


def _good(remote: str) -> Body:
    blob = open_storage(remote).get(fmt.MANIFEST_KEY)
    assert blob is not None
    body: Body = json.loads(blob.data)
    return body


# ---------------------------------------------------------------------------- the cases


def _set(path: str, value: Any) -> Callable[[Body], None]:
    """An edit setting ``path`` (``"deltas.0.size"``) to ``value`` (a function of the old one)."""

    def edit(body: Body) -> None:
        *parents, last = path.split(".")
        node: Any = body
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        key: Any = int(last) if isinstance(node, list) else last
        node[key] = value(node[key]) if callable(value) else value

    return edit


def _only_snapshot(**changes: Any) -> Callable[[Body], None]:
    """The manifest a compaction leaves: version 2 = its snapshot, nothing after it."""

    def edit(body: Body) -> None:
        snap = body["snapshot"]
        body.pop("base")
        body.update(
            version=2,
            deltas=[],
            checksum=snap["checksum"],
            page_count=snap["page_count"],
            previous=f"manifests/{2:020d}-0123abcd",
        )
        body.update(changes)

    return edit


def _from_empty(body: Body) -> None:
    """No snapshot, no base: nothing precedes version 0 (and the deltas must start at 1)."""
    body.pop("base")
    body.update(snapshot=None)


def _version_zero_with_deltas(body: Body) -> None:
    _from_empty(body)
    body.update(version=0, previous=None)


def _own_archive(body: Body) -> None:
    _only_snapshot()(body)
    body["previous"] = f"manifests/{2:020d}-{body['nonce']}"


def _base_archive(key: str) -> Callable[[Body], None]:
    def edit(body: Body) -> None:
        body["base"]["archive"] = body["previous"] = key

    return edit


def _inline_in_both(body: Body) -> None:
    body["deltas"][0]["inline"] = body["deltas"][1]["inline"]


_HEX = "0123456789abcdef"
CASES: dict[str, tuple[Callable[[Body], None], str]] = {
    # numbers: bounds and types
    "page_count 10**12": (_set("page_count", 10**12), "'page_count'"),
    "page_count past SQLite's largest": (_set("page_count", 2**32 - 1), "'page_count'"),
    "page_count negative": (_set("page_count", -1), "'page_count'"),
    "page_size 0": (_set("page_size", 0), "'page_size'"),
    "page_size 3": (_set("page_size", 3), "'page_size'"),
    "page_size not a power of two": (_set("page_size", 3000), "'page_size'"),
    "page_size over 65536": (_set("page_size", 131072), "'page_size'"),
    "page_size a bool": (_set("page_size", True), "'page_size'"),
    "version negative": (_set("version", -6), "'version'"),
    "version a string": (_set("version", "6"), "'version'"),
    "version a float": (_set("version", 6.0), "'version'"),
    "committed_at NaN": (_set("committed_at", float("nan")), "'committed_at'"),
    "committed_at infinite": (_set("committed_at", float("inf")), "'committed_at'"),
    "committed_at negative": (_set("committed_at", -1.0), "'committed_at'"),
    "snapshot created_at a string": (_set("snapshot.created_at", "now"), "'snapshot.created_at'"),
    "delta page_count a bool": (_set("deltas.0.page_count", True), r"'deltas\[0\].page_count'"),
    "delta pages more than its page count": (
        _set("deltas.0.pages", 3),
        r"'deltas\[0\].pages'",
    ),
    "base segments a float": (_set("base.segments", 1.5), "'base.segments'"),
    "writer not a string": (_set("writer", 7), "'writer'"),
    "lineage missing": (_set("lineage", None), "'lineage'"),
    "nonce a path": (_set("nonce", "../../etc"), "'nonce'"),
    "extra a list": (_set("extra", [1, 2]), "'extra'"),
    "deltas not a list": (_set("deltas", {"0": 1}), "'deltas'"),
    "a delta field nobody knows": (_set("deltas.0.evil", 1), r"'deltas\[0\].evil'"),
    # checksums and hashes
    "checksum in capitals": (_set("checksum", str.upper), "'checksum'"),
    "checksum too short": (_set("checksum", lambda c: c[:31]), "'checksum'"),
    "delta sha256 not hex": (_set("deltas.0.sha256", "x" * 64), r"'deltas\[0\].sha256'"),
    "snapshot sha256 too short": (_set("snapshot.sha256", "ab"), "'snapshot.sha256'"),
    "base checksum not hex": (_set("base.checksum", "g" * 32), "'base.checksum'"),
    # versions and the chain of checksums
    "snapshot newer than the manifest": (_set("snapshot.version", 9), "'snapshot.version'"),
    "version below its base": (_set("version", 3), "'base.version'"),
    "version 0 with a snapshot": (_set("version", 0), "'snapshot.version'"),
    "version 0 with deltas": (_version_zero_with_deltas, "'deltas'"),
    "deltas skip a version": (_set("deltas.1.version", 7), "'deltas'"),
    "first delta not from the base": (
        _set("deltas.0.base_checksum", "0" * 32),
        r"'deltas\[0\].base_checksum'",
    ),
    "deltas do not link": (
        _set("deltas.1.base_checksum", "1" * 32),
        r"'deltas\[1\].base_checksum'",
    ),
    "page_count not the last delta's": (_set("page_count", 10**6), "'page_count'"),
    "checksum not the last delta's": (_set("checksum", "f" * 32), "'checksum'"),
    "page_count not the snapshot's": (_only_snapshot(page_count=9), "'page_count'"),
    "checksum not the snapshot's": (_only_snapshot(checksum="e" * 32), "'checksum'"),
    "page_count not the base's": (
        lambda b: b.update(version=4, deltas=[], checksum=b["base"]["checksum"], page_count=5),
        "'page_count'",
    ),
    "a history from version 0 with a previous": (_from_empty, "'previous'"),
    # sizes and inline deltas
    "delta size negative": (_set("deltas.0.size", -1), r"'deltas\[0\].size'"),
    "delta size absurd": (_set("deltas.0.size", 10**15), r"'deltas\[0\].size'"),
    "snapshot size absurd": (_set("snapshot.size", 10**15), "'snapshot.size'"),
    "inline shorter than its size": (
        _set("deltas.1.size", lambda s: s + 1),
        r"'deltas\[1\].inline'",
    ),
    "inline not base64": (_set("deltas.1.inline", "!!!!"), r"'deltas\[1\].inline'"),
    "inline over 1 MiB": (
        _set("deltas.1.inline", base64.b64encode(bytes(2 << 20)).decode()),
        r"'deltas\[1\].inline'",
    ),
    "inline size over 1 MiB": (
        lambda b: b["deltas"][1].update(
            inline=base64.b64encode(bytes((1 << 20) + 1)).decode(), size=(1 << 20) + 1
        ),
        r"'deltas\[1\].size'",
    ),
    "a delta with key and inline": (_inline_in_both, r"'deltas\[0\].key'"),
    "a delta with neither key nor inline": (_set("deltas.1.inline", None), r"'deltas\[1\].key'"),
    # keys
    "delta key of another version": (
        _set("deltas.0.key", f"deltas/{6:020d}-{_HEX}"),
        r"'deltas\[0\].key'",
    ),
    "delta key the manifest": (_set("deltas.0.key", "manifest"), r"'deltas\[0\].key'"),
    "delta key climbing out": (_set("deltas.0.key", "../../../etc/passwd"), r"'deltas\[0\].key'"),
    "delta nonce not hex": (_set("deltas.0.nonce", "not-hex"), r"'deltas\[0\].nonce'"),
    "snapshot key of another version": (
        _set("snapshot.key", f"snapshots/{1:020d}-{_HEX}"),
        "'snapshot.key'",
    ),
    "snapshot key a delta's": (_set("snapshot.key", f"deltas/{2:020d}-{_HEX}"), "'snapshot.key'"),
    "previous the manifest itself": (_set("previous", "manifest"), "'previous'"),
    "base archive the manifest itself": (_base_archive("manifest"), "'base.archive'"),
    "base archive of another version": (
        _base_archive(f"manifests/{3:020d}-{_HEX}"),
        "'base.archive'",
    ),
    "previous its own archive": (_own_archive, "'previous'"),
    "previous newer than the manifest": (
        _only_snapshot(previous=f"manifests/{7:020d}-{_HEX}"),
        "'previous'",
    ),
    "previous not an archive": (_only_snapshot(previous="deltas/x"), "'previous'"),
    "previous the manifest, no base": (_only_snapshot(previous="manifest"), "'previous'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_manifest_is_refused_everywhere(
    case: str, remote_copy: str, instance: Instance
) -> None:
    edit, field = CASES[case]
    warm = instance("warm", isolation_level=None)
    assert warm.execute("SELECT count(*) FROM t").fetchone() == (5,)
    body = _good(remote_copy)
    edit(body)
    hostile = _digested(body)
    storage = open_storage(remote_copy)

    # (a) the decoder names the field
    with pytest.raises(CorruptionError, match=field):
        fmt.decode_manifest(hostile)

    # (b) no instance builds on it, and nothing is published
    storage.put(fmt.MANIFEST_KEY, hostile)
    objects = {info.key for info in storage.list("")}
    cold = instance("cold")
    with pytest.raises(CorruptionError, match=field):
        cold.execute("SELECT count(*) FROM t")
    assert cold.replica.version == 0
    with pytest.raises(CorruptionError, match=field):
        warm.execute("SELECT count(*) FROM t")
    with pytest.raises(CorruptionError, match=field):
        warm.execute("INSERT INTO t VALUES (99)")
    assert warm.replica.version == 6
    blob = storage.get(fmt.MANIFEST_KEY)
    assert blob is not None and blob.data == hostile
    assert {info.key for info in storage.list("")} == objects


def test_every_case_starts_from_a_manifest_that_decodes(remote_copy: str) -> None:
    body = _good(remote_copy)
    assert fmt.decode_manifest(_digested(body)).version == 6
    for edit in (_only_snapshot(), lambda b: b["deltas"][0].update(nonce=_HEX)):
        body = _good(remote_copy)
        edit(body)
        fmt.decode_manifest(_digested(body))


# ---------------------------------------------------------------------------- synthetic manifests


def _ck(n: int) -> str:
    return checksum_hex(n + 1)


def _delta(version: int, *, pages: int = 3) -> fmt.DeltaRef:
    return fmt.DeltaRef(
        version=version,
        committed_at=1.0,
        base_checksum=checksum_hex(0) if version == 1 else _ck(version - 1),
        checksum=_ck(version),
        page_count=pages,
        pages=1,
        size=100,
        sha256="0" * 64,
        key=f"deltas/{version:020d}-{_HEX}",
    )


def _manifest(
    version: int, *, base: int | None = None, previous: str | None = None, **changes: Any
) -> fmt.Manifest:
    """A consistent manifest at ``version`` whose deltas continue ``base`` (a rollover's)."""
    start = base or 0
    ref = None
    if base is not None:
        archive = previous or f"manifests/{base:020d}-{_HEX}"
        ref = fmt.BaseRef(base, _ck(base), 3, archive, 1, 0)
        previous = archive
    m = fmt.Manifest(
        lineage="abc",
        version=version,
        nonce="1234",
        committed_at=1.0,
        writer="test",
        page_size=4096,
        page_count=3 if version else 0,
        checksum=_ck(version) if version else checksum_hex(0),
        snapshot=None,
        deltas=tuple(_delta(v) for v in range(start + 1, version + 1)),
        previous=previous,
        base=ref,
    )
    return replace(m, **changes)


def _ending_at(m: fmt.Manifest, checksum: str) -> fmt.Manifest:
    """``m`` with its last delta (and so itself) ending at pages ``checksum``."""
    last = replace(m.deltas[-1], checksum=checksum)
    return replace(m, deltas=(*m.deltas[:-1], last), checksum=checksum)


def test_a_chain_from_version_0_starts_at_the_empty_database() -> None:
    good = _manifest(2)
    assert fmt.decode_manifest(fmt.encode_manifest(good)) == good
    first = replace(good.deltas[0], base_checksum="1" * 32)
    bad = replace(good, deltas=(first, good.deltas[1]))
    with pytest.raises(CorruptionError, match=r"deltas\[0\].base_checksum.*empty database"):
        fmt.decode_manifest(fmt.encode_manifest(bad))


def test_version_0_is_the_empty_database() -> None:
    assert fmt.decode_manifest(fmt.encode_manifest(_manifest(0))).page_count == 0
    with pytest.raises(CorruptionError, match="'page_count'"):
        fmt.decode_manifest(fmt.encode_manifest(_manifest(0, page_count=1)))


def test_an_import_may_replace_a_newer_or_unreadable_manifest() -> None:
    """``import --force`` starts a new lineage at version 1: its ``previous`` is whatever was
    there before (any version, or ``manifests/unreadable-…``)."""
    snap = fmt.SnapshotRef(1, f"snapshots/{1:020d}-{_HEX}", 100, "0" * 64, 3, _ck(1), 1.0)
    for previous in (f"manifests/{57:020d}-{_HEX}", f"manifests/unreadable-{_HEX}"):
        m = _manifest(1, snapshot=snap, deltas=(), previous=previous)
        assert fmt.decode_manifest(fmt.encode_manifest(m)).previous == previous
        later = replace(m, version=2, deltas=(_delta(2),), checksum=_ck(2))  # commits after it
        fmt.decode_manifest(fmt.encode_manifest(later))
    unreadable_base = _manifest(5, base=3, previous=f"manifests/unreadable-{_HEX}")
    with pytest.raises(CorruptionError, match=r"'base\.archive'"):
        fmt.decode_manifest(fmt.encode_manifest(unreadable_base))


def test_the_format_1_manifests_still_decode() -> None:
    body = json.loads(fmt.encode_manifest(_manifest(2)))
    body["format_version"] = 1
    assert fmt.decode_manifest(_digested(body)).version == 2


# ---------------------------------------------------------------------------- the chain walk


def _store(name: str, manifests: dict[str, fmt.Manifest]) -> MemoryStorage:
    storage = MemoryStorage(name)
    storage.reset()
    for key, m in manifests.items():
        storage.put(key, fmt.encode_manifest(m))
    return storage


def _walk(storage: MemoryStorage, m: fmt.Manifest, version: int, *, required: bool) -> Any:
    return deltas_since(storage, m, version, required=required, remote="mem", max_segments=16)


def test_the_chain_walk_follows_archives_back() -> None:
    a, b = f"manifests/{2:020d}-aa", f"manifests/{4:020d}-bb"
    storage = _store("walk", {a: _manifest(2), b: _manifest(4, base=2, previous=a)})
    current = _manifest(6, base=4, previous=b)
    refs = _walk(storage, current, 1, required=True)
    assert [d.version for d in refs] == [2, 3, 4, 5, 6]


def test_a_cycle_of_archives_is_broken_not_followed() -> None:
    # two archives of version 4, each continuing the other: each decodes on its own
    a, b = f"manifests/{4:020d}-aa", f"manifests/{4:020d}-bb"
    storage = _store(
        "cycle",
        {a: _manifest(4, base=4, previous=b), b: _manifest(4, base=4, previous=a)},
    )
    current = _manifest(6, base=4, previous=a)
    assert _walk(storage, current, 1, required=False) is None
    with pytest.raises(CorruptionError, match="cycle") as caught:
        _walk(storage, current, 1, required=True)
    assert caught.value.key == a


@pytest.mark.parametrize(
    ("archive", "why"),
    [
        (_manifest(5), "claims version 5, newer than the 4"),
        (_manifest(3), "ends at version 3, not 4"),
        (_manifest(4, lineage="def"), "lineage"),
        (_manifest(4, page_size=8192), "8192 bytes"),
        (_ending_at(_manifest(4), _ck(40)), "ends at pages"),
    ],
)
def test_an_archive_that_does_not_lead_back_is_broken(archive: fmt.Manifest, why: str) -> None:
    key = f"manifests/{4:020d}-aa"
    storage = _store("lead-back", {key: archive})
    current = _manifest(6, base=4, previous=key)
    assert _walk(storage, current, 1, required=False) is None
    with pytest.raises(CorruptionError, match=why) as caught:
        _walk(storage, current, 1, required=True)
    assert caught.value.key == key


# ---------------------------------------------------------------------------- delta objects


def _raw_delta(
    page_size: int, page_count: int, numbers: list[int], *, content_size: bool = True
) -> bytes:
    raw = struct.pack(">III", page_size, page_count, len(numbers))
    raw += struct.pack(f">{len(numbers)}I", *numbers) + bytes(page_size * len(numbers))
    cctx = zstandard.ZstdCompressor(write_content_size=content_size)
    return fmt.MAGIC_DELTA + cctx.compress(raw)


def _ref_for(data: bytes, page_count: int, pages: int) -> fmt.DeltaRef:
    return replace(
        _delta(1, pages=page_count),
        pages=pages,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def test_a_well_formed_delta_decodes() -> None:
    data = fmt.encode_delta(4096, 5, {2: b"a" * 4096, 5: b"b" * 4096})
    delta = fmt.decode_delta(data, _ref_for(data, 5, 2), where="d", page_size=4096)
    assert sorted(delta.pages) == [2, 5] and delta.page_count == 5


@pytest.mark.parametrize(
    ("page_size", "page_count", "numbers", "pages", "manifest_page_size", "why"),
    [
        (4096, 5, [0, 2], 2, 4096, r"outside 1\.\.5"),
        (4096, 5, [2, 6], 2, 4096, r"outside 1\.\.5"),
        (4096, 5, [3, 2], 2, 4096, "ascending"),
        (4096, 5, [2, 2], 2, 4096, "ascending"),
        (4096, 5, [2], 2, 4096, "holds 1 pages"),
        (2048, 5, [2], 1, 4096, "2048 bytes"),  # not the manifest's page size
        (8192, 5, [2], 1, 4096, "allows"),  # larger pages than its entry allows
        (1000, 5, [2], 1, None, "1000 bytes"),  # no page size SQLite has
        (512, 1, [1, 2, 3], 3, 512, r"outside 1\.\.1"),  # more pages than the database has
    ],
)
def test_a_delta_page_table_is_checked(
    page_size: int,
    page_count: int,
    numbers: list[int],
    pages: int,
    manifest_page_size: int | None,
    why: str,
) -> None:
    data = _raw_delta(page_size, page_count, numbers)
    ref = _ref_for(data, page_count, pages)
    with pytest.raises(CorruptionError, match=why):
        fmt.decode_delta(data, ref, where="d", page_size=manifest_page_size)


@pytest.mark.parametrize("content_size", [True, False])
def test_a_delta_that_inflates_past_its_pages_is_refused(content_size: bool) -> None:
    """A frame of 64 MiB of zeros (compressed to a few KiB) named as one page: refused at
    its declared size, or once the output passes one page, never inflated whole."""
    payload = bytes(64 << 20)
    cctx = zstandard.ZstdCompressor(write_content_size=content_size)
    data = fmt.MAGIC_DELTA + cctx.compress(struct.pack(">III", 4096, 1, 1) + payload)
    with pytest.raises(CorruptionError, match="allows"):
        fmt.decode_delta(data, _ref_for(data, 1, 1), where="d", page_size=4096)


def test_a_hostile_delta_object_is_never_applied(remote_copy: str, instance: Instance) -> None:
    """A delta object and a manifest that agree on its sha256, with a page past the end."""
    storage = open_storage(remote_copy)
    body = _good(remote_copy)
    entry = body["deltas"][0]
    data = _raw_delta(4096, entry["page_count"], [entry["page_count"] + 1])
    storage.put(entry["key"], data)
    entry.update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    hostile = _digested(body)
    fmt.decode_manifest(hostile)  # the manifest itself is consistent
    storage.put(fmt.MANIFEST_KEY, hostile)
    cold = instance("cold", isolation_level=None)
    with pytest.raises(CorruptionError, match="outside"):
        cold.execute("SELECT count(*) FROM t")
    with pytest.raises(CorruptionError, match="outside"):
        cold.execute("INSERT INTO t VALUES (99)")
    assert cold.replica.version == 0
    blob = storage.get(fmt.MANIFEST_KEY)
    assert blob is not None and blob.data == hostile


# ---------------------------------------------------------------------------- snapshots


def test_a_snapshot_that_inflates_past_its_pages_is_refused(tmp_path: Path) -> None:
    image, packed, out = tmp_path / "image", tmp_path / "packed", tmp_path / "out"
    image.write_bytes(bytes(4096 * 64))
    size, sha = fmt.write_snapshot(str(image), str(packed), 4096)
    ref = fmt.SnapshotRef(1, f"snapshots/{1:020d}-{_HEX}", size, sha, 64, _ck(1), 1.0)
    fmt.read_snapshot(str(packed), str(out), ref, where="s", page_size=4096)
    assert out.stat().st_size == 4096 * 64
    for pages in (2, 63, 65):
        with pytest.raises(CorruptionError, match=f"{pages} pages"):
            fmt.read_snapshot(
                str(packed), str(out), replace(ref, page_count=pages), where="s", page_size=4096
            )
    fmt.read_snapshot(str(packed), str(out), replace(ref, page_count=4), where="s")  # at most


# ---------------------------------------------------------------------------- growth


def _grown(page_size: int, page_count: int, pages: set[int]) -> fmt.Delta:
    return fmt.Delta(page_size, page_count, {p: b"" for p in pages})


@pytest.mark.parametrize(
    ("old_count", "page_count", "pages"),
    [
        (10, 10, {1, 4}),  # no growth
        (10, 3, {1}),  # shrinks (a VACUUM)
        (10, 12, {1, 11, 12}),  # adds two pages, carries both
        (0, 2, {1, 2}),  # the first commit
        (16384, 16386, {1, 16386}),  # passes the lock-byte page (64 KiB pages), never written
    ],
)
def test_a_delta_that_carries_its_new_pages_may_grow(
    old_count: int, page_count: int, pages: set[int]
) -> None:
    page_size = 65536 if old_count == 16384 else 4096
    delta = _grown(page_size, page_count, pages)
    fmt.check_delta_growth(_delta(1), delta, old_count, where="d")


@pytest.mark.parametrize(
    ("old_count", "page_count", "pages"),
    [
        (10, 12, {1, 11}),  # past its highest page
        (10, 12, {1, 12}),  # a hole: page 11 added, not carried
        (10, 4294967294, {4294967294}),  # a 16 TiB database of one page
        (0, 10**6, set()),  # a million pages from nothing
        (16384, 16386, {16385}),  # the lock-byte page carried, the page after not
    ],
)
def test_a_delta_that_adds_pages_it_does_not_carry_is_refused(
    old_count: int, page_count: int, pages: set[int]
) -> None:
    page_size = 65536 if old_count == 16384 else 4096
    delta = _grown(page_size, page_count, pages)
    with pytest.raises(CorruptionError, match="carries only") as caught:
        fmt.check_delta_growth(_delta(1), delta, old_count, where="deltas/x")
    assert caught.value.key == "deltas/x"


def test_admin_builds_refuse_a_delta_that_grows_without_its_pages(
    remote_copy: str, tmp_path: Path
) -> None:
    """A manifest and an inline delta that agree: version 6 has a million pages, and the
    delta carries none of them. ``pull`` refuses it before hashing a million zero pages."""
    body = _good(remote_copy)
    entry = body["deltas"][1]
    data = fmt.encode_delta(4096, 10**6, {})
    entry.update(
        inline=base64.b64encode(data).decode(),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        pages=0,
        page_count=10**6,
    )
    body["page_count"] = 10**6
    hostile = _digested(body)
    fmt.decode_manifest(hostile)  # consistent, as far as the manifest can tell
    open_storage(remote_copy).put(fmt.MANIFEST_KEY, hostile)
    settings = Settings.build(remote_copy, {"cache_dir": str(tmp_path / "admin-cache")})
    with pytest.raises(CorruptionError, match="carries only 0") as caught:
        pull(settings, tmp_path / "pulled.sqlite")
    assert caught.value.key == "manifest#v6"
    assert not (tmp_path / "pulled.sqlite").exists()
