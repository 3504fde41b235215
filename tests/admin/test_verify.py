"""verify on healthy and damaged remotes; restore and pull refuse damaged objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from lambdalite.admin import load_history, pull, restore, verify
from lambdalite.config import Settings
from lambdalite.errors import CorruptionError
from lambdalite.storage import open_storage
from tests.admin.conftest import BuildHistory


def _flip(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("layout", ["compactions", "rollovers", "mixed"])
def test_healthy_remote_verifies(
    build_history: BuildHistory, settings: Settings, layout: str
) -> None:
    build_history(11, layout=layout, inline_delta_max=200)  # a mix of inline and object deltas
    report = verify(settings)
    assert report.ok, report.to_dict()
    assert report.integrity == ["ok"]
    assert report.version == 11
    kinds = {o.kind for o in report.objects}
    snapshots = {"snapshot"} if layout != "rollovers" else set()  # rollovers keep no snapshot
    assert kinds == {"manifest", "delta"} | snapshots
    assert any("#v" in o.key for o in report.objects)  # inline deltas are checked too
    assert report.unreferenced == []
    history = load_history(open_storage(settings.remote))
    named = {r.key for r in history.records}
    for r in history.records:
        named |= r.object_keys()
    assert named <= {o.key for o in report.objects}


def _current_delta(settings: Settings) -> tuple[str, int]:
    m = load_history(open_storage(settings.remote)).current.manifest
    ref = m.deltas[-1]
    assert ref.key is not None
    return ref.key, ref.version


def test_corrupt_delta_is_named(
    build_history: BuildHistory, settings: Settings, remote_root: Path, tmp_path: Path
) -> None:
    build_history(8, inline_delta_max=0)
    key, version = _current_delta(settings)
    _flip(remote_root / key)
    report = verify(settings)
    assert not report.ok
    assert [(p.key, p.version) for p in report.problems] == [(key, version)]
    assert "sha256" in report.problems[0].message
    assert report.integrity is None  # the current image could not be built
    with pytest.raises(CorruptionError, match=key) as caught:
        pull(settings, tmp_path / "out.sqlite")
    assert caught.value.key == key
    assert not (tmp_path / "out.sqlite").exists()
    with pytest.raises(CorruptionError, match=key):
        restore(settings, to_version=version, output=tmp_path / "r.sqlite")
    # Versions that do not need the broken delta still restore.
    restore(settings, to_version=version - 1, output=tmp_path / "before.sqlite")


def test_missing_delta_is_named(
    build_history: BuildHistory, settings: Settings, remote_root: Path, tmp_path: Path
) -> None:
    build_history(8, inline_delta_max=0)
    key, _ = _current_delta(settings)
    (remote_root / key).unlink()
    report = verify(settings)
    assert [p.key for p in report.problems] == [key]
    assert "missing" in report.problems[0].message
    with pytest.raises(CorruptionError, match="missing"):
        pull(settings, tmp_path / "out.sqlite")


def test_corrupt_snapshot_is_named(
    build_history: BuildHistory, settings: Settings, remote_root: Path, tmp_path: Path
) -> None:
    build_history(8)
    snap = load_history(open_storage(settings.remote)).current.manifest.snapshot
    assert snap is not None
    _flip(remote_root / snap.key, 20)
    report = verify(settings)
    assert snap.key in [p.key for p in report.problems]
    assert all(p.key == snap.key for p in report.problems)
    with pytest.raises(CorruptionError, match=snap.key):
        pull(settings, tmp_path / "out.sqlite")
    with pytest.raises(CorruptionError, match=snap.key):
        restore(settings, to_version=snap.version, output=tmp_path / "r.sqlite")


def test_corrupt_archive_is_named(
    build_history: BuildHistory, settings: Settings, remote_root: Path
) -> None:
    build_history(8)
    history = load_history(open_storage(settings.remote))
    archive = history.records[1].key
    path = remote_root / archive
    path.write_bytes(path.read_bytes().replace(b'"writer":"', b'"writer":"X'))  # still JSON
    report = verify(settings)
    assert [p.key for p in report.problems] == [archive]
    assert "digest" in report.problems[0].message
    assert report.integrity == ["ok"]  # the current version is fine
    path.write_bytes(b"{")
    assert "not JSON" in verify(settings).problems[0].message


def test_a_delta_that_does_not_continue_the_chain_is_named(
    build_history: BuildHistory, settings: Settings, remote_root: Path, tmp_path: Path
) -> None:
    build_history(8, layout="rollovers", inline_delta_max=0, compact_after_deltas=100)
    m = load_history(open_storage(settings.remote)).current.manifest
    # Swap two delta objects' content: each is intact, but out of place.
    a, b = m.deltas[3], m.deltas[4]
    assert a.key is not None and b.key is not None
    da, db = (remote_root / a.key).read_bytes(), (remote_root / b.key).read_bytes()
    (remote_root / a.key).write_bytes(db)
    (remote_root / b.key).write_bytes(da)
    report = verify(settings)
    assert {p.key for p in report.problems} == {a.key, b.key}
    with pytest.raises(CorruptionError):
        restore(settings, to_version=b.version, output=tmp_path / "r.sqlite")
