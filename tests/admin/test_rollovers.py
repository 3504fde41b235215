"""The admin commands on histories made of rollovers, compactions and both.

A rollover archives a manifest and continues its deltas in a new one at the same version
(same snapshot, ``base`` = the archive); building a version may take an old snapshot plus
the deltas of several archives.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest

import lambdalite
from lambdalite.admin import (
    VersionNotAvailableError,
    compact,
    gc,
    import_database,
    list_versions,
    load_history,
    pull,
    restore,
    status,
    verify,
)
from lambdalite.config import Settings
from lambdalite.errors import CorruptionError
from lambdalite.replica import format as fmt
from lambdalite.storage import open_storage
from tests.admin.conftest import BuildHistory, Built, dump, dump_file
from tests.admin.test_gc import DAY, _objects

LAYOUTS = ["compactions", "rollovers", "mixed"]


def _restores_every_version(settings: Settings, built: Built, tmp_path: Path) -> None:
    """Every version of the model is listed and restores (by number and by time) to its rows."""
    versions = list_versions(settings)
    assert [v.version for v in versions] == sorted(built.model)
    for v in versions:
        out = tmp_path / f"v{v.version}.sqlite"
        restore(settings, to_version=v.version, output=out, overwrite=True)
        assert dump_file(out) == built.model[v.version], v.version
        if v.committed_at_exact:  # else only known as "before its snapshot was taken"
            when = built.after[v.version]
            by_time = restore(settings, to_time=when, output=out, overwrite=True)
            assert by_time.restored_version == v.version


def _cold_reader_sees(built: Built, tmp_path: Path, name: str) -> None:
    conn = lambdalite.connect(built.conn.replica.remote, cache_dir=str(tmp_path / name))
    try:
        assert dump(conn) == built.model[built.latest]
    finally:
        conn.close()


def _archives(settings: Settings) -> dict[int, str]:
    """The archived manifests of the chain by version (the newest archive of each version)."""
    history = load_history(open_storage(settings.remote))
    out: dict[int, str] = {}
    for record in history.records[1:]:
        out.setdefault(record.manifest.version, record.key)
    return out


# ---------------------------------------------------------------------------- history


@pytest.mark.parametrize("inline_delta_max", [0, 65536], ids=["objects", "inline"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_version_restores(
    build_history: BuildHistory,
    settings: Settings,
    tmp_path: Path,
    layout: str,
    inline_delta_max: int,
) -> None:
    built = build_history(20, layout=layout, inline_delta_max=inline_delta_max)
    _restores_every_version(settings, built, tmp_path)
    report = verify(settings)
    assert report.ok, report.problems
    assert report.unreferenced == []
    out = tmp_path / "latest.sqlite"
    assert pull(settings, out).version == 20
    assert dump_file(out) == built.model[20]


def test_a_version_is_built_across_rolled_over_segments(
    build_history: BuildHistory, settings: Settings
) -> None:
    build_history(11, layout="rollovers", inline_delta_max=200)  # inline and object deltas
    history = load_history(open_storage(settings.remote))
    archives = _archives(settings)
    assert sorted(archives) == [3, 6, 9]  # rollovers every 3 commits, never a snapshot
    m = history.current.manifest
    assert m.snapshot is None and m.base is not None and m.base.version == 9
    plan = history.plan(8)
    assert plan.snapshot is None and [d.version for d in plan.deltas] == list(range(1, 9))
    assert [r.key for r in plan.records] == [archives[3], archives[6], archives[9]]
    for step in plan.steps:  # each delta is named through the manifest that holds it
        assert step.record.manifest.base_version < step.ref.version <= step.record.manifest.version
        if step.ref.inline is not None:
            assert step.where == f"{step.record.key}#v{step.ref.version}"
    info = {v.version: v for v in list_versions(settings)}[8]
    assert info.manifest_key == archives[9] and info.snapshot_version == 0
    assert info.manifest_keys == (archives[3], archives[6], archives[9])
    assert info.delta_keys == tuple(step.where for step in plan.steps)
    latest = history.latest_plan()
    assert latest.version == 11 and len(latest.steps) == 11 and latest.record.is_current


def test_the_nearest_snapshot_is_used(build_history: BuildHistory, settings: Settings) -> None:
    built = build_history(5, layout="rollovers")
    compact(settings)  # snapshot 5 (from 5 deltas in 2 manifests)
    for i in range(4, 11):  # rollovers at 8 and 11: the deltas continue from snapshot 5
        built.step(i)
    history = load_history(open_storage(settings.remote))
    assert history.current.manifest.base is not None
    plans = {v: history.plan(v) for v in range(1, 13)}
    assert {v: p.source.version for v, p in plans.items()} == {
        **{v: 0 for v in range(1, 5)},
        **{v: 5 for v in range(5, 13)},
    }
    assert plans[5].steps == () and plans[12].deltas[0].version == 6


def test_inline_delta_errors_name_the_archive_holding_it(
    build_history: BuildHistory, settings: Settings, remote_root: Path, tmp_path: Path
) -> None:
    build_history(8, layout="rollovers")  # every delta inline
    key = _archives(settings)[6]
    archived = fmt.decode_manifest((remote_root / key).read_bytes(), where=key)
    a, b = archived.deltas[0], archived.deltas[1]  # versions 4 and 5
    # a's bytes under b's sha256: the manifest is consistent, the delta fails its digest
    deltas = (a, replace(b, inline=a.inline, size=a.size), *archived.deltas[2:])
    swapped = archived.next(nonce=archived.nonce, deltas=deltas)
    (remote_root / key).write_bytes(fmt.encode_manifest(swapped))  # a valid manifest, a bad delta
    where = f"{key}#v5"
    with pytest.raises(CorruptionError, match=where) as caught:
        restore(settings, to_version=7, output=tmp_path / "v7.sqlite")
    assert caught.value.key == where
    restore(settings, to_version=4, output=tmp_path / "v4.sqlite")  # before it: fine
    report = verify(settings)
    assert [p.key for p in report.problems] == [where]
    assert report.problems[0].named_by == key


# ---------------------------------------------------------------------------- broken chains


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_broken_archive_in_the_middle_of_a_rollover_chain(
    build_history: BuildHistory,
    settings: Settings,
    remote_root: Path,
    tmp_path: Path,
    damage: str,
) -> None:
    built = build_history(14, layout="rollovers", inline_delta_max=0)
    key = _archives(settings)[6]
    if damage == "missing":
        (remote_root / key).unlink()
    else:
        path = remote_root / key
        path.write_bytes(path.read_bytes().replace(b'"writer":"', b'"writer":"X'))
    before = _objects(remote_root)

    report = verify(settings)
    assert [p.key for p in report.problems] == [key]
    assert ("missing" if damage == "missing" else "digest") in report.problems[0].message
    assert report.integrity is None  # the current version needs the archive
    for version in (7, 10, 14):  # the versions after it need it
        with pytest.raises(CorruptionError, match=key) as caught:
            restore(settings, to_version=version, output=tmp_path / "r.sqlite")
        assert caught.value.key == key
    with pytest.raises(VersionNotAvailableError):  # the chain no longer reaches them
        restore(settings, to_version=2, output=tmp_path / "r.sqlite")
    with pytest.raises(CorruptionError, match=key):
        pull(settings, tmp_path / "latest.sqlite")
    assert not (tmp_path / "r.sqlite").exists() and not (tmp_path / "latest.sqlite").exists()
    with pytest.raises(CorruptionError, match="gc refuses"):
        gc(settings.replace(retention=0), dry_run=False, now=time.time() + DAY)
    assert _objects(remote_root) == before
    assert status(settings)["version"] == built.latest  # status still describes the remote


def test_an_archive_that_the_next_manifest_does_not_continue(
    build_history: BuildHistory, settings: Settings, remote_root: Path
) -> None:
    build_history(10, layout="rollovers")
    archives = _archives(settings)
    # Archive 6 replaced by (a copy of) archive 3: a valid manifest at the wrong version.
    (remote_root / archives[6]).write_bytes((remote_root / archives[3]).read_bytes())
    report = verify(settings)
    assert archives[6] in {p.key for p in report.problems}
    message = next(p.message for p in report.problems if p.key == archives[6])
    assert "continues version 6" in message


# ---------------------------------------------------------------------------- gc


def test_gc_keeps_every_segment_the_current_version_needs(
    build_history: BuildHistory, settings: Settings, remote_root: Path, tmp_path: Path
) -> None:
    built = build_history(40, layout="rollovers", inline_delta_max=0)  # 13 rolled-over segments
    before = _objects(remote_root)
    report = gc(settings.replace(retention=0), dry_run=False, now=time.time() + 30 * DAY)
    assert report.deleted == []  # every delta since the empty database builds version 40
    assert report.oldest_version == 1
    assert _objects(remote_root) == before
    _cold_reader_sees(built, tmp_path, "cold")
    assert verify(settings).ok


def _snapshot_then_rollovers(
    build_history: BuildHistory, settings: Settings
) -> tuple[Built, float]:
    """1-3 (rollover at 3), 4 (compacted: snapshot 4), 5-10 (rollovers at 7 and 10), a pause
    (the returned time), 11-16 (rollovers at 13 and 16): 11..16 need snapshot 4."""
    built = build_history(4, layout="rollovers", inline_delta_max=0)
    assert compact(settings).compacted
    for i in range(3, 9):  # distinct steps: each one changes the database
        built.step(i)
    time.sleep(0.05)
    middle = time.time()
    time.sleep(0.05)
    for i in range(9, 15):
        built.step(i)
    assert built.latest == 16
    return built, middle


@pytest.mark.parametrize("window", ["since-the-pause", "none"])
def test_gc_keeps_old_segments_back_to_the_snapshot(
    build_history: BuildHistory,
    settings: Settings,
    remote_root: Path,
    tmp_path: Path,
    window: str,
) -> None:
    built, middle = _snapshot_then_rollovers(build_history, settings)
    history = load_history(open_storage(settings.remote))
    by_key = {r.key: r for r in history.records}
    archives = _archives(settings)
    assert sorted(archives) == [3, 4, 7, 10, 13, 16]
    # Kept: back to archive 7, which holds deltas 5-7 (its replacement's snapshot, 4, is as
    # old as the history); gone: the archives before snapshot 4 and what only they name.
    doomed = {archives[3], archives[4]} | by_key[archives[3]].object_keys()
    doomed |= by_key[archives[4]].object_keys()
    kept = [r for r in history.records if r.key not in doomed]
    doomed -= {k for r in kept for k in r.object_keys()}
    before = _objects(remote_root)
    if window == "none":
        settings, now = settings.replace(retention=0), time.time() + 30 * DAY
    else:
        settings, now = settings.replace(retention=DAY), middle + DAY

    report = gc(settings, dry_run=False, now=now)
    assert {item.key for item in report.deleted} == doomed
    assert [item.key for item in report.deleted][:2] == [archives[4], archives[3]]
    assert report.kept == [r.key for r in kept]
    assert _objects(remote_root) == before - doomed
    assert report.oldest_version == 4
    # What is left is consistent, and builds every version from snapshot 4 on.
    del built.model[1], built.model[2], built.model[3]
    _restores_every_version(settings, built, tmp_path)
    _cold_reader_sees(built, tmp_path, "cold")
    result = verify(settings)
    assert result.ok, result.problems
    assert any("no longer exists" in note for note in result.notes)
    assert gc(settings, dry_run=False, now=now).deleted == []  # idempotent


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gc_with_no_retention_keeps_the_current_version_readable(
    build_history: BuildHistory,
    settings: Settings,
    remote_root: Path,
    tmp_path: Path,
    layout: str,
) -> None:
    built = build_history(30, layout=layout, inline_delta_max=0)
    settings = settings.replace(retention=0)
    history = load_history(open_storage(settings.remote))
    needed = history.latest_plan().records
    report = gc(settings, dry_run=False, now=time.time() + 30 * DAY)
    after = load_history(open_storage(settings.remote))
    # Kept: exactly the chain down to the oldest manifest the current version's build reads.
    assert [r.key for r in after.records] == report.kept
    assert report.kept[-1] in {r.key for r in needed}
    assert {r.key for r in needed} <= set(report.kept)
    named = {"manifest"} | {r.key for r in after.records}
    named |= {k for r in after.records for k in r.object_keys()}
    assert _objects(remote_root) == named
    assert report.oldest_version == after.current_lineage.restorable()[0]
    _cold_reader_sees(built, tmp_path, "cold")
    assert verify(settings).ok
    for version in after.current_lineage.restorable():
        out = tmp_path / f"v{version}.sqlite"
        restore(settings, to_version=version, output=out)
        assert dump_file(out) == built.model[version]


# ---------------------------------------------------------------------------- status, compact


def test_status_counts_since_the_snapshot(build_history: BuildHistory, settings: Settings) -> None:
    build_history(11, layout="rollovers")
    info = status(settings)
    assert info["snapshot"] is None
    assert info["base"]["version"] == 9 and info["base"]["archive"] == _archives(settings)[9]
    assert info["deltas"]["count"] == 2
    since = info["since_snapshot"]
    assert since["deltas"] == 11 and since["segments"] == 3
    m = load_history(open_storage(settings.remote)).current.manifest
    assert since["bytes"] == m.bytes_since_snapshot() > m.delta_bytes()
    assert info["oldest_restorable_version"] == 1 and info["archived_manifests"] == 3


def test_compact_folds_the_deltas_of_every_segment(
    build_history: BuildHistory, settings: Settings, tmp_path: Path
) -> None:
    built = build_history(9, layout="rollovers", inline_delta_max=0)  # rolled over at 9
    m = load_history(open_storage(settings.remote)).current.manifest
    assert m.deltas == () and m.base is not None
    result = compact(settings)
    assert result.compacted and result.folded_deltas == 9
    m = load_history(open_storage(settings.remote)).current.manifest
    assert (m.version, m.deltas, m.base) == (9, (), None)
    assert m.snapshot is not None and m.snapshot.version == 9
    info = status(settings)["since_snapshot"]
    assert info == {"deltas": 0, "bytes": 0, "segments": 0}
    assert not compact(settings).compacted
    built.step(8)
    assert built.latest == 10
    _restores_every_version(settings, built, tmp_path)
    assert verify(settings).ok


def test_gc_keeps_a_replaced_lineage_for_the_retention(
    build_history: BuildHistory, settings: Settings, remote_root: Path, tmp_path: Path
) -> None:
    build_history(7, layout="rollovers", inline_delta_max=0)
    old = load_history(open_storage(settings.remote)).records
    src = tmp_path / "new.sqlite"
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE n(x)")
    conn.commit()
    conn.close()
    imported_at = time.time()
    import_database(settings, src, force=True)
    archived = load_history(open_storage(settings.remote)).records[1].key  # the old manifest
    settings = settings.replace(retention=DAY)
    assert gc(settings, dry_run=False, now=imported_at + DAY / 2).deleted == []
    report = gc(settings, dry_run=False, now=imported_at + 2 * DAY)
    old_objects = {r.key for r in old[1:]} | {k for r in old for k in r.object_keys()}
    assert {item.key for item in report.deleted} == old_objects | {archived}
    assert report.kept == ["manifest"] and report.oldest_version == 1
    assert verify(settings).ok
    pull(settings, tmp_path / "pulled.sqlite")
    assert "n" in dump_file(tmp_path / "pulled.sqlite")
