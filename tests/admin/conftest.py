"""Fixtures for the admin tests: a folder remote with a real history built by the engine."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import lambdalite
from lambdalite.admin import compact
from lambdalite.config import Settings
from lambdalite.replica.engine import forget_replicas

Rows = dict[str, list[tuple[Any, ...]]]


def dump(conn: sqlite3.Connection | lambdalite.Connection) -> Rows:
    """Every table's rows, in a comparable form."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    ).fetchall()]
    return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY 1').fetchall() for n in names}


def dump_file(path: str | Path) -> Rows:
    conn = sqlite3.connect(path)
    try:
        return dump(conn)
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def _fresh_replicas() -> Iterator[None]:
    forget_replicas()
    yield
    forget_replicas()


@pytest.fixture
def remote(tmp_path: Path) -> str:
    return (tmp_path / "remote").as_uri()


@pytest.fixture
def remote_root(tmp_path: Path) -> Path:
    return tmp_path / "remote"


@pytest.fixture
def settings(tmp_path: Path, remote: str) -> Settings:
    return Settings.build(remote, {"cache_dir": str(tmp_path / "admin-cache")})


Instance = Callable[..., lambdalite.Connection]


@pytest.fixture
def instance(tmp_path: Path, remote: str) -> Iterator[Instance]:
    """``instance("a", **options)`` opens a connection as simulated instance "a"."""
    opened: list[lambdalite.Connection] = []

    def make(name: str = "a", **kwargs: Any) -> lambdalite.Connection:
        kwargs.setdefault("compact_after_deltas", 3)
        conn = lambdalite.connect(remote, cache_dir=str(tmp_path / f"cache-{name}"), **kwargs)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()


@dataclass
class Built:
    """A history and its model: the rows after each version, and a time just after it."""

    conn: lambdalite.Connection
    model: dict[int, Rows] = field(default_factory=dict)
    after: dict[int, float] = field(default_factory=dict)
    compact: Callable[[], object] | None = None  # run after every `compact_every`-th version
    compact_every: int = 0

    @property
    def latest(self) -> int:
        return max(self.model)

    def commit(self) -> int:
        self.conn.commit()
        version: int = self.conn.replica.version
        self.model[version] = dump(self.conn)
        self.after[version] = time.time()
        if self.compact is not None and self.compact_every and version % self.compact_every == 0:
            self.compact()
        return version

    def step(self, i: int) -> int:
        """One varied transaction: inserts, updates, deletes, a big row, a schema change."""
        c = self.conn
        c.execute("BEGIN")  # one version per step, DDL included
        if i % 5 == 0:
            c.execute("INSERT INTO t(v) VALUES (?)", ("x" * 9000,))  # overflow pages
        elif i % 5 == 1:
            c.execute("UPDATE t SET v = ? WHERE id = (SELECT min(id) FROM t)", (f"u{i}",))
        elif i % 5 == 2:
            c.execute("DELETE FROM t WHERE id = (SELECT max(id) FROM t)")
            c.execute("INSERT INTO t(v) VALUES (?)", (f"r{i}",))
        elif i % 5 == 3:
            c.execute(f"CREATE TABLE extra{i}(a, b)")
            c.execute(f"INSERT INTO extra{i} VALUES (?, ?)", (i, i * i))
        else:
            c.executemany("INSERT INTO t(v) VALUES (?)", [(f"m{i}-{k}",) for k in range(20)])
        return self.commit()


BuildHistory = Callable[..., Built]

@dataclass(frozen=True)
class Layout:
    """How a history's manifests are replaced: engine options, and `lambdalite compact` runs."""

    options: dict[str, Any]
    compact_every: int = 0  # `lambdalite compact` after every n-th version (0: never)


_NEVER = 1 << 30
LAYOUTS: dict[str, Layout] = {
    # compactions at 3, 6, 9...: a new snapshot, no rollover (the engine never compacts itself)
    "compactions": Layout({"compact_after_deltas": 1000, "compact_after_bytes": _NEVER}, 3),
    # rollovers at 3, 6, 9...: the deltas since the empty database span every archive
    "rollovers": Layout({"compact_after_deltas": 3, "compact_after_bytes": _NEVER}),
    # rollovers every 3 commits and engine compactions every 5 to 8 (a commit of `Built.step`
    # is 200-700 bytes, a snapshot 0.4-1 KiB)
    "mixed": Layout({"compact_after_deltas": 3, "compact_after_bytes": 2000}),
}


@pytest.fixture
def build_history(instance: Instance, settings: Settings) -> BuildHistory:
    """``build_history(commits=10, layout="compactions", **options)``: version 1 creates the
    table, then one commit per version; ``layout`` is a key of :data:`LAYOUTS`."""

    def build(
        commits: int = 10, name: str = "writer", layout: str = "compactions", **options: Any
    ) -> Built:
        shape = LAYOUTS[layout]
        built = Built(
            instance(name, **{**shape.options, **options}),
            compact=lambda: compact(settings),
            compact_every=shape.compact_every,
        )
        built.conn.execute("BEGIN")
        built.conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        built.conn.execute("INSERT INTO t(v) VALUES ('first')")
        built.commit()
        for i in range(commits - 1):
            built.step(i)
        return built

    return build
