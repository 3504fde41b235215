"""The write lease kept in the manifest: writers wait their turn, fairly, fenced by the storage.

(issue 9 item 1 and 2). The default in replica mode (``lock="manifest"``).
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from pathlib import Path

import pytest

import lambdalite
from lambdalite.connection import Connection
from lambdalite.replica import format as fmt
from lambdalite.replica.engine import EngineOptions, Replica
from lambdalite.storage import open_storage
from tests.engine import workers
from tests.engine.conftest import Instance


def _manifest(remote: str) -> fmt.Manifest:
    blob = open_storage(remote).get("manifest")
    assert blob is not None
    return fmt.decode_manifest(blob.data)


def _counter(instance: Instance) -> lambdalite.Connection:
    setup = instance("setup", isolation_level=None)
    setup.execute("CREATE TABLE c(n INTEGER)")
    setup.execute("INSERT INTO c VALUES (0)")
    return setup


def test_the_manifest_lease_is_the_default(instance: Instance, remote: str) -> None:
    conn = _counter(instance)
    assert conn.replica.committer.lease is not None
    assert _manifest(remote).lease is None  # handed back with the commit: nobody waits


@pytest.mark.parametrize("mode", ["DEFERRED", "IMMEDIATE"])
def test_writers_wait_their_turn_instead_of_conflicting(instance: Instance, mode: str) -> None:
    """DEFERRED: transactions that start by writing; IMMEDIATE: read-modify-write."""
    setup = _counter(instance)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        conn = instance(f"w{i}", isolation_level=None, transaction_mode=mode, timeout=120)
        try:
            for _ in range(15):
                if mode == "IMMEDIATE":
                    conn.execute("BEGIN")
                    (n,) = conn.execute("SELECT n FROM c").fetchone()
                    conn.execute("UPDATE c SET n = ?", (n + 1,))
                    conn.commit()
                else:
                    conn.execute("UPDATE c SET n = n + 1")
        except BaseException as exc:  # no ConflictError, no LockTimeoutError: nothing
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert setup.execute("SELECT n FROM c").fetchone() == (60,)


def test_a_rollback_hands_the_lease_over_at_once(instance: Instance, remote: str) -> None:
    _counter(instance)
    a = instance("a", isolation_level=None, lock_expiration=3600)
    b = instance("b", isolation_level=None, timeout=30)
    a.execute("BEGIN IMMEDIATE")
    assert _manifest(remote).lease is not None
    a.rollback()
    assert _manifest(remote).lease is None
    b.execute("UPDATE c SET n = n + 1")  # would wait an hour for a lease that stayed behind


def test_a_write_that_changes_nothing_hands_the_lease_over(instance: Instance, remote: str) -> None:
    _counter(instance)
    a = instance("a", isolation_level=None, lock_expiration=3600)
    a.execute("UPDATE c SET n = n + 1 WHERE n < 0")  # matches nothing
    assert _manifest(remote).lease is None


def test_waiters_are_served_in_the_order_they_came(instance: Instance, remote: str) -> None:
    _counter(instance)
    holder = instance("holder", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    order: list[str] = []
    errors: list[BaseException] = []

    def waiter(name: str) -> None:
        conn = instance(name, isolation_level=None, timeout=60)
        try:
            conn.execute("BEGIN IMMEDIATE")
            order.append(name)
            conn.execute("UPDATE c SET n = n + 1")
            conn.commit()
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = []
    for count, name in enumerate(["first", "second", "third"], start=1):
        t = threading.Thread(target=waiter, args=(name,))
        t.start()
        threads.append(t)
        for _ in range(3000):  # until it is in the queue (no timing: the manifest says so)
            lease = _manifest(remote).lease
            if lease is not None and len(lease.queue) == count:
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"{name} never joined the queue")
    holder.execute("UPDATE c SET n = n + 1")
    holder.commit()  # hands the lease to "first", whose commit hands it to "second"...
    for t in threads:
        t.join()
    assert errors == []
    assert order == ["first", "second", "third"]
    assert holder.execute("SELECT n FROM c").fetchone() == (4,)


def test_a_frozen_holder_that_lost_its_lease_cannot_publish(tmp_path: Path) -> None:
    """Fencing is the storage's: B (whose clock says A's lease expired) takes over; A wakes up
    and its commit is refused, leaving no trace."""
    remote = (tmp_path / "remote").as_uri()
    options = EngineOptions(write_lease=True, lease_duration=5.0)

    def instance(name: str, skew: float) -> Connection:
        replica = Replica(
            remote,
            open_storage(remote),
            str(tmp_path / name),
            options,
            clock=lambda: time.time() + skew,
        )
        return Connection(replica, isolation_level=None)

    a, b = instance("a", 0.0), instance("b", 60.0)
    a.execute("CREATE TABLE t(x)")
    a.execute("BEGIN IMMEDIATE")
    a.execute("INSERT INTO t VALUES ('from a, frozen')")
    b.execute("INSERT INTO t VALUES ('from b')")  # A's lease looks long expired to B
    with pytest.raises(lambdalite.ConflictError):
        a.commit()
    assert not a.in_transaction
    check = lambdalite.connect(remote, cache_dir=str(tmp_path / "check"))
    assert check.execute("SELECT x FROM t").fetchall() == [("from b",)]
    a.execute("INSERT INTO t VALUES ('from a, retried')")
    assert sorted(check.execute("SELECT x FROM t").fetchall()) == [
        ("from a, retried",),
        ("from b",),
    ]
    check.close()


@pytest.mark.slow
def test_a_holder_killed_with_the_lease_holds_the_others_only_until_it_expires(
    instance: Instance, remote: str, tmp_path: Path
) -> None:
    setup = _counter(instance)
    setup.execute("CREATE TABLE t(v INTEGER, pad BLOB)")
    from lambdalite.replica.engine import forget_replicas

    forget_replicas()
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(
        target=workers.commit_then_die,
        args=(
            remote,
            str(tmp_path / "doomed"),
            "before-push",
            7,
            {"lock_expiration": 2, "transaction_mode": "IMMEDIATE"},  # claims at BEGIN
        ),
    )
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    lease = _manifest(remote).lease
    assert lease is not None  # the dead holder's
    b = instance("b", isolation_level=None, timeout=60, lock_expiration=2)
    b.execute("UPDATE c SET n = n + 1")  # waits out the dead holder's lease, then writes
    assert b.execute("SELECT n FROM c").fetchone() == (1,)
    assert b.execute("SELECT count(*) FROM t").fetchone() == (0,)  # the dead one never landed


def test_an_uncontended_read_modify_write_costs_two_requests(instance: Instance) -> None:
    """One conditional GET (304) for the read; the lease was free, so no claim: the publish,
    ``If-Match`` what was read, is the only write."""
    _counter(instance)
    a = instance("a", isolation_level=None)
    assert a.execute("SELECT n FROM c").fetchone() == (0,)
    before = a.replica.stats.copy()
    a.execute("BEGIN")
    (n,) = a.execute("SELECT n FROM c").fetchone()
    a.execute("UPDATE c SET n = ?", (n + 1,))
    a.commit()
    spent = a.replica.stats - before
    assert (spent.gets, spent.puts) == (1, 1), spent
    before = a.replica.stats.copy()
    assert a.execute("SELECT n FROM c").fetchone() == (1,)
    assert (a.replica.stats - before).requests == 1  # a read: one 304


def test_optimistic_mode_is_still_there(instance: Instance, remote: str) -> None:
    _counter(instance)
    a = instance("a", isolation_level=None, lock="none")
    b = instance("b", isolation_level=None, lock="none")
    assert a.replica.committer.lease is None
    a.execute("BEGIN")
    a.execute("UPDATE c SET n = n + 1")
    b.execute("UPDATE c SET n = n + 10")
    with pytest.raises(lambdalite.ConflictError):
        a.commit()


def test_a_transaction_that_read_gives_up_at_once_when_another_writes(
    instance: Instance, remote: str
) -> None:
    """Waiting its turn could only end in a conflict (the holder publishes first): it fails
    at once instead, and its retry waits at BEGIN."""
    _counter(instance)
    holder = instance("holder", isolation_level=None)
    reader = instance("reader", isolation_level=None, timeout=3600)
    holder.execute("BEGIN IMMEDIATE")
    reader.execute("BEGIN")
    assert reader.execute("SELECT n FROM c").fetchone() == (0,)
    with pytest.raises(lambdalite.ConflictError, match="BEGIN IMMEDIATE"):
        reader.execute("UPDATE c SET n = n + 1")  # no hour-long wait
    assert not reader.in_transaction
    holder.execute("UPDATE c SET n = n + 1")
    holder.commit()


def test_a_rerun_request_takes_the_lease_at_begin(instance: Instance, remote: str) -> None:
    from lambdalite.scope import request_scope

    _counter(instance)
    conn = instance("a", isolation_level=None)
    with request_scope(immediate=True):
        conn.execute("BEGIN")  # a plain BEGIN: in a re-run request, it waits its turn here
        lease = _manifest(remote).lease
        assert lease is not None and lease.expires_at > time.time()
        conn.rollback()
    assert _manifest(remote).lease is None
    with request_scope():
        conn.execute("BEGIN")
        assert _manifest(remote).lease is None  # a first run reads without the lease
        conn.rollback()


@pytest.mark.parametrize("bound", ["timeout", "lock_max_attempts"])
def test_a_waiter_that_gives_up_leaves_the_queue(
    instance: Instance, remote: str, bound: str
) -> None:
    """A waiter that gives up (its timeout, or an explicitly set ``lock_max_attempts``) takes
    itself out of the queue: the holder's commit never hands the lease to a writer gone."""
    _counter(instance)
    holder = instance("holder", isolation_level=None, lock_expiration=3600)
    holder.execute("BEGIN IMMEDIATE")
    limits: dict[str, object] = (
        {"timeout": 0.5} if bound == "timeout" else {"timeout": 3600, "lock_max_attempts": 3}
    )
    waiter = instance("waiter", isolation_level=None, **limits)
    with pytest.raises(lambdalite.LockTimeoutError) as caught:
        waiter.execute("UPDATE c SET n = n + 1")
    if bound == "lock_max_attempts":
        assert "lock_max_attempts" in str(caught.value)
    lease = _manifest(remote).lease
    assert lease is not None and lease.queue == ()  # only the holder is left
    holder.execute("UPDATE c SET n = n + 1")
    holder.commit()
    assert _manifest(remote).lease is None  # nobody to hand it to
    waiter.execute("UPDATE c SET n = n + 1")  # and it can write once it tries again
    assert holder.execute("SELECT n FROM c").fetchone() == (2,)


def test_a_claim_made_after_a_read_is_respected(instance: Instance, remote: str) -> None:
    """A transaction that read while the lease was free publishes without claiming it; if a
    writer claimed it meanwhile, the publish is refused (a conflict: the claimant publishes
    first); if the claimant let it go without writing, the publish goes through."""
    _counter(instance)
    reader = instance("reader", isolation_level=None)
    holder = instance("holder", isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT n FROM c").fetchone() == (0,)
    holder.execute("BEGIN IMMEDIATE")  # claims after the read
    reader.execute("UPDATE c SET n = n + 1")  # its copy says free: no claim, no wait
    with pytest.raises(lambdalite.ConflictError):
        reader.commit()  # never on top of the claim
    holder.execute("UPDATE c SET n = n + 10")
    holder.commit()  # the claimant is not disturbed
    assert reader.execute("SELECT n FROM c").fetchone() == (10,)

    reader.execute("BEGIN")
    assert reader.execute("SELECT n FROM c").fetchone() == (10,)
    holder.execute("BEGIN IMMEDIATE")
    holder.rollback()  # hands the lease back: same version
    reader.execute("UPDATE c SET n = n + 1")
    reader.commit()  # the manifest moved, but only the lease did: published
    assert holder.execute("SELECT n FROM c").fetchone() == (11,)
    assert _manifest(remote).lease is None
