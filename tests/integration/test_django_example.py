"""The guestbook example (``examples/django_app``), run as separate simulated instances.

Each instance is its own process with its own cache dir (Django's settings are process-global),
on one folder remote, driven by Django's test client. What one writes, the other sees; several
writing at once lose no visit; ``manage.py test`` runs on a fresh test database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parents[2]


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
APP = ROOT / "examples" / "django_app"


def _env(remote: str, cache: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("LAMBDALITE_", "SQLITE_LOCK_", "DJANGO_", "GUESTBOOK_"))}
    return {**clean, "PYTHONPATH": _pythonpath(), "GUESTBOOK_DB": remote,
            "GUESTBOOK_CACHE_DIR": str(cache), **extra}


def _start(remote: str, cache: Path, *args: str, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.django_example_worker", *args],
        cwd=ROOT, env=_env(remote, cache, **extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    assert result["ok"], result
    return result


def _run(remote: str, cache: Path, *args: str) -> dict[str, Any]:
    return _wait(_start(remote, cache, *args))


@pytest.mark.slow
def test_two_instances_see_each_others_writes_and_lose_no_visit(tmp_path: Path) -> None:
    remote = (tmp_path / "remote").as_uri()
    a, b = tmp_path / "instance-a", tmp_path / "instance-b"
    _run(remote, a, "migrate")
    _run(remote, a, "sign", "Ada", "hello from instance A")
    seen = _run(remote, b, "stats")
    assert "hello from instance A" in seen["entries"]
    assert "hello from instance A" in seen["page"]
    _run(remote, b, "sign", "Bob", "and from instance B")
    both = {"hello from instance A", "and from instance B"}
    assert both <= set(_run(remote, a, "stats")["entries"])

    before = _run(remote, a, "stats")["visits"]  # the stats command itself visits / once
    go = tmp_path / "go"
    instances, visits = 3, 8
    procs = [_start(remote, tmp_path / f"instance-{i}", "visit", str(visits), LL_DJANGO_GO=str(go))
             for i in range(instances)]
    go.touch()
    for proc in procs:
        _wait(proc)
    after = _run(remote, b, "stats")["visits"]
    assert after == before + instances * visits + 1


@pytest.mark.slow
def test_manage_py_test_uses_a_fresh_test_database(tmp_path: Path) -> None:
    remote = (tmp_path / "remote").as_uri()
    cache = tmp_path / "cache"
    proc = subprocess.run(
        [sys.executable, "manage.py", "test", "guestbook", "--noinput", "-v", "1"],
        cwd=APP, env=_env(remote, cache), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Ran 4 tests" in proc.stderr and "OK" in proc.stderr
    assert not (tmp_path / "remote").exists()  # the real database was never touched
    test_dbs = cache / "django-test-databases"
    assert test_dbs.is_dir() and list(test_dbs.iterdir()) == []  # destroyed afterwards
    assert [p.name for p in cache.iterdir()] == ["django-test-databases"]  # no local copy left
