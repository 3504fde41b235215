"""No lost update: real processes, each a simulated instance with its own cache dir."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

import lambdalite
from tests.engine import workers

PROCESSES = 8
INCREMENTS = 50


def _run_fleet(remote: str, tmp_path: Path, options: dict[str, Any]) -> int:
    setup = lambdalite.connect(remote, cache_dir=str(tmp_path / "setup"), **options)
    setup.execute("CREATE TABLE counter(n INTEGER)")
    setup.execute("INSERT INTO counter VALUES (0)")
    setup.commit()
    setup.close()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        results = [
            pool.apply_async(
                workers.increment, (remote, str(tmp_path / f"i{i}"), INCREMENTS, options)
            )
            for i in range(PROCESSES)
        ]
        conflicts = sum(r.get(timeout=600) for r in results)
    check = lambdalite.connect(remote, cache_dir=str(tmp_path / "check"), **options)
    assert check.execute("SELECT n FROM counter").fetchone() == (PROCESSES * INCREMENTS,)
    assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check.close()
    return conflicts


@pytest.mark.slow
def test_fleet_of_processes_loses_no_update_on_folder(tmp_path: Path) -> None:
    conflicts = _run_fleet((tmp_path / "remote").as_uri(), tmp_path, {})
    assert conflicts > 0  # the race was real: instances did collide


@pytest.mark.slow
@pytest.mark.s3
def test_fleet_of_processes_loses_no_update_on_s3(s3_remote: Any, tmp_path: Path) -> None:
    conflicts = _run_fleet(s3_remote.url, tmp_path, {"endpoint_url": s3_remote.endpoint_url})
    assert conflicts > 0
