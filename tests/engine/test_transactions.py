"""Transaction semantics compared with stock sqlite3 (issue 8 part C: items 13 to 15)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import lambdalite
from tests.engine.conftest import Instance


def _remote_rows(remote: str, tmp_path: Path, name: str) -> list[tuple[object, ...]]:
    cold = lambdalite.connect(remote, cache_dir=str(tmp_path / f"cold-{name}"))
    try:
        return sorted(cold.execute("SELECT * FROM t").fetchall())
    finally:
        cold.close()


# ---------------------------------------------------------------------------- item 13: autocommit


def test_autocommit_true_commits_every_statement(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    conn = instance("a", autocommit=True)
    assert conn.autocommit is True
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert not conn.in_transaction
    conn.rollback()  # does nothing in autocommit mode, as in sqlite3
    conn.close()  # nothing pending: nothing lost
    assert _remote_rows(remote, tmp_path, "a") == [(1,)]


def test_autocommit_set_after_connecting(instance: Instance, tmp_path: Path, remote: str) -> None:
    conn = instance("a")
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.in_transaction
    conn.autocommit = True  # commits the pending transaction
    assert not conn.in_transaction
    conn.execute("INSERT INTO t VALUES (2)")
    conn.close()
    assert _remote_rows(remote, tmp_path, "a") == [(1,), (2,)]


def test_autocommit_true_keeps_explicit_transactions(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    conn = instance("a", autocommit=True)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()  # a no-op in autocommit mode: the transaction is still open
    assert conn.in_transaction
    assert _remote_rows(remote, tmp_path, "a") == []
    conn.execute("COMMIT")
    assert _remote_rows(remote, tmp_path, "b") == [(1,)]


def test_autocommit_false_always_has_a_transaction(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    setup = instance("setup", autocommit=True)
    setup.execute("CREATE TABLE t(x)")
    conn = instance("a", autocommit=False)
    assert conn.in_transaction  # PEP 249: a transaction is open from the start
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    assert conn.in_transaction  # and again after commit()
    assert _remote_rows(remote, tmp_path, "a") == [(1,)]
    conn.execute("INSERT INTO t VALUES (2)")
    conn.rollback()
    conn.execute("INSERT INTO t VALUES (3)")
    conn.close()  # closing rolls back what was not committed
    assert _remote_rows(remote, tmp_path, "b") == [(1,)]
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        instance("b", autocommit=False).execute("BEGIN")


def test_autocommit_false_sees_other_instances_after_commit(instance: Instance) -> None:
    setup = instance("setup", autocommit=True)
    setup.execute("CREATE TABLE t(x)")
    reader = instance("reader", autocommit=False)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)
    setup.execute("INSERT INTO t VALUES (1)")
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (0,)  # its snapshot
    reader.commit()
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_autocommit_rejects_other_values(instance: Instance) -> None:
    with pytest.raises(ValueError, match="autocommit"):
        instance("a", autocommit="yes")
    conn = instance("b")
    with pytest.raises(ValueError, match="autocommit"):
        conn.autocommit = 2
    assert conn.autocommit == lambdalite.LEGACY_TRANSACTION_CONTROL


# ---------------------------------------------------------------------------- item 14: savepoints

SAVEPOINT_SCRIPT = [
    "CREATE TABLE t(x)",
    "SAVEPOINT sp",
    "INSERT INTO t VALUES (1)",
    "SAVEPOINT sp",
    "INSERT INTO t VALUES (2)",
    "RELEASE sp",  # the inner sp: the transaction goes on
    "INSERT INTO t VALUES (3)",
    "ROLLBACK TO sp",  # the outer sp: undoes 1, 2 and 3
    "INSERT INTO t VALUES (4)",
    "SAVEPOINT other",
    "INSERT INTO t VALUES (5)",
    "RELEASE sp",  # the outermost: commits
]


def test_savepoints_that_reuse_a_name_behave_as_in_sqlite(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    stock = sqlite3.connect(tmp_path / "stock.db", isolation_level=None)
    ours = instance("a", isolation_level=None)
    for conn in (stock, ours):
        states = []
        for sql in SAVEPOINT_SCRIPT:
            conn.execute(sql)
            states.append(conn.in_transaction)
        assert states == [False, *[True] * (len(SAVEPOINT_SCRIPT) - 2), False]
    expected = sorted(stock.execute("SELECT * FROM t").fetchall())
    assert expected == [(4,), (5,)]
    assert sorted(ours.execute("SELECT * FROM t").fetchall()) == expected
    assert _remote_rows(remote, tmp_path, "a") == expected


def test_nothing_is_published_before_the_outermost_release(
    instance: Instance, tmp_path: Path, remote: str
) -> None:
    conn = instance("a", isolation_level=None)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("SAVEPOINT sp")
    conn.execute("SAVEPOINT sp")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.execute("RELEASE sp")
    assert conn.in_transaction
    assert _remote_rows(remote, tmp_path, "a") == []
    conn.execute("RELEASE sp")
    assert _remote_rows(remote, tmp_path, "b") == [(1,)]


# ---------------------------------------------------------------------------- item 15: locking_mode


@pytest.mark.parametrize(
    "pragma", ["PRAGMA locking_mode=EXCLUSIVE", "PRAGMA main.locking_mode = exclusive"]
)
def test_exclusive_locking_mode_is_refused_and_leaves_the_connection_working(
    instance: Instance, pragma: str
) -> None:
    a, b = instance("a", isolation_level=None), instance("b", isolation_level=None)
    a.execute("CREATE TABLE t(x)")
    with pytest.raises(sqlite3.OperationalError, match="locking_mode=EXCLUSIVE"):
        a.execute(pragma)
    with pytest.raises(sqlite3.OperationalError, match="locking_mode=EXCLUSIVE"):
        a.execute(pragma)  # the same again (classified once, refused every time)
    assert a.execute("PRAGMA locking_mode").fetchone() == ("normal",)
    b.execute("INSERT INTO t VALUES (1)")  # another instance commits
    assert a.execute("SELECT x FROM t").fetchall() == [(1,)]
    a.execute("INSERT INTO t VALUES (2)")
    assert b.execute("SELECT count(*) FROM t").fetchone() == (2,)
