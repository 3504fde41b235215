"""Fixtures for engine tests: a fresh remote and per-instance cache dirs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lambdalite
from lambdalite.replica.engine import forget_replicas


@pytest.fixture(autouse=True)
def _fresh_replicas() -> Iterator[None]:
    forget_replicas()
    yield
    forget_replicas()


@pytest.fixture
def remote(tmp_path: Path) -> str:
    return (tmp_path / "remote").as_uri()


Instance = Callable[..., lambdalite.Connection]


@pytest.fixture
def instance(tmp_path: Path, remote: str) -> Iterator[Instance]:
    """``instance("a")`` opens a connection as simulated instance "a" (its own cache dir)."""
    opened: list[lambdalite.Connection] = []

    def make(name: str = "a", target: str | None = None, **kwargs: object) -> lambdalite.Connection:
        conn = lambdalite.connect(
            target or remote, cache_dir=str(tmp_path / f"cache-{name}"), **kwargs
        )
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()
