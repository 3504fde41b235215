"""docs/configuration.md documents every option and every environment variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lambdalite.config import OPTIONS, Option

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def _table_rows() -> dict[str, str]:
    """Option name -> its row in the options table (rows start with "| `name` |")."""
    rows = re.findall(r"^\| `([a-z_]+)` \|(.*)$", DOC.read_text(encoding="utf-8"), re.MULTILINE)
    return dict(rows)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.name)
def test_every_option_has_a_row_naming_its_environment_variables(option: Option) -> None:
    rows = _table_rows()
    assert option.name in rows, f"option {option.name!r} is missing from the table in {DOC}"
    for variable in option.env:
        assert f"`{variable}`" in rows[option.name], f"{variable} is missing from {option.name!r}"


def test_no_row_for_an_option_that_does_not_exist() -> None:
    assert set(_table_rows()) <= {option.name for option in OPTIONS}


def test_compatibility_variables_are_explained() -> None:
    text = DOC.read_text(encoding="utf-8")
    for option in OPTIONS:
        for variable in option.env[1:]:
            assert f"| `{variable}" in text, f"{variable} is missing from the compatibility table"
