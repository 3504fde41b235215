"""The replica engine through the sqlite3-compatible API, on the folder remote."""

from __future__ import annotations

import os
import sqlite3
import threading

import pytest

import lambdalite
from tests.engine.conftest import Instance


def test_commit_is_visible_to_another_instance(instance: Instance) -> None:
    a, b = instance("a"), instance("b")
    a.execute("CREATE TABLE t(x)")
    a.execute("INSERT INTO t VALUES (1)")
    a.commit()
    assert b.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_uncommitted_write_is_not_published(instance: Instance) -> None:
    a, b = instance("a"), instance("b")
    a.execute("CREATE TABLE t(x)")
    a.execute("INSERT INTO t VALUES (1)")
    assert b.execute("SELECT count(*) FROM t").fetchone() == (0,)
    a.rollback()
    assert a.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_conflict_leaves_no_trace(instance: Instance) -> None:
    a, b = instance("a"), instance("b")
    a.execute("CREATE TABLE t(x)")
    a.execute("BEGIN")
    a.execute("INSERT INTO t VALUES ('from a')")
    b.execute("INSERT INTO t VALUES ('from b')")
    b.commit()
    with pytest.raises(lambdalite.ConflictError):
        a.commit()
    assert isinstance(lambdalite.ConflictError("x"), sqlite3.OperationalError)
    assert not a.in_transaction
    assert a.execute("SELECT x FROM t").fetchall() == [("from b",)]
    c = instance("c")
    assert c.execute("SELECT x FROM t").fetchall() == [("from b",)]
    assert a.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # and the retried transaction goes through
    a.execute("INSERT INTO t VALUES ('from a')")
    a.commit()
    assert sorted(c.execute("SELECT x FROM t").fetchall()) == [("from a",), ("from b",)]


def test_warm_connection_sees_pulled_pages_and_schema(instance: Instance) -> None:
    """DESIGN §3 pitfall: a warm page cache must not hide pages pulled behind SQLite's back."""
    a, b = instance("a"), instance("b")
    a.execute("CREATE TABLE t(x)")
    a.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(500)])
    a.commit()
    # b warms its page cache, including the schema
    assert b.execute("SELECT count(*), sum(x) FROM t").fetchone() == (500, sum(range(500)))
    a.execute("UPDATE t SET x = x + 1")
    a.execute("CREATE TABLE u(y)")
    a.execute("INSERT INTO u VALUES ('new table')")
    a.commit()
    assert b.execute("SELECT count(*), sum(x) FROM t").fetchone() == (500, sum(range(1, 501)))
    assert b.execute("SELECT y FROM u").fetchall() == [("new table",)]
    # and b can write on top without writing a stale page 1 back
    b.execute("INSERT INTO u VALUES ('from b')")
    b.commit()
    assert a.execute("SELECT count(*) FROM u").fetchone() == (2,)
    assert a.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_read_on_unchanged_database_costs_one_conditional_request(instance: Instance) -> None:
    a = instance("a")
    a.execute("CREATE TABLE t(x)")
    a.execute("INSERT INTO t VALUES (1)")
    a.commit()
    before = a.replica.stats.copy()
    a.execute("SELECT * FROM t").fetchall()
    cost = a.replica.stats - before
    assert (cost.requests, cost.not_modified, cost.bytes_down) == (1, 1, 0)


def test_max_staleness_skips_the_round_trip(instance: Instance) -> None:
    a = instance("a", max_staleness=60)
    a.execute("CREATE TABLE t(x)")
    a.commit()
    before = a.replica.stats.copy()
    for _ in range(5):
        a.execute("SELECT * FROM t").fetchall()
    assert (a.replica.stats - before).requests == 0


def test_small_write_is_one_put(instance: Instance) -> None:
    a = instance("a")
    a.execute("CREATE TABLE t(x)")
    a.commit()
    before = a.replica.stats.copy()
    a.execute("BEGIN")
    a.execute("INSERT INTO t VALUES (1)")  # the write lease is free: no claim
    at_commit = a.replica.stats.copy()
    a.commit()
    cost = a.replica.stats - at_commit
    assert (cost.puts, cost.gets) == (1, 0)  # the manifest, with the delta inline
    whole = a.replica.stats - before
    assert (whole.gets, whole.puts) == (1, 1)  # the conditional GET at BEGIN, the publish


def test_isolation_level_none_autocommits_each_write(instance: Instance) -> None:
    a, b = instance("a", isolation_level=None), instance("b")
    a.execute("CREATE TABLE t(x)")
    a.execute("INSERT INTO t VALUES (1)")
    assert not a.in_transaction
    assert b.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_legacy_mode_opens_transaction_at_first_dml(instance: Instance) -> None:
    a = instance("a")
    a.execute("CREATE TABLE t(x)")
    assert not a.in_transaction  # DDL commits by itself, as in the sqlite3 module
    a.execute("INSERT INTO t VALUES (1)")
    assert a.in_transaction
    a.commit()
    assert not a.in_transaction


def test_context_manager_commits_and_rolls_back(instance: Instance) -> None:
    a, b = instance("a"), instance("b")
    a.execute("CREATE TABLE t(x)")
    with a:
        a.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(ZeroDivisionError), a:
        a.execute("INSERT INTO t VALUES (2)")
        raise ZeroDivisionError
    assert b.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_savepoints_and_release(instance: Instance) -> None:
    a, b = instance("a", isolation_level=None), instance("b")
    a.execute("CREATE TABLE t(x)")
    a.execute("SAVEPOINT outer_sp")
    a.execute("INSERT INTO t VALUES (1)")
    a.execute("SAVEPOINT inner_sp")
    a.execute("INSERT INTO t VALUES (2)")
    a.execute("ROLLBACK TO inner_sp")
    a.execute("RELEASE inner_sp")
    assert a.in_transaction
    a.execute("RELEASE outer_sp")  # ends the transaction: published
    assert not a.in_transaction
    assert b.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_executescript_is_one_transaction(instance: Instance) -> None:
    a, b = instance("a"), instance("b")
    before = a.replica.stats.copy()
    a.executescript(
        """
        CREATE TABLE t(x);  -- a comment; with a semicolon
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END;
        INSERT INTO t VALUES ('a;b');
        INSERT INTO t VALUES (2);
        """
    )
    assert (a.replica.stats - before).puts == 2  # the write lease, then one publish
    assert a.replica.version == 1  # one version
    assert b.execute("SELECT x FROM t ORDER BY rowid").fetchall() == [("a;b",), (2,)]
    with pytest.raises(sqlite3.OperationalError):
        a.executescript("INSERT INTO t VALUES (3); INSERT INTO nope VALUES (4);")
    assert b.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_row_factory_and_cursor_api(instance: Instance) -> None:
    a = instance("a")
    a.execute("CREATE TABLE t(x, y)")
    cur = a.cursor()
    cur.executemany("INSERT INTO t VALUES (?, ?)", [(1, "a"), (2, "b"), (3, "c")])
    assert cur.rowcount == 3
    a.commit()
    a.row_factory = sqlite3.Row
    row = a.execute("SELECT x, y FROM t WHERE x = ?", (2,)).fetchone()
    assert row["y"] == "b"
    cur = a.execute("SELECT x FROM t ORDER BY x")
    assert [r[0] for r in cur.fetchmany(2)] == [1, 2]
    assert [r[0] for r in cur] == [3]
    assert cur.description[0][0] == "x"
    assert a.total_changes >= 3


def test_threads_share_one_local_copy(instance: Instance, tmp_path: object) -> None:
    setup = instance("shared", check_same_thread=False)
    setup.execute("CREATE TABLE c(n)")
    setup.execute("INSERT INTO c VALUES (0)")
    setup.commit()
    errors: list[BaseException] = []

    @lambdalite.retry_on_conflict(attempts=200, base_delay=0.001)
    def bump(conn: lambdalite.Connection) -> None:
        try:
            conn.execute("BEGIN IMMEDIATE")
            (n,) = conn.execute("SELECT n FROM c").fetchone()
            conn.execute("UPDATE c SET n = ?", (n + 1,))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def work() -> None:
        conn = instance("shared", isolation_level=None, timeout=30)
        try:
            for _ in range(20):
                bump(conn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert instance("check").execute("SELECT n FROM c").fetchone() == (80,)


def test_closed_connection_refuses(instance: Instance) -> None:
    a = instance("a")
    a.close()
    with pytest.raises(sqlite3.ProgrammingError):
        a.execute("SELECT 1")


def test_vacuum_publishes(instance: Instance) -> None:
    a, b = instance("a"), instance("b")
    a.execute("CREATE TABLE t(x)")
    a.executemany("INSERT INTO t VALUES (?)", [(b"x" * 1000,) for _ in range(200)])
    a.commit()
    a.execute("DELETE FROM t")
    a.commit()
    v = a.replica.version
    a.execute("VACUUM")
    assert a.replica.version == v + 1
    assert b.execute("SELECT count(*) FROM t").fetchone() == (0,)
    assert b.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_journal_mode_change_is_refused(instance: Instance) -> None:
    a = instance("a")
    with pytest.raises(sqlite3.OperationalError, match="WAL"):
        a.execute("PRAGMA journal_mode=DELETE")


def test_statements_without_rows_do_not_pin_the_snapshot(instance: Instance) -> None:
    """An empty SELECT or a setting PRAGMA must not keep the connection from refreshing."""
    a, b = instance("a", isolation_level=None), instance("b")
    a.execute("CREATE TABLE t(x)")
    assert b.execute("SELECT x FROM t").fetchall() == []
    b.execute("PRAGMA foreign_keys = ON")
    a.execute("INSERT INTO t VALUES (1)")
    assert b.execute("SELECT x FROM t").fetchall() == [(1,)]
    with pytest.raises(sqlite3.OperationalError):
        b.execute("SELECT nope FROM t")
    a.execute("INSERT INTO t VALUES (2)")
    assert b.execute("SELECT count(*) FROM t").fetchone() == (2,)


def test_warm_connection_survives_growth_shrink_and_snapshot_pulls(instance: Instance) -> None:
    """Pulled pages that change the file's size must not leave SQLite trusting an old size."""
    a = instance(
        "a",
        isolation_level=None,
        compact_after_deltas=2,
        compact_after_bytes=1,
        inline_delta_max=100,
    )
    b = instance("b")
    a.execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB)")
    for n in (1, 9, 60, 3):  # grows; every second commit compacts (b pulls a snapshot)
        a.execute("BEGIN")
        a.executemany(
            "INSERT OR REPLACE INTO kv VALUES (?, ?)", [(j, bytes([j]) * 700) for j in range(n)]
        )
        a.commit()
        assert b.execute("SELECT count(*) FROM kv").fetchone() == (max(n, 60 if n == 3 else n),)
        assert b.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    a.execute("DELETE FROM kv")
    a.execute("VACUUM")  # shrinks the file
    assert b.execute("SELECT count(*) FROM kv").fetchone() == (0,)
    assert b.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert b.execute("PRAGMA page_count").fetchone() == a.execute("PRAGMA page_count").fetchone()


def test_reader_behind_a_compaction_catches_up_from_the_archive(instance: Instance) -> None:
    """A compaction must not force an instance a version behind to pull the whole snapshot."""
    a = instance("a", isolation_level=None, compact_after_bytes=1)
    b = instance("b")
    a.execute("CREATE TABLE t(x)")
    a.executemany("INSERT INTO t VALUES (?)", [(os.urandom(1000),) for _ in range(300)])
    assert b.execute("SELECT count(*) FROM t").fetchone() == (300,)  # b holds version 2
    a.executemany("INSERT INTO t VALUES (?)", [(os.urandom(1000),) for _ in range(100)])
    m = a.replica.manifest
    assert (m.version, m.deltas, m.snapshot.version) == (3, (), 3)  # version 3 compacted
    before = b.replica.stats.copy()
    assert b.execute("SELECT count(*) FROM t").fetchone() == (400,)
    cost = b.replica.stats - before
    assert cost.gets == 3  # the manifest, the archive it names, the delta object
    assert cost.bytes_down < m.snapshot.size / 2


def test_rollovers_keep_the_manifest_short_and_readers_walk_the_archives(
    instance: Instance,
) -> None:
    """Many small commits: the manifest is archived every few deltas, never snapshotted."""
    a = instance("a", isolation_level=None, compact_after_deltas=3)
    behind = instance("behind")
    a.execute("CREATE TABLE t(x)")
    assert behind.execute("SELECT count(*) FROM t").fetchone() == (0,)
    for i in range(10):
        a.execute("INSERT INTO t VALUES (?)", (i,))
    m = a.replica.manifest
    assert m.snapshot is None and m.base is not None  # rolled over, no snapshot needed
    assert len(m.deltas) < 3
    # an instance ten versions behind walks the archived segments (small GETs)
    assert behind.execute("SELECT count(*) FROM t").fetchone() == (10,)
    # and a cold instance rebuilds from nothing through every segment
    cold = instance("cold")
    assert cold.execute("SELECT sum(x) FROM t").fetchone() == (45,)
    assert cold.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_snapshot_cost_is_proportional_to_the_commits(instance: Instance) -> None:
    """A big database is not re-uploaded every few commits: only once deltas reach 1/4 of it."""
    a = instance("a", isolation_level=None, compact_after_deltas=2, compact_after_bytes=1)
    a.execute("CREATE TABLE t(x)")
    a.execute("BEGIN")
    a.executemany("INSERT INTO t VALUES (?)", [(os.urandom(1000),) for _ in range(2000)])
    a.execute("COMMIT")
    a.execute("INSERT INTO t VALUES (1)")  # deltas since the (absent) snapshot: a snapshot now
    first = a.replica.manifest.snapshot
    assert first is not None
    for i in range(12):
        a.execute("INSERT INTO t VALUES (?)", (i,))
    assert a.replica.manifest.snapshot == first  # 12 small commits did not pay for a new one
    assert a.replica.manifest.base is not None


def test_insert_returning_in_autocommit_mode(instance: Instance) -> None:
    a, b = instance("a", isolation_level=None), instance("b")
    a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, x)")
    cur = a.execute("INSERT INTO t(x) VALUES (?) RETURNING id, x", ("hello",))
    assert cur.fetchall() == [(1, "hello")]
    assert b.execute("SELECT x FROM t").fetchall() == [("hello",)]


def test_limits(instance: Instance) -> None:
    a = instance("a")
    old = a.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1000)
    assert a.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) == 1000
    assert old > 1000


def test_temp_table_shadowing_is_reclassified(instance: Instance) -> None:
    """A statement that wrote a TEMP table must be classified again once the TEMP table is gone."""
    a, b = instance("a", isolation_level=None), instance("b")
    a.execute("CREATE TABLE t(x)")
    a.execute("CREATE TEMP TABLE t(x)")
    a.execute("INSERT INTO t VALUES (?)", (1,))  # the TEMP table: nothing to publish
    assert b.execute("SELECT count(*) FROM t").fetchone() == (0,)
    a.execute("DROP TABLE temp.t")
    a.execute("INSERT INTO t VALUES (?)", (2,))  # same text, now the main table: published
    assert b.execute("SELECT x FROM t").fetchall() == [(2,)]


def test_statements_sqlite_cannot_explain_still_run(instance: Instance) -> None:
    a = instance("a")
    assert a.execute('PRAGMA temp.table_info("x")').fetchall() == []


def test_cursor_keeps_counts_after_close(instance: Instance) -> None:
    a = instance("a", isolation_level=None)
    a.execute("CREATE TABLE t(x)")
    cur = a.cursor()
    cur.execute("INSERT INTO t VALUES (1)")
    cur.close()
    assert (cur.lastrowid, cur.rowcount) == (1, 1)


def test_statements_that_read_nothing_of_the_database_cost_no_round_trip(
    instance: Instance,
) -> None:
    """Connection setup (Django runs these on every connection) never waits for the remote."""
    a = instance("a", isolation_level=None)
    a.execute("CREATE TABLE t(x)")
    before = a.replica.stats.requests
    for sql in (
        "SELECT 1",
        "PRAGMA foreign_keys = ON",
        "PRAGMA legacy_alter_table = OFF",
        "SELECT sqlite_compileoption_used(?)",
        "CREATE TEMP TABLE IF NOT EXISTS scratch(y)",
    ):
        a.execute(sql, ("ENABLE_FTS5",) if "?" in sql else ())
    assert a.replica.stats.requests == before
    a.execute("SELECT count(*) FROM t")  # this one reads the database: one conditional GET
    assert a.replica.stats.requests == before + 1
