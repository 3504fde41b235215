"""History walking and restore to every version, by number and by time."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lambdalite.admin import (
    VersionNotAvailableError,
    list_versions,
    load_history,
    pull,
    restore,
    status,
)
from lambdalite.config import Settings
from lambdalite.storage import open_storage
from tests.admin.conftest import BuildHistory, dump_file


@pytest.mark.parametrize("inline_delta_max", [0, 65536], ids=["object-deltas", "inline-deltas"])
def test_every_version_is_listed_and_restores_to_its_rows(
    build_history: BuildHistory, settings: Settings, tmp_path: Path, inline_delta_max: int
) -> None:
    built = build_history(11, inline_delta_max=inline_delta_max)
    history = load_history(open_storage(settings.remote))
    assert len(history.records) >= 4  # compactions archived manifests at 3, 6, 9
    assert all(r.key.startswith("manifests/") for r in history.records[1:])
    versions = list_versions(settings)
    assert [v.version for v in versions] == sorted(built.model)
    times = [v.committed_at for v in versions]
    assert times == sorted(times)
    for v in versions:
        assert v.committed_at <= built.after[v.version]
        out = tmp_path / f"v{v.version}.sqlite"
        result = restore(settings, to_version=v.version, output=out)
        assert result.restored_version == v.version
        assert result.output == str(out)
        assert dump_file(out) == built.model[v.version], v.version
        assert out.read_bytes()[18:20] == b"\x01\x01"  # rollback journal: no -wal expected


def test_restore_picks_the_cheapest_source(build_history: BuildHistory, settings: Settings) -> None:
    built = build_history(10, inline_delta_max=0)
    by_version = {v.version: v for v in list_versions(settings)}
    # Version 9 is both the end of an archive (snapshot 6 + 3 deltas) and the start of the
    # current manifest (its snapshot): the snapshot wins.
    nine = by_version[9]
    assert nine.manifest_key == "manifest"
    assert nine.delta_keys == ()
    assert nine.snapshot_key is not None and nine.snapshot_key.startswith("snapshots/")
    one = by_version[1]
    assert one.snapshot_key is None and len(one.delta_keys) == 1
    assert built.latest == 10


def test_restore_by_time(build_history: BuildHistory, settings: Settings, tmp_path: Path) -> None:
    built = build_history(8)
    for version, when in built.after.items():
        out = tmp_path / f"t{version}.sqlite"
        result = restore(settings, to_time=when, output=out)
        assert result.restored_version == version
        assert dump_file(out) == built.model[version]
    first = min(v.committed_at for v in list_versions(settings))
    with pytest.raises(VersionNotAvailableError, match="retained"):
        restore(settings, to_time=first - 1, output=tmp_path / "none.sqlite")
    assert not (tmp_path / "none.sqlite").exists()


def test_restore_rejects_bad_arguments(
    build_history: BuildHistory, settings: Settings, tmp_path: Path
) -> None:
    build_history(2)
    with pytest.raises(ValueError, match="exactly one of to_version and to_time"):
        restore(settings, output=tmp_path / "x.sqlite")
    with pytest.raises(ValueError, match="exactly one of output and in_place"):
        restore(settings, to_version=1)
    with pytest.raises(VersionNotAvailableError, match="version 7 is not"):
        restore(settings, to_version=7, output=tmp_path / "x.sqlite")
    (tmp_path / "exists.sqlite").write_bytes(b"")
    with pytest.raises(FileExistsError, match="--force"):
        restore(settings, to_version=1, output=tmp_path / "exists.sqlite")
    restore(settings, to_version=1, output=tmp_path / "exists.sqlite", overwrite=True)


def test_pull_gives_a_plain_sqlite_file(
    build_history: BuildHistory, settings: Settings, tmp_path: Path
) -> None:
    built = build_history(7)
    out = tmp_path / "pulled.sqlite"
    result = pull(settings, out)
    assert result.version == built.latest
    conn = sqlite3.connect(out)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("INSERT INTO t(v) VALUES ('local edit')")  # writable as a plain file
        conn.commit()
    finally:
        conn.close()
    assert not Path(f"{out}-wal").exists()
    rows = dump_file(out)
    rows["t"].pop()
    assert rows == built.model[built.latest]
    with pytest.raises(FileExistsError):
        pull(settings, out)
    Path(f"{out}-wal").write_bytes(b"junk")
    with pytest.raises(FileExistsError, match="in use"):
        pull(settings, out, overwrite=True)


def test_status_describes_the_remote(build_history: BuildHistory, settings: Settings) -> None:
    built = build_history(5, inline_delta_max=100)
    info = status(settings)
    assert info["version"] == built.latest == 5
    assert info["size"] == info["page_size"] * info["page_count"]
    assert info["snapshot"]["version"] == 3
    assert info["deltas"]["count"] == 2
    assert info["deltas"]["inline"] + info["deltas"]["objects"] == 2
    assert info["oldest_restorable_version"] == 1
    assert info["archived_manifests"] == 1
    assert info["lock"] == {"kind": "manifest", "held": False, "waiting": 0}  # the write lease
    assert isinstance(info["manifest_etag"], str)
