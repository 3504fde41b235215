"""Replica mode with a lock (DESIGN §5): the lock saves wasted work; the storage still fences."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

import lambdalite
from tests.engine import workers
from tests.engine.conftest import Instance


def test_deferred_transaction_fails_at_first_write_when_remote_moved(instance: Instance) -> None:
    a = instance("a", lock="object", isolation_level=None)
    b = instance("b", lock="object", isolation_level=None)
    a.execute("CREATE TABLE t(x)")
    a.execute("BEGIN")
    assert a.execute("SELECT count(*) FROM t").fetchone() == (0,)
    b.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(lambdalite.ConflictError):
        a.execute("INSERT INTO t VALUES (2)")  # right here, not at commit
    assert not a.in_transaction  # rolled back: ready for the retry
    a.execute("INSERT INTO t VALUES (2)")
    assert sorted(b.execute("SELECT x FROM t").fetchall()) == [(1,), (2,)]


def test_read_only_transactions_never_lock_or_push(instance: Instance, tmp_path: Path) -> None:
    a = instance("a", lock="object", isolation_level=None)
    a.execute("CREATE TABLE t(x)")
    before = a.replica.stats.copy()
    a.execute("BEGIN")
    a.execute("SELECT * FROM t").fetchall()
    a.execute("COMMIT")
    cost = a.replica.stats - before
    assert (cost.puts, cost.deletes) == (0, 0)
    assert a.replica.lock.inspect() is None


def test_lock_is_released_after_commit_and_rollback(instance: Instance) -> None:
    a = instance("a", lock="object", isolation_level=None)
    a.execute("CREATE TABLE t(x)")
    assert a.replica.lock.inspect() is None
    a.execute("BEGIN IMMEDIATE")
    assert a.replica.lock.inspect() is not None
    a.execute("ROLLBACK")
    assert a.replica.lock.inspect() is None


@pytest.mark.slow
@pytest.mark.parametrize("lock", ["object", "file"])
def test_immediate_transactions_never_conflict(tmp_path: Path, lock: str) -> None:
    remote = (tmp_path / "remote").as_uri()
    options = {
        "lock": lock,
        "transaction_mode": "IMMEDIATE",
        "timeout": 60,
        "lock_max_attempts": 100000,
    }
    setup = lambdalite.connect(remote, cache_dir=str(tmp_path / "setup"), **options)
    setup.execute("CREATE TABLE counter(n INTEGER)")
    setup.execute("INSERT INTO counter VALUES (0)")
    setup.commit()
    setup.close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = [
            pool.apply_async(workers.increment, (remote, str(tmp_path / f"i{i}"), 25, options))
            for i in range(4)
        ]
        conflicts = sum(r.get(timeout=600) for r in results)
    assert conflicts == 0
    check = lambdalite.connect(remote, cache_dir=str(tmp_path / "check"))
    assert check.execute("SELECT n FROM counter").fetchone() == (100,)
    check.close()
