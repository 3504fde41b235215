"""The simulated Lambda fleet: real processes, each with its own cache dir, one folder remote.

Runs are small (a few instances, a few requests) so the file stays fast; what
they assert is counts, not timings.
"""

from __future__ import annotations

import json
import queue
from pathlib import Path
from typing import Any, cast

import pytest

from lambdalite.errors import ConfigurationError
from lambdalite.fleet import (
    FleetConfig,
    FleetError,
    FleetResult,
    LatencySummary,
    _collect,
    _Outcome,
    format_bytes,
    run_fleet,
)


def _folder(tmp_path: Path) -> str:
    remote = tmp_path / "remote"
    remote.mkdir()
    return remote.as_uri()


def _assert_consistent(result: FleetResult) -> None:
    assert result.ok, result.to_dict()
    assert result.lost_updates == 0
    assert result.missing_rows == 0
    assert result.unexpected_rows == 0
    assert result.integrity == "ok"
    assert result.requests == result.instances * result.requests_per_instance
    assert result.reads + result.writes == result.requests
    assert result.commits + result.failed_writes == result.writes
    assert result.guestbook_rows == result.commits
    assert result.counter_after == result.counter_before + result.commits


def test_mixed_fleet_loses_nothing_and_reports_progress(tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    result = run_fleet(
        FleetConfig(instances=3, requests=8, write_ratio=0.5, seed=7, work_dir=str(tmp_path)),
        progress=lambda done, total: seen.append((done, total)),
    )
    _assert_consistent(result)
    assert result.reads > 0 and result.writes > 0
    assert seen == [(i, 24) for i in range(1, 25)]
    assert result.read_transfer.transactions == result.reads
    assert result.read_transfer.puts == 0  # a read never pushes
    assert result.read_transfer.requests_per_transaction >= 1.0  # at least the manifest check
    assert result.write_transfer.puts >= result.commits  # every commit publishes a manifest
    assert result.cold_start_transfer.transactions == 3
    assert result.read_latency.count == result.reads
    assert result.write_latency.count == result.commits
    assert [row["instance"] for row in result.per_instance] == [0, 1, 2]
    assert sum(row["commits"] for row in result.per_instance) == result.commits
    assert list(tmp_path.iterdir()) == []  # caches and the temporary remote are gone


def test_writers_only_contend_and_every_commit_counts(tmp_path: Path) -> None:
    result = run_fleet(
        FleetConfig(instances=3, requests=5, write_ratio=1.0, remote=_folder(tmp_path), seed=1)
    )
    _assert_consistent(result)
    assert result.reads == 0
    assert result.commits == 15
    assert 0.0 <= result.conflict_rate < 1.0
    assert result.commits_per_second > 0


def test_readers_only_change_nothing(tmp_path: Path) -> None:
    result = run_fleet(
        FleetConfig(
            instances=2,
            requests=5,
            write_ratio=0.0,
            remote=_folder(tmp_path),
            seed=2,
            think_time=0.002,
        )
    )
    _assert_consistent(result)
    assert result.writes == 0
    assert result.counter_after == result.counter_before == 0
    assert result.write_transfer.transactions == 0
    assert result.read_transfer.bytes_up == 0


def test_a_second_run_on_the_same_remote_counts_from_where_the_first_ended(
    tmp_path: Path,
) -> None:
    remote = _folder(tmp_path)
    first = run_fleet(FleetConfig(instances=2, requests=5, write_ratio=1.0, remote=remote, seed=3))
    second = run_fleet(FleetConfig(instances=2, requests=5, write_ratio=1.0, remote=remote, seed=4))
    _assert_consistent(first)
    _assert_consistent(second)
    assert second.counter_before == first.counter_after == 10
    assert second.remote == remote
    assert first.run_id != second.run_id


def test_the_fleet_survives_the_database_growing(tmp_path: Path) -> None:
    # 90 guestbook rows spill onto new pages: warm instances pull deltas that grow the file.
    result = run_fleet(
        FleetConfig(instances=3, requests=30, write_ratio=1.0, remote=_folder(tmp_path), seed=5)
    )
    _assert_consistent(result)


def test_a_connection_per_transaction_keeps_the_local_copy(tmp_path: Path) -> None:
    result = run_fleet(
        FleetConfig(
            instances=2,
            requests=6,
            write_ratio=0.5,
            remote=_folder(tmp_path),
            seed=6,
            connection_per_transaction=True,
        )
    )
    _assert_consistent(result)
    assert result.connection_per_transaction
    assert result.read_transfer.bytes_down <= result.cold_start_transfer.bytes_down * result.reads


def test_result_is_json_able() -> None:
    result = _fake_result()
    data = json.loads(json.dumps(result.to_dict()))
    assert data["ok"] is True
    assert data["lost_updates"] == 0
    assert data["read_latency"]["p50_ms"] == 2.0
    assert data["write_transfer"]["requests_per_transaction"] == 3.0
    assert {label for label, _ in result.summary_rows()} >= {
        "instances",
        "write transactions",
        "commits",
        "conflicts retried",
        "lost updates (must be 0)",
        "integrity",
    }


def test_problems_name_what_went_wrong() -> None:
    bad = _fake_result(lost_updates=2, missing_rows=1, integrity="*** in database main ***")
    assert not bad.ok
    assert bad.problems() == [
        "2 lost update(s)",
        "1 acknowledged guestbook row(s) missing",
        "integrity check: *** in database main ***",
    ]


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"instances": 0}, "instances"),
        ({"requests": 0}, "requests"),
        ({"write_ratio": 1.5}, "write_ratio"),
        ({"write_ratio": -0.1}, "write_ratio"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout": 0}, "timeout"),
        ({"think_time": -1}, "think_time"),
        ({"remote": "memory://fleet"}, "remote"),
    ],
)
def test_invalid_configuration_names_the_field(changes: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        run_fleet(FleetConfig(**changes))
    assert info.value.key == key
    assert key in str(info.value)


def _collect_from(procs: list[_Proc], messages: list[tuple[Any, ...]]) -> None:
    """Run the parent's message loop on fake processes and a plain queue."""
    q: queue.Queue[tuple[Any, ...]] = queue.Queue()
    for message in messages:
        q.put(message)
    outcome = _Outcome(0.0, [], [], set())
    _collect(cast(Any, procs), cast(Any, q), float("inf"), {"done"}, outcome, None, len(procs))


def test_a_failing_instance_fails_the_fleet() -> None:
    with pytest.raises(FleetError, match="instance 1 failed"):
        _collect_from([_Proc(), _Proc()], [("error", 1, "Traceback ...\nOperationalError: boom")])


def test_an_instance_that_dies_fails_the_fleet() -> None:
    with pytest.raises(FleetError, match="instance 0 exited with code -9"):
        _collect_from([_Proc(-9)], [])


def test_percentiles_interpolate() -> None:
    s = LatencySummary.of([0.001, 0.002, 0.003, 0.004, 0.005])
    assert (s.count, s.p50_ms, s.max_ms, s.mean_ms) == (5, 3.0, 5.0, 3.0)
    assert s.p95_ms == pytest.approx(4.8)
    assert LatencySummary.of([]).count == 0
    assert LatencySummary.of([0.5]).p99_ms == 500.0


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 999, 2048, 5 * 2**20, 3 * 2**30)] == [
        "0 B",
        "999 B",
        "2.0 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


class _Proc:
    def __init__(self, exitcode: int | None = None) -> None:
        self.exitcode = exitcode


def _fake_result(**changes: Any) -> FleetResult:
    from lambdalite.fleet import TransferSummary

    fields: dict[str, Any] = {
        "remote": "(temporary folder remote)",
        "instances": 2,
        "requests_per_instance": 2,
        "write_ratio": 0.5,
        "connection_per_transaction": False,
        "seed": 1,
        "run_id": "abc",
        "duration_s": 1.0,
        "requests": 4,
        "reads": 2,
        "writes": 2,
        "commits": 2,
        "failed_writes": 0,
        "conflicts": 1,
        "counter_before": 0,
        "counter_after": 2,
        "lost_updates": 0,
        "guestbook_rows": 2,
        "missing_rows": 0,
        "unexpected_rows": 0,
        "integrity": "ok",
        "read_latency": LatencySummary.of([0.001, 0.003]),
        "write_latency": LatencySummary.of([0.01, 0.02]),
        "cold_start_latency": LatencySummary.of([0.05, 0.05]),
        "read_transfer": TransferSummary(2, 2, 2, 2, 0, 0, 0),
        "write_transfer": TransferSummary(2, 6, 3, 0, 3, 100, 4000),
        "cold_start_transfer": TransferSummary(2, 2, 2, 0, 0, 2000, 0),
    }
    fields.update(changes)
    return FleetResult(**fields)
