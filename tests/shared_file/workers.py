"""Child-process bodies for shared-file tests (each process: one simulated instance)."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from typing import Any

import lambdalite
from lambdalite.dbapi import Connection
from lambdalite.locks import open_lock
from lambdalite.shared_file import SharedFile


def _increments(conn: Any, times: int, immediate: bool) -> int:
    conflicts = 0
    done = 0
    while done < times:
        try:
            conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            (n,) = conn.execute("SELECT n FROM counter").fetchone()
            conn.execute("UPDATE counter SET n = ?", (n + 1,))
            conn.commit()
            done += 1
        except lambdalite.ConflictError:
            conflicts += 1
            conn.rollback()
    return conflicts


def increment(path: str, times: int, options: dict[str, Any], immediate: bool) -> int:
    conn = lambdalite.connect(path, isolation_level=None, **options)
    try:
        return _increments(conn, times, immediate)
    finally:
        conn.close()


def increment_unlocked(path: str, times: int, vfs: str) -> str:
    """The same workload with NO distributed lock (bypassing the settings that forbid it)."""
    engine = SharedFile(path, open_lock("none", key=path), vfs=vfs)
    conn = Connection(engine, isolation_level=None, timeout=5)
    try:
        _increments(conn, times, immediate=True)
        return "done"
    except sqlite3.DatabaseError as exc:  # the damage can also show up as errors
        return f"error: {exc}"
    finally:
        conn.close()


def hold_lock_and_die(path: str, options: dict[str, Any]) -> None:
    conn = lambdalite.connect(path, isolation_level=None, **options)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE counter SET n = n + 1000")
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)
