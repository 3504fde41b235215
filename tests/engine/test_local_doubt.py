"""One instance's bad local state never reaches the remote (DESIGN §2.6, issue 8 part B).

Each test breaks a local copy the way real apps and machines do (SQLite rolling a
transaction back by itself, a damaged page, a deleted or truncated cache folder, a
change made behind lambdalite's back, statements before the remote exists) and
checks the structural rule: a delta is published only from a base that verifiably
is the version it names; on doubt the copy is discarded and pulled again, and every
other instance keeps reading a correct database.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

import lambdalite
from lambdalite.admin import verify
from lambdalite.config import Settings
from lambdalite.replica import format as fmt
from lambdalite.storage import open_storage
from tests.engine.conftest import Instance


def _rows(conn: lambdalite.Connection, table: str = "t") -> list[tuple[object, ...]]:
    return sorted(conn.execute(f"SELECT * FROM {table}").fetchall())


def _check_remote(remote: str, tmp_path: Path, name: str) -> list[tuple[object, ...]]:
    """A cold instance reads the remote (integrity checked), and `verify` finds it clean."""
    cold = lambdalite.connect(remote, cache_dir=str(tmp_path / f"cold-{name}"))
    try:
        assert cold.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = _rows(cold)
    finally:
        cold.close()
    report = verify(Settings.build(remote, {"cache_dir": str(tmp_path / "verify")}))
    assert report.ok, report
    return rows


def _manifest(remote: str) -> tuple[str, int, str]:
    """What the remote publishes: (lineage, version, checksum); the write lease may change."""
    blob = open_storage(remote).get("manifest")
    assert blob is not None
    m = fmt.decode_manifest(blob.data)
    return m.lineage, m.version, m.checksum


# ---------------------------------------------------------------------------- item 6


def _stock_and_ours(
    instance: Instance, tmp_path: Path, script: list[str], isolation_level: str | None
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], lambdalite.Connection]:
    """Run ``script`` (errors ignored) on stock sqlite3 and on lambdalite; their rows."""
    stock = sqlite3.connect(tmp_path / "stock.db", isolation_level=isolation_level)
    ours = instance("a", isolation_level=isolation_level)
    for conn in (stock, ours):
        for sql in script:
            with contextlib.suppress(sqlite3.Error):
                conn.execute(sql)
            if sql == "-- commit":
                conn.commit()
        conn.commit()
    stock_rows = sorted(stock.execute("SELECT * FROM t").fetchall())
    stock.close()
    return stock_rows, _rows(ours), ours


SELF_ROLLBACKS = {
    "insert or rollback": "INSERT OR ROLLBACK INTO t VALUES (1, 'again')",
    "raise(rollback) in a trigger": "INSERT INTO t VALUES (99, 'trigger says no')",
}


@pytest.mark.parametrize("isolation_level", ["", None], ids=["legacy", "autocommit"])
@pytest.mark.parametrize("how", list(SELF_ROLLBACKS))
def test_a_transaction_sqlite_rolled_back_by_itself_ends_as_in_stock_sqlite(
    instance: Instance, tmp_path: Path, remote: str, how: str, isolation_level: str | None
) -> None:
    script = [
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
        "CREATE TRIGGER no99 BEFORE INSERT ON t WHEN new.id = 99 "
        "BEGIN SELECT RAISE(ROLLBACK, 'no 99'); END",
        "INSERT INTO t VALUES (1, 'first')",
        "-- commit",
        "BEGIN",
        "INSERT INTO t VALUES (2, 'rolled back with the transaction')",
        SELF_ROLLBACKS[how],
        "INSERT INTO t VALUES (3, 'after the rollback')",
        "INSERT INTO t VALUES (4, 'and one more')",
    ]
    stock_rows, our_rows, ours = _stock_and_ours(instance, tmp_path, script, isolation_level)
    assert our_rows == stock_rows
    assert not ours.in_transaction
    # what this instance sees is what every other instance sees: nothing local only
    assert _check_remote(remote, tmp_path, "after") == stock_rows
    ours.execute("INSERT INTO t VALUES (5, 'next commit')")
    ours.commit()
    assert _check_remote(remote, tmp_path, "next") == [*stock_rows, (5, "next commit")]


def test_an_interrupted_write_rolls_back_and_the_connection_goes_on(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    conn = instance("a", isolation_level=None)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t VALUES (1, 'kept')")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (2, 'lost with its transaction')")
    conn.set_progress_handler(lambda: 1, 1)  # interrupt the next statement at once
    with pytest.raises(sqlite3.OperationalError, match="interrupt"):
        conn.execute("UPDATE t SET v = 'never'")
    conn.set_progress_handler(None, 1)
    assert not conn.in_transaction
    conn.commit()  # nothing to commit, as in sqlite3: no error
    conn.execute("INSERT INTO t VALUES (3, 'after')")
    assert _check_remote(remote, tmp_path, "x") == [(1, "kept"), (3, "after")]


# ---------------------------------------------------------------------------- item 8


def _page_of_row(conn: lambdalite.Connection) -> int:
    """The page of table t's only leaf (its root: the table is small)."""
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 't'").fetchone()
    return int(root)


def test_a_damaged_page_is_never_published(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    a = instance("a", isolation_level=None)
    a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    a.execute("INSERT INTO t VALUES (1, 'x')")
    page = _page_of_row(a)
    published = _manifest(remote)
    a.close()
    # a disk error or a stray write changes bytes in the free space of the table's page
    replica = a.replica
    with open(replica.db_path, "r+b") as f:
        f.seek((page - 1) * 4096 + 2000)
        f.write(b"\xff" * 16)
    a = instance("a", isolation_level=None)  # same process, same warm local copy
    with pytest.raises(lambdalite.LocalCopyError, match="damaged"):
        a.execute("UPDATE t SET v = 'y' WHERE id = 1")
    assert _manifest(remote) == published  # nothing reached the remote
    assert _check_remote(remote, tmp_path, "b") == [(1, "x")]
    a.execute("UPDATE t SET v = 'y' WHERE id = 1")  # the retry runs on a fresh pull
    assert _check_remote(remote, tmp_path, "c") == [(1, "y")]
    assert a.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# ---------------------------------------------------------------------------- items 9, 11


def test_a_deleted_cache_folder_never_turns_into_a_commit_that_published_nothing(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    a = instance("a", isolation_level=None)
    a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    a.execute("INSERT INTO t VALUES (1, 'before')")
    shutil.rmtree(tmp_path / "cache-a")  # a tmp cleaner, an operator
    for attempt in range(3):
        try:
            a.execute("INSERT INTO t VALUES (2, 'after')")
            break
        except lambdalite.LocalCopyError:
            assert attempt < 2
    # it returned: so it is durable, and every instance sees it
    assert _check_remote(remote, tmp_path, "x") == [(1, "before"), (2, "after")]
    assert _rows(a) == [(1, "before"), (2, "after")]
    assert os.path.isdir(tmp_path / "cache-a")  # the folder was taken again


def test_deleted_cache_folder_in_a_transaction_fails_the_commit_cleanly(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    a = instance("a", isolation_level=None)
    a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    a.execute("BEGIN")
    a.execute("INSERT INTO t VALUES (1, 'in flight')")
    shutil.rmtree(tmp_path / "cache-a")
    with pytest.raises(lambdalite.LocalCopyError):
        a.commit()
    assert not a.in_transaction
    assert _check_remote(remote, tmp_path, "x") == []
    a.execute("INSERT INTO t VALUES (1, 'retried')")
    assert _check_remote(remote, tmp_path, "y") == [(1, "retried")]


def test_a_truncated_local_copy_heals_in_the_running_process(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    a = instance("a", isolation_level=None)
    a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    a.executemany("INSERT INTO t VALUES (?, ?)", [(i, "x" * 500) for i in range(200)])
    expected = _rows(a)
    a.close()
    path = a.replica.db_path
    os.truncate(path, os.path.getsize(path) // 2)
    a = instance("a", isolation_level=None)  # a new connection of the same process: cold cache
    assert _rows(a) == expected  # no restart needed
    assert a.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    a.execute("INSERT INTO t VALUES (1000, 'after')")
    assert _check_remote(remote, tmp_path, "x") == [*expected, (1000, "after")]


def test_a_commit_made_behind_lambdalites_back_is_never_published(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    a = instance("a", isolation_level=None)
    a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    a.execute("INSERT INTO t VALUES (1, 'published')")
    other = sqlite3.connect(a.replica.db_path)  # another library opens the local copy
    other.execute("INSERT INTO t VALUES (666, 'never published')")
    other.commit()
    other.close()
    a.execute("INSERT INTO t VALUES (2, 'published too')")
    expected = [(1, "published"), (2, "published too")]
    assert _check_remote(remote, tmp_path, "x") == expected
    assert _rows(a) == expected


# ---------------------------------------------------------------------------- items 10, 12


def test_statements_before_the_remote_exists_do_not_poison_the_first_pull(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    early = instance("early")
    assert early.execute("SELECT 1").fetchone() == (1,)
    early.execute("CREATE TEMP TABLE scratch(x)")
    early.execute("INSERT INTO scratch VALUES (1)")
    early.commit()
    creator = instance("creator", isolation_level=None)
    creator.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    creator.execute("INSERT INTO t VALUES (1, 'created elsewhere')")
    assert _rows(early) == [(1, "created elsewhere")]
    early.execute("INSERT INTO t VALUES (2, 'from early')")
    early.commit()
    assert _check_remote(remote, tmp_path, "x") == [(1, "created elsewhere"), (2, "from early")]


def test_a_single_instance_creates_the_first_version_under_an_object_lock(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    a = instance("a", isolation_level=None, lock="object")
    a.execute("BEGIN")
    a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    a.execute("INSERT INTO t VALUES (1, 'first')")
    a.commit()
    assert _check_remote(remote, tmp_path, "x") == [(1, "first")]


@pytest.mark.parametrize("mode", ["DEFERRED", "IMMEDIATE"])
def test_instances_starting_together_on_an_empty_remote_all_get_through(
    instance: Instance, tmp_path: Path, remote: str, mode: str
) -> None:
    """Three instances race to create the database (a fleet starting before migrations)."""
    errors: list[BaseException] = []
    seen: list[int] = []

    def migrate(n: int) -> None:
        conn = instance(f"i{n}", isolation_level=None, lock="object", transaction_mode=mode)
        try:
            for attempt in lambdalite.retrying(attempts=50):
                with attempt:
                    conn.execute("BEGIN")
                    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
                    conn.execute("INSERT INTO t VALUES (?, 'started')", (n,))
                    conn.commit()
            for attempt in lambdalite.retrying(attempts=50):
                with attempt:  # every instance reads on, none is stuck on a bad base
                    seen.append(len(_rows(conn)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=migrate, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(seen) == 3
    assert _check_remote(remote, tmp_path, "x") == [(0, "started"), (1, "started"), (2, "started")]
