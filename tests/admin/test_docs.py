"""docs/operations.md documents every admin command and each of its options."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from lambdalite.admin.cli import COMMANDS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: str(c.name))
def test_command_is_documented(command: click.Command) -> None:
    assert f"`lambdalite {command.name} " in DOC
    for param in command.params:
        if isinstance(param, click.Option):
            for name in param.opts + param.secondary_opts:
                if name.startswith("--"):
                    assert name in DOC, f"{command.name} {name}"
