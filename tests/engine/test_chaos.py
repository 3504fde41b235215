"""The Jepsen-style chaos test (issue 8): a short seeded run, and the checker's own tests.

The long run is ``scripts/jepsen --writers 16 --minutes 10`` (see
:mod:`lambdalite.testing.chaos`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from lambdalite.testing.chaos import (
    SCHEMA,
    ChaosConfig,
    ChaosResult,
    Observation,
    VersionState,
    check_history,
    evaluate,
    main,
    observe,
    read_journals,
    run_chaos,
)
from tests.servers.seaweedfs import S3Remote

SEED = 8


def _report(result: ChaosResult) -> str:
    lines = [result.table(), "", "violations:", *result.violations, f"work dir: {result.work_dir}"]
    return "\n".join(lines)


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    ("variant", "extra"),
    [
        ("cold-restarts", {}),
        ("warm-restarts-delta-objects", {"warm_restarts": 0.5, "inline_delta_max": 0}),
    ],
)
def test_a_short_seeded_chaos_run_finds_no_violation(
    s3_remote: S3Remote, tmp_path: Path, variant: str, extra: dict[str, float]
) -> None:
    options: dict[str, object] = {"compact_after_deltas": 8, "compact_after_bytes": 20000}
    if "inline_delta_max" in extra:
        options["inline_delta_max"] = extra["inline_delta_max"]
    config = ChaosConfig(
        remote=s3_remote.url,
        endpoint_url=s3_remote.endpoint_url,
        work_dir=str(tmp_path / "chaos"),
        writers=4,
        duration=25.0,
        seed=SEED,
        kill_interval=3.0,
        stop_interval=2.5,
        warm_restarts=extra.get("warm_restarts", 0.0),
        options=options,
        min_acknowledged=25,  # a slow machine runs longer rather than testing less
        max_restore=150,
        restore_sample=60,
    )
    result = run_chaos(config)
    report = _report(result)
    print(report)
    assert result.ok, report
    # the run exercised what it claims to
    assert result.kills >= 1 and result.stops >= 1, report
    assert len(result.faults) >= 3 and sum(result.faults.values()) >= 10, report
    assert result.acknowledged > 20, report
    assert result.versions_restorable == result.versions_checked >= 2, report
    assert result.to_dict()["ok"] is True


# ---------------------------------------------------------------------------- the checker


def _journal(path: Path, lines: Sequence[str]) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def _database(path: Path, ids: Sequence[str], counter: int) -> Observation:
    conn = sqlite3.connect(path)
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute("UPDATE counter SET n = ?", (counter,))
    conn.executemany("INSERT INTO ids(id) VALUES (?)", [(i,) for i in ids])
    conn.commit()
    try:
        return observe(conn)
    finally:
        conn.close()


def test_the_checker_passes_a_correct_history(tmp_path: Path) -> None:
    journals = read_journals(
        [
            _journal(
                tmp_path / "a.journal",
                [
                    "attempt a-1 1.0",
                    "ok a-1 0 2.0",
                    "attempt a-2 3.0",
                    "fail a-2 ConflictError 3.5",
                    "attempt a-3 4.0",
                    "unknown a-3 1 5.0",
                    "attempt a-4 6.0",  # killed: unresolved
                ],
            ),
            _journal(tmp_path / "b.journal", ["attempt b-1 1.5", "ok b-1 2 7.0", "attempt b-2"]),
        ]
    )
    assert journals.unresolved == {"a-4", "b-2"}
    assert journals.uncertain == {"a-3", "a-4", "b-2"}
    final = _database(tmp_path / "db", ["a-1", "a-3", "b-1", "a-4"], 4)
    ev = evaluate(journals, final)
    assert ev.violations == []
    assert ev.counter_ok and ev.unknown_landed == 2
    assert ev.lost == ev.duplicated == ev.phantom == []


def test_the_checker_finds_a_lost_a_duplicated_and_phantom_ids(tmp_path: Path) -> None:
    path = Path(
        _journal(
            tmp_path / "a.journal",
            [
                "attempt a-1 1.0",
                "ok a-1 0 2.0",
                "attempt a-2 3.0",
                "ok a-2 1 4.0",  # lost
                "attempt a-3 5.0",
                "ok a-3 1 6.0",  # duplicated
                "attempt a-4 7.0",
                "fail a-4 TransientStorageError 8.0",  # yet present
                "attempt a-5 9.0",
                "ok a-5",  # cut short below: the writer was killed while writing it
            ],
        )
    )
    path.write_text(path.read_text().removesuffix("\n"))
    journals = read_journals([path])
    assert "a-5" in journals.unresolved and "a-5" not in journals.acknowledged
    final = _database(tmp_path / "db", ["a-1", "a-3", "a-3", "a-4", "zz-1"], 4)
    ev = evaluate(journals, final)
    assert ev.lost == ["a-2"]
    assert ev.duplicated == ["a-3"]
    assert ev.phantom == ["a-4", "zz-1"]
    assert not ev.counter_ok
    text = "\n".join(ev.violations)
    for word in ("lost", "duplicated", "definite failures", "never attempted", "counter is 4"):
        assert word in text, text


def test_the_checker_finds_stale_reads_and_real_time_violations(tmp_path: Path) -> None:
    journals = read_journals(
        [
            _journal(
                tmp_path / "a.journal",
                [
                    "attempt a-1 1.0",
                    "ok a-1 0 2.0",
                    "attempt a-2 3.0",  # began after a-1 was acknowledged...
                    "ok a-2 0 4.0",  # ...and read a counter that did not count it
                ],
            )
        ]
    )
    final = _database(tmp_path / "db", ["a-2", "a-1"], 2)  # ...and committed before it
    text = "\n".join(evaluate(journals, final).violations)
    assert "not serial" in text and "real-time order" in text, text


def test_the_checker_finds_broken_journals(tmp_path: Path) -> None:
    journals = read_journals(
        [
            _journal(
                tmp_path / "a.journal",
                [
                    "ok a-1 0 1.0",
                    "attempt a-2 1.0",
                    "ok a-2 0 2.0",
                    "fail a-2 ConflictError 2.0",
                    "bogus a-3",
                ],
            )
        ]
    )
    assert len(journals.anomalies) == 3, journals.anomalies


def test_the_history_check_finds_a_non_monotonic_history() -> None:
    def state(version: int, ids: Sequence[str], counter: int) -> VersionState:
        return VersionState(version, Observation(tuple(ids), counter, 1, ("ok",)))

    good = [state(1, [], 0), state(2, ["a"], 1), state(4, ["a", "b", "c"], 3)]
    final = Observation(("a", "b", "c"), 3, 1, ("ok",))
    assert check_history(good, final, 4) == []
    bad = [
        state(1, [], 0),
        state(2, ["a"], 1),
        state(3, ["b", "c"], 2),  # a vanished
        state(4, ["b", "c"], 3),  # counter != rows, and no new row
        VersionState(5, None, "CorruptionError: delta missing"),
    ]
    text = "\n".join(check_history(bad, final, 5))
    for word in ("not a prefix", "version 4: counter is 3", "not restorable"):
        assert word in text, text


def test_the_command_line_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    assert "--writers" in capsys.readouterr().out


def test_a_config_is_validated() -> None:
    from lambdalite.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="s3://"):
        ChaosConfig(remote="file:///x", endpoint_url="http://127.0.0.1:1", work_dir="w")
    with pytest.raises(ConfigurationError, match="writers"):
        ChaosConfig(remote="s3://b/p", endpoint_url="http://127.0.0.1:1", work_dir="w", writers=0)
