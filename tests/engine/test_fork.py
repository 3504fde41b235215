"""Forked workers (gunicorn --preload, Celery prefork, multiprocessing 'fork'): issue 8 item 7.

A child never uses its parent's local copy, lock or raw SQLite connection: a
connection inherited across ``fork()`` moves to a replica of the child's own
(its own cache folder) before its next statement, and the parent goes on as if
nothing happened.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

import lambdalite
from lambdalite.admin import verify
from lambdalite.config import Settings

ctx = multiprocessing.get_context("fork")
_inherited: lambdalite.Connection | None = None  # the parent's connection, seen by children


def _child_writes(n: int, rows: int) -> int:
    """In a forked child: write through the connection inherited from the parent."""
    conn = _inherited
    assert conn is not None
    for i in range(rows):
        for attempt in lambdalite.retrying(attempts=100):
            with attempt:
                conn.execute("BEGIN")
                (count,) = conn.execute("SELECT count(*) FROM t").fetchone()
                conn.execute("INSERT INTO t VALUES (?, ?)", (f"child{n}-{i}", count))
                conn.commit()
    assert conn.replica.cache.path != _parent_cache  # a cache folder of its own
    conn.close()
    return os.getpid()


_parent_cache = ""


@pytest.mark.slow
@pytest.mark.parametrize("open_read", [False, True], ids=["idle", "mid-read"])
def test_children_forked_after_the_parent_used_a_connection(
    tmp_path: Path, open_read: bool
) -> None:
    global _inherited, _parent_cache
    remote = (tmp_path / "remote").as_uri()
    parent = lambdalite.connect(remote, cache_dir=str(tmp_path / "cache"), isolation_level=None)
    parent.execute("CREATE TABLE t(id TEXT PRIMARY KEY, seen INTEGER)")
    parent.execute("INSERT INTO t VALUES ('parent-0', 0)")
    cursor = None
    if open_read:  # the parent is in the middle of reading when it forks
        parent.execute("INSERT INTO t VALUES ('parent-1', 1)")
        cursor = parent.execute("SELECT id FROM t")
        cursor.fetchone()
    _inherited, _parent_cache = parent, parent.replica.cache.path
    try:
        with ctx.Pool(3) as pool:
            pids = pool.starmap(_child_writes, [(n, 5) for n in range(3)])
    finally:
        _inherited = None
    assert len(set(pids)) == 3
    if cursor is not None:
        assert cursor.fetchall()  # the parent's open read is undisturbed
    parent.execute("INSERT INTO t VALUES ('parent-after', -1)")  # and so is its connection
    ids = {row[0] for row in parent.execute("SELECT id FROM t")}
    expected = {f"child{n}-{i}" for n in range(3) for i in range(5)}
    assert expected <= ids and "parent-after" in ids
    assert parent.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    parent.close()
    fresh = lambdalite.connect(remote, cache_dir=str(tmp_path / "fresh"))
    assert {row[0] for row in fresh.execute("SELECT id FROM t")} == ids
    fresh.close()
    report = verify(Settings.build(remote, {"cache_dir": str(tmp_path / "verify")}))
    assert report.ok, report
