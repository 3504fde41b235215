"""An instance frozen for longer than the retention window (DESIGN §3, issue 5).

It must get ConflictError or a clean re-pull: never fork history, never apply a
delta to the wrong pages.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import lambdalite
from lambdalite.admin import gc
from lambdalite.config import Settings

OPTIONS = {"compact_after_deltas": 2, "compact_after_bytes": 1, "isolation_level": None}


def _rows(conn: lambdalite.Connection) -> list[int]:
    return [x for (x,) in conn.execute("SELECT x FROM t ORDER BY x")]


def test_frozen_instance_after_gc_conflicts_then_pulls_cleanly(tmp_path: Path) -> None:
    remote = (tmp_path / "remote").as_uri()
    frozen = lambdalite.connect(remote, cache_dir=str(tmp_path / "frozen"), **OPTIONS)
    reader = lambdalite.connect(remote, cache_dir=str(tmp_path / "reader"), **OPTIONS)
    frozen.execute("CREATE TABLE t(x)")
    frozen.execute("INSERT INTO t VALUES (0)")
    assert _rows(reader) == [0]
    # frozen in the middle of a write transaction
    frozen.execute("BEGIN")
    assert _rows(frozen) == [0]
    frozen.execute("INSERT INTO t VALUES (-1)")

    writer = lambdalite.connect(remote, cache_dir=str(tmp_path / "writer"), **OPTIONS)
    for i in range(1, 30):
        writer.execute("INSERT INTO t VALUES (?)", (i,))
    report = gc(Settings.build(remote, {"retention": 0}), dry_run=False)
    assert report.deleted, "gc should have removed the history the frozen instance needed"

    with pytest.raises(lambdalite.ConflictError):
        frozen.commit()
    assert _rows(frozen) == list(range(30))  # a clean re-pull, without the lost -1
    assert _rows(reader) == list(range(30))  # the idle one catches up from what is left
    for conn in (frozen, reader):
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    cold = lambdalite.connect(remote, cache_dir=str(tmp_path / "cold"))
    assert _rows(cold) == list(range(30))
    for conn in (frozen, reader, writer, cold):
        conn.close()
