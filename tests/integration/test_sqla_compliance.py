"""SQLAlchemy's dialect compliance suite on sqlite+lambdalite:// passes everything the stock
pysqlite dialect passes (scripts/sqla-suite runs both; about a minute on tmpfs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "sqla-suite"


@pytest.mark.slow
def test_compliance_suite_passes_what_the_stock_dialect_passes() -> None:
    done = subprocess.run([str(SCRIPT), "both"], capture_output=True, text=True, timeout=900,
                          check=False)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "lambdalite: " in done.stdout and " passed" in done.stdout
