"""Shared-file mode (EFS): the distributed lock serializes writers on a file written in place.

A filesystem whose locks do not work is simulated with SQLite's ``unix-none`` VFS.
"""

from __future__ import annotations

import multiprocessing
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

import lambdalite
from lambdalite.errors import LockLostError, LockTimeoutError
from lambdalite.shared_file import forget_engines
from tests.shared_file import workers

PROCESSES = 8
INCREMENTS = 50


@pytest.fixture(autouse=True)
def _fresh_engines() -> None:
    forget_engines()


def _make_db(path: Path) -> str:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE counter(n INTEGER)")
    db.execute("INSERT INTO counter VALUES (0)")
    db.commit()
    db.close()
    return str(path)


def _counter(path: str) -> tuple[int, str]:
    db = sqlite3.connect(path)
    try:
        (n,) = db.execute("SELECT n FROM counter").fetchone()
        (ok,) = db.execute("PRAGMA integrity_check").fetchone()
    finally:
        db.close()
    return n, ok


def _fleet(path: str, options: dict[str, Any], immediate: bool) -> int:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        results = [
            pool.apply_async(workers.increment, (path, INCREMENTS, options, immediate))
            for _ in range(PROCESSES)
        ]
        return sum(r.get(timeout=600) for r in results)


@pytest.mark.slow
def test_file_lock_on_a_filesystem_without_locks(tmp_path: Path) -> None:
    path = _make_db(tmp_path / "app.db")
    _fleet(
        path,
        {"lock": "file", "vfs": "unix-none", "timeout": 60, "lock_max_attempts": 100000},
        immediate=True,
    )
    assert _counter(path) == (PROCESSES * INCREMENTS, "ok")


@pytest.mark.slow
@pytest.mark.dynamodb
def test_dynamodb_lock_on_a_filesystem_without_locks(tmp_path: Path, dynamodb_table: str) -> None:
    path = _make_db(tmp_path / "app.db")
    options = {
        "lock": f"dynamodb://{dynamodb_table}",
        "vfs": "unix-none",
        "timeout": 120,
        "lock_max_attempts": 100000,
    }
    _fleet(path, options, immediate=True)
    assert _counter(path) == (PROCESSES * INCREMENTS, "ok")


@pytest.mark.slow
def test_deferred_read_then_write_is_checked_at_first_write(tmp_path: Path) -> None:
    path = _make_db(tmp_path / "app.db")
    conflicts = _fleet(
        path, {"lock": "file", "timeout": 60, "lock_max_attempts": 100000}, immediate=False
    )
    assert _counter(path) == (PROCESSES * INCREMENTS, "ok")
    assert conflicts >= 0


@pytest.mark.slow
def test_without_a_lock_the_damage_shows(tmp_path: Path) -> None:
    """The control run: the same workload with no lock loses updates or corrupts the file."""
    path = _make_db(tmp_path / "app.db")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        outcomes = pool.starmap(
            workers.increment_unlocked, [(path, INCREMENTS, "unix-none")] * PROCESSES
        )
    try:
        n, ok = _counter(path)
    except sqlite3.DatabaseError:
        n, ok = -1, "unreadable"
    damaged = n != PROCESSES * INCREMENTS or ok != "ok" or any(o != "done" for o in outcomes)
    assert damaged, "without a lock, 8 unsynchronized writers should have collided"


def test_lease_lost_mid_transaction_commits_nothing(tmp_path: Path) -> None:
    path = _make_db(tmp_path / "app.db")
    slow = lambdalite.connect(path, lock="memory", lock_expiration=0.3, isolation_level=None)
    slow.execute("BEGIN IMMEDIATE")
    slow.execute("UPDATE counter SET n = 111")
    time.sleep(0.5)  # the lease expires while the transaction is open
    with pytest.raises(LockLostError):
        slow.commit()
    assert not slow.in_transaction
    assert _counter(path) == (0, "ok")
    # the next writer proceeds, and its work is intact
    slow.execute("UPDATE counter SET n = n + 1")
    assert _counter(path) == (1, "ok")
    slow.close()


def test_lock_wait_times_out_with_the_holder_named(tmp_path: Path) -> None:
    path = _make_db(tmp_path / "app.db")
    lock_file = str(tmp_path / "app.lock")
    holder = lambdalite.connect(path, lock="file", lock_key=lock_file, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        result = pool.apply_async(_try_write, (path, lock_file))
        message = result.get(timeout=60)
    holder.rollback()
    holder.close()
    assert message.startswith("LockTimeoutError")


def _try_write(path: str, lock_file: str) -> str:
    conn = lambdalite.connect(
        path, lock="file", lock_key=lock_file, isolation_level=None, timeout=3
    )
    try:
        conn.execute("UPDATE counter SET n = n + 1")
    except LockTimeoutError as exc:
        return f"LockTimeoutError: {exc}"
    finally:
        conn.close()
    return "wrote"


@pytest.mark.slow
def test_holder_killed_while_holding_the_file_lock(tmp_path: Path) -> None:
    path = _make_db(tmp_path / "app.db")
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=workers.hold_lock_and_die, args=(path, {"lock": "file"}))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    started = time.monotonic()
    conn = lambdalite.connect(path, lock="file", isolation_level=None, timeout=10)
    conn.execute("UPDATE counter SET n = n + 1")
    conn.close()
    assert time.monotonic() - started < 5  # the kernel dropped the dead holder's flock
    assert _counter(path) == (1, "ok")  # the killed transaction left no trace (hot journal)


@pytest.mark.slow
@pytest.mark.dynamodb
def test_holder_killed_while_holding_the_dynamodb_lock(tmp_path: Path, dynamodb_table: str) -> None:
    path = _make_db(tmp_path / "app.db")
    options: dict[str, Any] = {"lock": f"dynamodb://{dynamodb_table}", "lock_expiration": 2}
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=workers.hold_lock_and_die, args=(path, options))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL
    started = time.monotonic()
    # attempts are bounded by the timeout here, not by the default 10 tries (about 1.2 s)
    conn = lambdalite.connect(
        path, isolation_level=None, timeout=10, lock_max_attempts=1000, **options
    )
    conn.execute("UPDATE counter SET n = n + 1")
    waited = time.monotonic() - started
    conn.close()
    assert waited < 2 + 3  # bounded by the lease expiration (plus backoff)
    assert _counter(path) == (1, "ok")


def test_wal_database_is_switched_to_a_rollback_journal(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.close()
    conn = lambdalite.connect(str(path), lock="file")
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()
