"""gc keeps what restores within the retention window and deletes only the rest."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from lambdalite.admin import gc, list_versions, load_history, pull, restore, verify
from lambdalite.admin.gc import ORPHAN_GRACE
from lambdalite.config import Settings
from lambdalite.storage import open_storage
from tests.admin.conftest import LAYOUTS, BuildHistory, Built, Instance, dump_file

DAY = 86400.0


def _objects(root: Path) -> set[str]:
    return {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and ".lambdalite" not in p.parts
    }


def _two_phases(build_history: BuildHistory) -> tuple[Built, float]:
    """Versions 1-6 (archives at 3 and 6), then a pause (the returned time), then 7-12."""
    built = build_history(6, inline_delta_max=0)
    time.sleep(0.05)
    middle = time.time()
    time.sleep(0.05)
    for i in range(5, 11):
        built.step(i)
    assert built.latest == 12
    return built, middle


def test_gc_keeps_everything_within_retention(
    build_history: BuildHistory, settings: Settings, remote_root: Path
) -> None:
    _two_phases(build_history)
    before = _objects(remote_root)
    for dry_run in (True, False):
        report = gc(settings, dry_run=dry_run)  # default retention: 7 days
        assert report.deleted == []
        assert len(report.kept) == 5  # the manifest and the archives at 3, 6, 9, 12
    assert _objects(remote_root) == before


def test_gc_deletes_what_only_expired_archives_reach(
    build_history: BuildHistory, settings: Settings, remote_root: Path, tmp_path: Path
) -> None:
    built, middle = _two_phases(build_history)
    settings = settings.replace(retention=DAY)
    history = load_history(open_storage(settings.remote))
    by_version = {r.manifest.version: r for r in history.records[1:]}
    expired = [by_version[6], by_version[3]]
    doomed = {r.key for r in expired} | by_version[3].object_keys() | by_version[6].object_keys()
    doomed -= by_version[9].object_keys()  # snapshot 6 is still needed by archive 9
    before = _objects(remote_root)

    dry = gc(settings, now=middle + DAY)  # a dry run by default
    assert {item.key for item in dry.deleted} == doomed
    assert [item.key for item in dry.deleted][:2] == [r.key for r in expired]  # archives first
    assert _objects(remote_root) == before

    report = gc(settings, dry_run=False, now=middle + DAY)
    assert {item.key for item in report.deleted} == doomed
    assert _objects(remote_root) == before - doomed
    assert report.to_dict()["deleted_bytes"] == sum(i.size for i in report.deleted) > 0

    # What restores to any time after the cutoff is still there, and intact.
    versions = [v.version for v in list_versions(settings)]
    assert versions == list(range(6, 13))
    for version in versions:
        out = tmp_path / f"v{version}.sqlite"
        restore(settings, to_version=version, output=out)
        assert dump_file(out) == built.model[version]
    out = tmp_path / "at-cutoff.sqlite"
    assert restore(settings, to_time=middle, output=out).restored_version == 6
    report_v = verify(settings)
    assert report_v.ok
    assert any("no longer exists" in note for note in report_v.notes)
    assert gc(settings, dry_run=False, now=middle + DAY).deleted == []  # idempotent


def test_gc_never_deletes_what_the_manifest_reaches(
    build_history: BuildHistory, settings: Settings, remote_root: Path, tmp_path: Path
) -> None:
    built = build_history(8, inline_delta_max=0)
    settings = settings.replace(retention=0)
    gc(settings, dry_run=False, now=time.time() + 10 * DAY)
    history = load_history(open_storage(settings.remote))
    assert len(history.records) == 1
    assert _objects(remote_root) == {"manifest"} | history.current.object_keys()
    assert verify(settings).ok
    out = tmp_path / "latest.sqlite"
    restore(settings, to_version=8, output=out)
    assert dump_file(out) == built.model[8]
    assert [v.version for v in list_versions(settings)] == [6, 7, 8]


def test_gc_deletes_old_orphans_only(
    build_history: BuildHistory, settings: Settings, remote_root: Path
) -> None:
    build_history(2)
    settings = settings.replace(retention=DAY)
    now = time.time()
    old, fresh, grace = (
        "deltas/00000000000000000099-0123456789abcdef",
        "snapshots/00000000000000000099-fedcba9876543210",
        "manifests/00000000000000000099-00000000000000aa",
    )
    foreign = "snapshots/README"
    for key in (old, fresh, grace, foreign):
        (remote_root / key).parent.mkdir(parents=True, exist_ok=True)
        (remote_root / key).write_bytes(b"x")
    for key, age in ((old, 2 * DAY), (foreign, 2 * DAY), (grace, ORPHAN_GRACE / 2)):
        os.utime(remote_root / key, (now - age, now - age))
    assert verify(settings).unreferenced == sorted([old, fresh, grace, foreign])
    report = gc(settings.replace(retention=0), dry_run=False, now=now)
    assert [i.key for i in report.deleted] == [old]  # grace protects the young one
    assert (remote_root / fresh).exists() and (remote_root / foreign).exists()
    assert report.deleted[0].reason.startswith("orphan")


def test_gc_refuses_a_broken_chain(
    build_history: BuildHistory, settings: Settings, remote_root: Path
) -> None:
    build_history(8)
    archive = load_history(open_storage(settings.remote)).records[1].key
    (remote_root / archive).write_bytes(b"not a manifest")
    before = _objects(remote_root)
    with pytest.raises(Exception, match="gc refuses"):
        gc(settings.replace(retention=0), dry_run=False, now=time.time() + DAY)
    assert _objects(remote_root) == before


def test_gc_while_a_writer_commits_and_compacts(
    instance: Instance, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.replace(retention=0)
    errors: list[BaseException] = []
    started, done = threading.Event(), threading.Event()

    def write() -> None:
        try:
            conn = instance("busy", inline_delta_max=0, **LAYOUTS["mixed"].options)
            try:
                conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
                started.set()
                for i in range(30):
                    conn.execute("INSERT INTO t(v) VALUES (?)", (f"v{i}",))
                    conn.commit()
            finally:
                conn.close()  # in its own thread
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            started.set()
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    started.wait()  # the remote exists (FolderStorage races on the creation of its root)
    rounds = 0
    while not done.is_set() or rounds == 0:
        gc(settings, dry_run=False)
        rounds += 1
    writer.join()
    assert not errors, errors
    assert rounds > 0
    gc(settings, dry_run=False)
    assert verify(settings).ok
    out = tmp_path / "latest.sqlite"
    pull(settings, out)
    assert [r[1] for r in dump_file(out)["t"]] == [f"v{i}" for i in range(30)]
