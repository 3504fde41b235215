"""Operations that publish: in-place restore, import, compact."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import lambdalite
from lambdalite.admin import (
    DatabaseExistsError,
    NotADatabaseError,
    compact,
    import_database,
    list_versions,
    load_history,
    restore,
    verify,
)
from lambdalite.config import Settings
from lambdalite.errors import ConflictError, CorruptionError
from lambdalite.replica import format as fmt
from lambdalite.storage import open_storage
from lambdalite.storage.base import ProgressCallback
from tests.admin.conftest import BuildHistory, Instance, dump, dump_file


def _manifest(settings: Settings) -> fmt.Manifest:
    blob = open_storage(settings.remote).get(fmt.MANIFEST_KEY)
    assert blob is not None
    return fmt.decode_manifest(blob.data)


def test_in_place_restore_publishes_a_new_version(
    build_history: BuildHistory, instance: Instance, settings: Settings
) -> None:
    built = build_history(8, inline_delta_max=0)
    reader = instance("reader")
    assert dump(reader) == built.model[8]  # warm: its local copy is at version 8
    result = restore(settings, to_version=4, in_place=True)
    assert result.published_version == 9
    m = _manifest(settings)
    assert (m.version, m.deltas, m.extra["restored_from"]) == (9, (), 4)
    assert m.previous is not None and m.previous.startswith("manifests/")
    assert dump(reader) == built.model[4]
    # History is not rewritten: every old version is still restorable, plus the new one.
    assert [v.version for v in list_versions(settings)] == list(range(1, 10))
    # Writers carry on from the restored state.
    built.conn.execute("INSERT INTO t(v) VALUES ('after restore')")
    assert built.commit() == 10
    assert built.model[10]["t"][:-1] == built.model[4]["t"]
    assert dump(reader)["t"][-1][1] == "after restore"
    assert verify(settings).ok


def test_in_place_restore_conflicts_when_the_remote_moves(
    build_history: BuildHistory, settings: Settings, remote_root: Path
) -> None:
    built = build_history(4)

    @contextlib.contextmanager
    def commit_meanwhile(label: str, total: int) -> Iterator[ProgressCallback]:
        if label.startswith("downloading"):
            built.conn.execute("INSERT INTO t(v) VALUES ('meanwhile')")
            built.commit()
        yield lambda _n: None

    with pytest.raises(ConflictError, match="nothing was published"):
        restore(settings, to_version=2, in_place=True, progress=commit_meanwhile)
    m = _manifest(settings)
    assert m.version == 5 and m.extra == {}  # the commit, not the restore
    snapshots = {p.name for p in (remote_root / "snapshots").iterdir()}
    assert not any(name.startswith(f"{5:020d}") for name in snapshots)  # discarded


def _sqlite_file(path: Path, rows: int, *, wal: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO items(name) VALUES (?)", [(f"n{i}",) for i in range(rows)])
    conn.commit()
    return conn


def test_import_creates_a_readable_database(
    settings: Settings, instance: Instance, tmp_path: Path
) -> None:
    src = tmp_path / "app.sqlite"
    keep_open = _sqlite_file(src, 500, wal=True)  # its rows are still only in the -wal
    before = (src.read_bytes(), Path(f"{src}-wal").read_bytes())
    result = import_database(settings, src)
    assert (src.read_bytes(), Path(f"{src}-wal").read_bytes()) == before  # not checkpointed
    keep_open.close()
    assert result.version == 1 and result.replaced_version is None
    conn = instance("app")
    assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 500
    conn.execute("INSERT INTO items(name) VALUES ('new')")
    conn.commit()
    assert conn.replica.version == 2
    assert verify(settings).ok


def test_import_does_not_modify_the_source(settings: Settings, tmp_path: Path) -> None:
    src = tmp_path / "app.sqlite"
    _sqlite_file(src, 50).close()
    before = src.read_bytes()
    import_database(settings, src)
    assert src.read_bytes() == before
    assert not Path(f"{src}-wal").exists()


def test_import_refuses_to_overwrite_without_force(
    build_history: BuildHistory, settings: Settings, instance: Instance, tmp_path: Path
) -> None:
    built = build_history(5)
    src = tmp_path / "other.sqlite"
    _sqlite_file(src, 3).close()
    with pytest.raises(DatabaseExistsError, match="--force"):
        import_database(settings, src)
    assert _manifest(settings).version == 5
    old_lineage = _manifest(settings).lineage
    result = import_database(settings, src, force=True)
    assert result.replaced_version == 5 and result.archive is not None
    m = _manifest(settings)
    assert (m.version, m.previous) == (1, result.archive)
    assert m.lineage != old_lineage
    # An instance that held the old lineage switches to the imported database.
    assert dump(built.conn) == dump_file(src)
    # The old lineage is no longer listed (versions restart at 1), but it is kept.
    assert [v.version for v in list_versions(settings)] == [1]
    history = load_history(open_storage(settings.remote))
    assert history.records[1].manifest.lineage == old_lineage
    assert verify(settings).ok
    fresh = instance("fresh")
    assert fresh.execute("SELECT count(*) FROM items").fetchone()[0] == 3


@pytest.mark.parametrize("content", [b"", b"hello, not a database\n" * 20,
                                     b"SQLite format 3\0" + b"\xff" * 200])
def test_import_refuses_what_is_not_a_database(
    settings: Settings, tmp_path: Path, content: bytes
) -> None:
    src = tmp_path / "notes.txt"
    src.write_bytes(content)
    with pytest.raises(NotADatabaseError):
        import_database(settings, src)
    assert not (tmp_path / "remote" / "manifest").exists()


def test_import_refuses_a_database_failing_integrity_check(
    settings: Settings, tmp_path: Path
) -> None:
    src = tmp_path / "broken.sqlite"
    conn = _sqlite_file(src, 2000)
    conn.execute("CREATE INDEX items_name ON items(name)")
    conn.commit()
    conn.close()
    data = src.read_bytes()
    at = data.index(b"n1999")  # in the table (written before the index): the index disagrees
    src.write_bytes(data[:at] + b"z" + data[at + 1 :])
    with pytest.raises(NotADatabaseError, match="integrity_check"):
        import_database(settings, src)


def test_compact_folds_the_deltas(
    build_history: BuildHistory, settings: Settings, tmp_path: Path
) -> None:
    built = build_history(8, layout="rollovers", compact_after_deltas=100, inline_delta_max=0)
    assert len(_manifest(settings).deltas) == 8
    result = compact(settings)
    assert result.compacted and result.folded_deltas == 8
    m = _manifest(settings)
    assert (m.version, m.deltas) == (8, ())
    assert m.snapshot is not None and m.snapshot.key == result.snapshot
    assert m.previous is not None
    assert not compact(settings).compacted  # nothing left to fold
    for version in built.model:
        out = tmp_path / f"c{version}.sqlite"
        restore(settings, to_version=version, output=out)
        assert dump_file(out) == built.model[version]
    built.conn.execute("INSERT INTO t(v) VALUES ('after compact')")
    assert built.commit() == 9
    assert verify(settings).ok


def test_compact_loses_to_a_commit_without_harm(
    build_history: BuildHistory, settings: Settings
) -> None:
    built = build_history(4, layout="rollovers", compact_after_deltas=100)

    @contextlib.contextmanager
    def commit_meanwhile(label: str, total: int) -> Iterator[ProgressCallback]:
        if label.startswith("downloading"):
            built.conn.execute("INSERT INTO t(v) VALUES ('meanwhile')")
            built.commit()
        yield lambda _n: None

    result = compact(settings, progress=commit_meanwhile)
    assert not result.compacted and "commit landed" in result.reason
    assert _manifest(settings).version == 5
    assert verify(settings).ok


def test_lambdalite_connect_reads_an_import(settings: Settings, tmp_path: Path) -> None:
    src = tmp_path / "a.sqlite"
    _sqlite_file(src, 10).close()
    import_database(settings, src)
    conn = lambdalite.connect(settings.remote, cache_dir=str(tmp_path / "c"))
    try:
        assert conn.execute("SELECT name FROM items ORDER BY id LIMIT 1").fetchone() == ("n0",)
    finally:
        conn.close()


def test_a_corrupt_manifest_can_be_replaced_by_import_force(
    build_history: BuildHistory, settings: Settings, remote_root: Path, tmp_path: Path
) -> None:
    build_history(2)
    (remote_root / "manifest").write_bytes(b'{"format": "something else"}')
    report = verify(settings)
    assert not report.ok and report.problems[0].key == "manifest"
    with pytest.raises(CorruptionError, match="manifest"):
        list_versions(settings)
    src = tmp_path / "fresh.sqlite"
    _sqlite_file(src, 4).close()
    with pytest.raises(DatabaseExistsError, match="unreadable manifest"):
        import_database(settings, src)
    result = import_database(settings, src, force=True)
    assert result.replaced_version is None
    assert result.archive is not None and result.archive.startswith("manifests/unreadable-")
    assert (remote_root / result.archive).read_bytes() == b'{"format": "something else"}'
    assert _manifest(settings).previous is None
    assert verify(settings).ok
