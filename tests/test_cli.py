"""The ``lambdalite`` command line: the demo end to end, help everywhere, usage errors, docs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import lambdalite
from lambdalite.cli import cli

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands(group: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command path under ``group``, the group itself (the empty path) first."""
    yield path
    if isinstance(group, click.Group):
        for name in sorted(group.commands):
            yield from _commands(group.commands[name], (*path, name))


def _command(path: tuple[str, ...]) -> click.Command:
    cmd: click.Command = cli
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    return cmd


ALL_COMMANDS = list(_commands(cli))


# ---------------------------------------------------------------------------- demo


def test_demo_prints_the_table_and_finds_no_lost_update(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    result = CliRunner().invoke(
        cli,
        [
            "demo",
            "--instances",
            "3",
            "--requests",
            "10",
            "--seed",
            "1",
            "--remote",
            remote.as_uri(),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1)
        for line in result.stdout.splitlines()
        if re.search(r"\S\s{2,}\S", line)
    )
    assert rows["instances"] == "3"
    assert rows["requests"].startswith("30 ")
    assert rows["lost updates (must be 0)"] == "0"
    assert rows["guestbook rows missing (must be 0)"] == "0"
    assert rows["integrity"] == "ok"
    writes = int(rows["write transactions"])
    assert int(rows["read transactions"]) + writes == 30
    assert int(rows["commits"].split()[0]) == writes
    for label in (
        "conflicts retried",
        "read latency p50 / p95",
        "write latency p50 / p95",
        "storage requests per read",
        "storage requests per write",
        "bytes per write (up / down)",
    ):
        assert rows[label]
    assert (remote / "manifest").exists() or any(remote.iterdir())  # it ran on our remote


def test_demo_json_parses_and_matches_the_run() -> None:
    result = CliRunner().invoke(
        cli, ["demo", "--instances", "2", "--requests", "5", "--write-ratio", "1", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["lost_updates"] == 0
    assert data["integrity"] == "ok"
    assert data["instances"] == 2
    assert data["commits"] == data["writes"] == 10
    assert data["remote"] == "(temporary folder remote)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--instances", "0"], "--instances"),
        (["--instances", "many"], "--instances"),
        (["--requests", "0"], "--requests"),
        (["--write-ratio", "2"], "--write-ratio"),
        (["--think-time", "-5"], "--think-time"),
        (["--remote", "relative/folder"], "--remote"),
        (["--remote", "ftp://host/db"], "--remote"),
        (["--remote", "memory://x"], "--remote"),
        (["--bogus"], "--bogus"),
    ],
)
def test_demo_usage_errors_exit_2_with_a_message(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["demo", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Usage:" in result.output or "Hint" in result.output or "Try" in result.output


def test_unknown_command_exits_2() -> None:
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


# ---------------------------------------------------------------------------- the group


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"lambdalite, version {lambdalite.__version__}"


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "lambdalite")
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help(path: tuple[str, ...], flag: str) -> None:
    result = CliRunner().invoke(cli, [*path, flag])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")
    assert _command(path).help, f"{' '.join(path)} has no help text"


def test_verbose_is_accepted() -> None:
    result = CliRunner().invoke(cli, ["-vv", "demo", "--help"])
    assert result.exit_code == 0


def test_demo_and_the_other_command_groups_are_mounted() -> None:
    names = set(cli.commands)
    assert "demo" in names
    try:
        import lambdalite.locks.cli  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        assert "lock" in names
    try:
        from lambdalite.admin.cli import COMMANDS
    except ModuleNotFoundError:
        pass
    else:
        assert {c.name for c in COMMANDS} <= names


def test_python_dash_m_runs_the_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lambdalite", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"lambdalite, version {lambdalite.__version__}"


# ---------------------------------------------------------------------------- docs/cli.md


def _sections() -> dict[str, str]:
    """Heading "`lambdalite X Y`" -> its text, up to the next heading of its level or higher."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    out: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = re.match(r"^(#+) `lambdalite((?: [a-z][a-z-]*)*)`\s*$", line)
        if not m:
            continue
        level = len(m.group(1))
        body = []
        for following in lines[i + 1 :]:
            h = re.match(r"^(#+) ", following)
            if h and len(h.group(1)) <= level:
                break
            body.append(following)
        out[m.group(2).strip()] = "\n".join(body)
    return out


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "lambdalite")
def test_every_command_and_option_is_documented(path: tuple[str, ...]) -> None:
    sections = _sections()
    name = " ".join(path)
    assert name in sections, f"docs/cli.md has no heading `lambdalite {name}`".replace("  ", " ")
    text = sections[name]
    for param in _command(path).params:
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                if opt in ("--help", "-h"):
                    continue
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), (
                    f"option {opt} of `lambdalite {name}` is missing from its section in {DOC}"
                )
        elif isinstance(param, click.Argument):
            metavar = param.human_readable_name
            assert metavar in text, f"argument {metavar} of `lambdalite {name}` is undocumented"


def test_docs_describe_no_command_that_does_not_exist() -> None:
    documented = set(_sections())
    existing = {" ".join(path) for path in ALL_COMMANDS}
    assert documented <= existing, f"documented but missing: {sorted(documented - existing)}"
