"""Corrupt, truncated or foreign objects in the remote: never applied, never overwritten."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

import lambdalite
from lambdalite.errors import CorruptionError
from lambdalite.replica.format import MANIFEST_KEY
from tests.engine.backends import Remote, any_remote  # noqa: F401 - fixture


def _populate(remote: Remote, **options: object) -> None:
    conn = remote.connect("writer", isolation_level=None, **options)
    conn.execute("CREATE TABLE t(v)")
    for v in range(4):
        conn.execute("INSERT INTO t VALUES (?)", (v,))
    conn.close()


def _tamper(remote: Remote, key: str, change: Callable[[bytes], bytes]) -> None:
    st = remote.storage()
    blob = st.get(key)
    assert blob is not None
    st.put(key, change(blob.data))


def _flip(data: bytes) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]


def _edit_manifest_field(data: bytes) -> bytes:
    body = json.loads(data)
    body["page_count"] += 1  # digest no longer matches
    return json.dumps(body).encode()


MANIFEST_DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda d: b"\x00\x01 not a manifest",
    "truncated": lambda d: d[: len(d) // 2],
    "foreign-json": lambda d: b'{"hello": "world"}',
    "edited": _edit_manifest_field,
}


@pytest.mark.parametrize("damage", list(MANIFEST_DAMAGE))
def test_damaged_manifest_is_refused(any_remote: Remote, damage: str) -> None:  # noqa: F811
    _populate(any_remote)
    reader = any_remote.connect("reader")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (4,)
    _tamper(any_remote, MANIFEST_KEY, MANIFEST_DAMAGE[damage])
    snapshot = any_remote.objects()

    cold = any_remote.connect("cold")
    with pytest.raises(CorruptionError, match="manifest"):
        cold.execute("SELECT count(*) FROM t")
    with pytest.raises(CorruptionError):
        reader.execute("SELECT count(*) FROM t")
    writer = any_remote.connect("writer2", isolation_level=None)
    with pytest.raises(CorruptionError):
        writer.execute("INSERT INTO t VALUES (99)")
    assert any_remote.objects() == snapshot  # nothing overwritten
    # the warm reader's local copy is untouched and still serves its version when allowed to
    stale_ok = any_remote.connect("reader", max_staleness=3600)
    assert stale_ok.replica.version == reader.replica.version


@pytest.mark.parametrize("damage", ["flip", "truncate", "foreign"])
def test_damaged_delta_object_is_never_applied(any_remote: Remote, damage: str) -> None:  # noqa: F811
    _populate(any_remote, inline_delta_max=0)  # every delta is an object
    reader = any_remote.connect("reader")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (4,)
    version = reader.replica.version
    writer = any_remote.connect("writer", isolation_level=None, inline_delta_max=0)
    writer.execute("INSERT INTO t VALUES (4)")
    newest = max(k for k in any_remote.objects() if k.startswith("deltas/"))
    change = {
        "flip": _flip,
        "truncate": lambda d: d[:10],
        "foreign": lambda d: b"PK\x03\x04 a zip file" + d[20:],
    }[damage]
    _tamper(any_remote, newest, change)
    before = any_remote.objects()
    with pytest.raises(CorruptionError, match="delta"):
        reader.execute("SELECT count(*) FROM t")
    assert reader.replica.version == version  # nothing applied
    assert any_remote.objects() == before  # nothing overwritten
    cold = any_remote.connect("cold")
    with pytest.raises(CorruptionError):
        cold.execute("SELECT count(*) FROM t")


def test_damaged_snapshot_is_never_applied(any_remote: Remote) -> None:  # noqa: F811
    _populate(any_remote, compact_after_deltas=2, compact_after_bytes=1)
    snaps = [k for k in any_remote.objects() if k.startswith("snapshots/")]
    assert snaps, "compaction should have written a snapshot"
    st = any_remote.storage()
    manifest = json.loads(st.get(MANIFEST_KEY).data)  # type: ignore[union-attr]
    _tamper(any_remote, manifest["snapshot"]["key"], _flip)
    cold = any_remote.connect("cold")
    with pytest.raises(CorruptionError, match="snapshot"):
        cold.execute("SELECT count(*) FROM t")
    assert cold.replica.version == 0


def test_missing_delta_object_is_a_clear_error(any_remote: Remote) -> None:  # noqa: F811
    _populate(any_remote, inline_delta_max=0)
    st = any_remote.storage()
    victim = min(k for k in any_remote.objects() if k.startswith("deltas/"))
    st.delete(victim)
    cold = any_remote.connect("cold")
    with pytest.raises(CorruptionError, match="missing"):
        cold.execute("SELECT count(*) FROM t")


def test_corrupt_local_copy_heals(any_remote: Remote) -> None:  # noqa: F811
    _populate(any_remote)
    reader = any_remote.connect("reader")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (4,)
    db_path = reader.replica.db_path
    reader.close()
    from lambdalite.replica.engine import forget_replicas

    forget_replicas()
    with open(db_path, "r+b") as f:  # damage the local copy behind lambdalite's back
        f.seek(4096 + 100)
        f.write(b"\xde\xad\xbe\xef" * 8)
    again = any_remote.connect("reader")
    assert [v for (v,) in again.execute("SELECT v FROM t ORDER BY v")] == [0, 1, 2, 3]
    assert again.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert isinstance(again, lambdalite.Connection)
