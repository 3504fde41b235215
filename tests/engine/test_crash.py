"""A writer killed at each step of the commit path (DESIGN §2.3: atomic, never torn)."""

from __future__ import annotations

import multiprocessing
import signal

import pytest

from tests.engine import workers
from tests.engine.backends import Remote, any_remote  # noqa: F401 - fixture

# point → (extra options for the writer, whether the commit was published before it died)
POINTS = {
    "before-push": ({}, False),
    "after-delta-upload": ({"inline_delta_max": 0}, False),
    "after-manifest": ({}, True),
    "after-commit": ({}, True),
    "after-snapshot-upload": ({"compact_after_deltas": 1, "compact_after_bytes": 1}, True),
}


@pytest.mark.slow
@pytest.mark.parametrize("point", list(POINTS))
def test_writer_killed_mid_commit(any_remote: Remote, point: str) -> None:  # noqa: F811
    setup = any_remote.connect("setup", isolation_level=None)
    setup.execute("CREATE TABLE t(v INTEGER, pad BLOB)")
    for v in range(3):
        setup.execute("INSERT INTO t VALUES (?, zeroblob(10))", (v,))
    setup.close()

    options, published = POINTS[point]
    # the doomed instance has caught up before it writes (its cache holds the rows)
    warm = any_remote.connect("doomed")
    assert warm.execute("SELECT count(*) FROM t").fetchone() == (3,)
    warm.close()
    from lambdalite.replica.engine import forget_replicas

    forget_replicas()  # release the cache folder for the child process
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(
        target=workers.commit_then_die,
        args=(
            any_remote.url,
            any_remote.cache_dir("doomed"),
            point,
            100,
            {**any_remote.options, **options},
        ),
    )
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL

    expected = [0, 1, 2, 100] if published else [0, 1, 2]
    fresh = any_remote.connect("fresh")
    assert [v for (v,) in fresh.execute("SELECT v FROM t ORDER BY v")] == expected
    assert fresh.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    # the killed instance's cache heals: same cache dir, a new process's view
    healed = any_remote.connect("doomed", isolation_level=None)
    assert [v for (v,) in healed.execute("SELECT v FROM t ORDER BY v")] == expected
    healed.execute("INSERT INTO t VALUES (101, NULL)")
    assert [v for (v,) in fresh.execute("SELECT v FROM t ORDER BY v")] == [*expected, 101]
    assert healed.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    healed.close()
    fresh.close()
