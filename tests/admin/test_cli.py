"""The admin commands through click, registered into a throwaway group."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from lambdalite.admin import load_history
from lambdalite.admin.cli import COMMANDS, register
from lambdalite.storage import open_storage
from tests.admin.conftest import BuildHistory, dump, dump_file

Run = Callable[..., Result]


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """``run("status", remote, ...)``: invoke a command of a group the admin registered into."""
    monkeypatch.setenv("LAMBDALITE_CACHE_DIR", str(tmp_path / "cli-cache"))
    group = click.Group("lambdalite")
    register(group)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> Result:
        return runner.invoke(group, list(args), input=input, catch_exceptions=False)

    return invoke


def test_register_adds_every_command() -> None:
    group = click.Group("x")
    register(group)
    assert set(group.commands) == {
        "status", "history", "pull", "import", "restore", "verify", "compact", "gc",
    }
    assert len(COMMANDS) == len(group.commands)


@pytest.mark.parametrize("name", ["status", "history", "pull", "import", "restore", "verify",
                                  "compact", "gc"])
def test_help(run: Run, name: str) -> None:
    result = run(name, "--help")
    assert result.exit_code == 0
    assert "--endpoint-url" in result.output and "--region" in result.output


def test_user_errors_exit_2_with_a_hint(run: Run, remote: str, tmp_path: Path) -> None:
    result = run("status", remote)
    assert result.exit_code == 2
    assert f"no database at {remote}" in result.output
    assert "lambdalite import" in result.output
    result = run("status", "ftp://example.com/x")
    assert result.exit_code == 2 and "Hint:" in result.output
    result = run("restore", remote, "--output", str(tmp_path / "x"))
    assert result.exit_code == 2 and "exactly one of --to-version and --to-time" in result.output
    result = run("restore", remote, "--to-version", "1", "--to-time", "2020-01-01")
    assert result.exit_code == 2
    result = run("restore", remote, "--to-version", "1")
    assert result.exit_code == 2 and "--output FILE and --in-place" in result.output
    result = run("restore", remote, "--to-time", "yesterday", "--output", str(tmp_path / "x"))
    assert result.exit_code == 2 and "ISO 8601" in result.output


def test_status_history_pull(
    run: Run, build_history: BuildHistory, remote: str, tmp_path: Path
) -> None:
    built = build_history(5)
    result = run("status", remote, "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["version"] == 5 and info["oldest_restorable_version"] == 1
    text = run("status", remote)
    assert text.exit_code == 0 and "version:      5" in text.output
    result = run("history", remote, "--json")
    assert [v["version"] for v in json.loads(result.stdout)] == [1, 2, 3, 4, 5]
    assert run("history", remote).output.count("\n") == 5
    out = tmp_path / "pulled.sqlite"
    result = run("pull", remote, str(out))
    assert result.exit_code == 0, result.output
    assert dump_file(out) == built.model[5]
    result = run("pull", remote, str(out))
    assert result.exit_code == 2 and "--force" in result.output
    assert run("pull", remote, str(out), "--force").exit_code == 0


def test_import(run: Run, remote: str, tmp_path: Path) -> None:
    src = tmp_path / "app.sqlite"
    conn = sqlite3.connect(src)
    conn.execute("CREATE TABLE a(x)")
    conn.execute("INSERT INTO a VALUES (1)")
    conn.commit()
    conn.close()
    result = run("import", str(src), remote)
    assert result.exit_code == 0, result.output
    assert "version 1 of lineage" in result.output
    result = run("import", str(src), remote)
    assert result.exit_code == 2 and "--force" in result.output
    result = run("import", str(src), remote, "--force")
    assert result.exit_code == 0 and "replaced version 1" in result.output
    junk = tmp_path / "junk.txt"
    junk.write_text("not a database at all, but long enough to have a header......" * 3)
    result = run("import", str(junk), remote, "--force")
    assert result.exit_code == 2 and "not a SQLite database" in result.output
    result = run("import", str(tmp_path / "missing.sqlite"), remote)
    assert result.exit_code == 2


def test_restore(
    run: Run, build_history: BuildHistory, remote: str, tmp_path: Path
) -> None:
    built = build_history(6)
    out = tmp_path / "v2.sqlite"
    result = run("restore", remote, "--to-version", "2", "--output", str(out))
    assert result.exit_code == 0, result.output
    assert dump_file(out) == built.model[2]
    when = datetime.fromtimestamp(built.after[4], UTC).isoformat()
    out4 = tmp_path / "t4.sqlite"
    result = run("restore", remote, "--to-time", when, "--output", str(out4))
    assert result.exit_code == 0 and "version 4" in result.output
    result = run("restore", remote, "--to-version", "99", "--output", str(tmp_path / "n"))
    assert result.exit_code == 2 and "lambdalite history" in result.output
    result = run("restore", remote, "--to-version", "3", "--in-place", input="n\n")
    assert result.exit_code == 1  # aborted at the question
    assert load_history(open_storage(remote)).current.manifest.version == 6
    result = run("restore", remote, "--to-version", "3", "--in-place", "--yes")
    assert result.exit_code == 0, result.output
    assert "now at version 7" in result.output
    assert dump(built.conn) == built.model[3]  # the writer instance reads the restored state


def test_verify_compact_gc(
    run: Run, build_history: BuildHistory, remote: str, remote_root: Path
) -> None:
    build_history(5, layout="rollovers", inline_delta_max=0)  # 2 manifests
    result = run("verify", remote)
    assert result.exit_code == 0 and result.output.startswith("ok:")
    result = run("compact", remote)
    assert result.exit_code == 0 and "5 deltas folded" in result.output
    result = run("compact", remote)
    assert "not compacted" in result.output
    result = run("gc", remote, "--json")
    report = json.loads(result.stdout)
    assert report["dry_run"] is True and report["deleted"] == []
    result = run("gc", remote, "--delete", "--retention", "0")
    assert result.exit_code == 0 and "deleted" in result.output
    result = run("gc", remote, "--retention", "soon")
    assert result.exit_code == 2 and "retention" in result.output
    snap = load_history(open_storage(remote)).current.manifest.snapshot
    assert snap is not None
    path = remote_root / snap.key
    path.write_bytes(path.read_bytes()[:-3])
    result = run("verify", remote, "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert [p["key"] for p in report["problems"]] == [snap.key]
    result = run("verify", remote)
    assert result.exit_code == 1 and f"BROKEN snapshot {snap.key}" in result.output
    result = run("pull", remote, str(remote_root.parent / "x.sqlite"))
    assert result.exit_code == 1 and "CorruptionError" in result.output


def test_status_and_history_of_a_rolled_over_chain(
    run: Run, build_history: BuildHistory, remote: str
) -> None:
    build_history(8, layout="rollovers")  # rollovers at 3 and 6, no snapshot
    info = json.loads(run("status", remote, "--json").stdout)
    assert info["since_snapshot"]["deltas"] == 8 and info["since_snapshot"]["segments"] == 2
    assert info["base"]["version"] == 6
    text = run("status", remote).output
    assert "snapshot:     none" in text
    assert "deltas:       2 in the manifest" in text
    assert "since snap.:  8 deltas" in text and "2 rolled-over segments before version 6" in text
    lines = run("history", remote).output.splitlines()
    assert lines[-1].endswith("empty database + 8 deltas from 3 manifests")
    assert lines[0].endswith("empty database + 1 deltas")
    versions = json.loads(run("history", remote, "--json").stdout)
    assert len(versions[-1]["manifests"]) == 3 and versions[-1]["snapshot_version"] == 0
