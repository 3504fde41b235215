"""Functions run in child processes, each one simulated Lambda instance (own cache dir)."""

from __future__ import annotations

import os
import signal
from typing import Any

import lambdalite
from lambdalite.replica import commit as engine


def increment(remote: str, cache_dir: str, times: int, options: dict[str, Any]) -> int:
    """Read-modify-write ``times`` increments of the counter; return the conflicts retried."""
    conn = lambdalite.connect(remote, cache_dir=cache_dir, isolation_level=None, **options)
    conflicts = 0
    done = 0
    while done < times:
        try:
            conn.execute("BEGIN")
            (n,) = conn.execute("SELECT n FROM counter").fetchone()
            conn.execute("UPDATE counter SET n = ?", (n + 1,))
            conn.commit()
            done += 1
        except lambdalite.ConflictError:
            conflicts += 1
            conn.rollback()
    conn.close()
    return conflicts


def commit_then_die(
    remote: str, cache_dir: str, point: str, value: int, options: dict[str, Any]
) -> None:
    """Commit one row and SIGKILL this process at commit step ``point``."""

    def hook(name: str) -> None:
        if name == point:
            os.kill(os.getpid(), signal.SIGKILL)

    engine.crash_hook = hook
    conn = lambdalite.connect(remote, cache_dir=cache_dir, isolation_level=None, **options)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t VALUES (?, randomblob(?))", (value, options.get("_blob", 10)))
    conn.commit()
    if point == "after-commit":
        os.kill(os.getpid(), signal.SIGKILL)
