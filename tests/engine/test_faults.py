"""Seeded storage faults: transient and ambiguous failures around every commit."""

from __future__ import annotations

from pathlib import Path

import pytest

import lambdalite
from lambdalite.dbapi import Connection
from lambdalite.errors import CommitOutcomeUnknownError, ConflictError, StorageError
from lambdalite.replica.engine import Replica
from lambdalite.storage import open_storage
from lambdalite.storage.faulty import FaultyStorage


def _faulty_instance(
    remote: str, cache: Path, **faults: object
) -> tuple[Connection, FaultyStorage]:
    storage = FaultyStorage(open_storage(remote), **faults)  # type: ignore[arg-type]
    replica = Replica(remote, storage, str(cache))
    return Connection(replica, isolation_level=None), storage


@pytest.fixture
def remote(tmp_path: Path) -> str:
    url = (tmp_path / "remote").as_uri()
    setup = lambdalite.connect(url, cache_dir=str(tmp_path / "setup"), isolation_level=None)
    setup.execute("CREATE TABLE counter(n INTEGER)")
    setup.execute("INSERT INTO counter VALUES (0)")
    setup.close()
    return url


def _read(remote: str, tmp_path: Path, name: str) -> int:
    conn = lambdalite.connect(remote, cache_dir=str(tmp_path / name))
    (n,) = conn.execute("SELECT n FROM counter").fetchone()
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    return int(n)


def _bump(conn: Connection) -> None:
    conn.execute("BEGIN")
    (n,) = conn.execute("SELECT n FROM counter").fetchone()
    conn.execute("UPDATE counter SET n = ?", (n + 1,))
    conn.commit()


def test_manifest_write_that_landed_but_answered_an_error_is_a_success(
    remote: str, tmp_path: Path
) -> None:
    conn, storage = _faulty_instance(remote, tmp_path / "a", seed=1)
    storage.fail_next("put", after=True)  # performed, then "timed out"
    _bump(conn)  # no error: the engine read the manifest back and found its own commit
    assert _read(remote, tmp_path, "check") == 1
    _bump(conn)
    assert _read(remote, tmp_path, "check2") == 2


def test_manifest_write_that_failed_cleanly_is_retried(remote: str, tmp_path: Path) -> None:
    conn, storage = _faulty_instance(remote, tmp_path / "a", seed=1)
    storage.fail_next("put", after=False)
    _bump(conn)
    assert _read(remote, tmp_path, "check") == 1


def test_persistent_failure_fails_the_commit_and_leaves_no_trace(
    remote: str, tmp_path: Path
) -> None:
    conn, storage = _faulty_instance(remote, tmp_path / "a", seed=1)
    storage.fail_next("put", count=10)
    with pytest.raises(StorageError):
        _bump(conn)
    assert not conn.in_transaction
    assert _read(remote, tmp_path, "check") == 0


@pytest.mark.parametrize("seed", range(6))
def test_random_faults_never_lose_an_acknowledged_commit(
    remote: str, tmp_path: Path, seed: int
) -> None:
    conn, storage = _faulty_instance(
        remote, tmp_path / "a", seed=seed, fail_rate=0.15, fail_after_rate=0.1
    )
    other = lambdalite.connect(remote, cache_dir=str(tmp_path / "b"), isolation_level=None)
    acknowledged = unknown = 0
    for i in range(40):
        try:
            _bump(conn)
            acknowledged += 1
        except CommitOutcomeUnknownError:
            unknown += 1
        except (ConflictError, StorageError):
            if conn.in_transaction:
                conn.rollback()
        if i % 7 == 0:  # a second, healthy instance commits now and then
            _bump(other)
            acknowledged += 1
    other.close()
    final = _read(remote, tmp_path, "check")
    assert acknowledged <= final <= acknowledged + unknown
    assert storage.injected, "the seed should have injected faults"
    # once the faults stop, the faulty instance heals and agrees with the remote
    storage.fail_rate = storage.fail_after_rate = 0.0
    assert conn.execute("SELECT n FROM counter").fetchone() == (final,)
