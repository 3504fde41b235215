"""Fleet throughput: commits per second and conflict rate with 1, 2, 4 and 8 concurrent writers.

Each writer is a simulated Lambda instance (a process with its own cache dir, see
``lambdalite.fleet``) running only write requests: the guestbook's read-modify-write
transaction (``SELECT n``; ``INSERT`` a row; ``UPDATE counter SET n = ?``), retried with
jittered exponential backoff on ``ConflictError``. All writers contend for the same counter
row, so this is the worst case for optimistic concurrency: at most one commit per manifest
version can win. Every run is verified (lost updates, missing rows, integrity) like the demo.

    .venv/bin/python benchmarks/fleet.py                                  # folder remote
    .venv/bin/python benchmarks/fleet.py --backends folder,s3 --requests 50
    .venv/bin/python benchmarks/fleet.py --connection-per-transaction     # new connection each time

Prints a markdown table; writes ``benchmarks/results/fleet.json`` and
``benchmarks/results/fleet.png`` (matplotlib: ``pip install -e '.[bench]'``).
A run whose fleet fails (an instance raised something other than a conflict) is recorded
with its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, backend_remote, log, pyplot

from lambdalite.fleet import FleetConfig, FleetError, run_fleet


def run_one(
    backend: str, prefix: str, endpoint: str | None, writers: int, args: argparse.Namespace
) -> dict[str, Any]:
    remote = f"{prefix}/writers-{writers}"
    if remote.startswith("file://"):
        Path(remote.removeprefix("file://")).mkdir(parents=True)
    config = FleetConfig(
        instances=writers,
        requests=args.requests,
        write_ratio=args.write_ratio,
        remote=remote,
        endpoint_url=endpoint,
        seed=args.seed,
        connection_per_transaction=args.connection_per_transaction,
        think_time=args.think_time / 1000,
    )
    row: dict[str, Any] = {"backend": backend, "writers": writers}
    try:
        result = run_fleet(config)
    except FleetError as exc:
        last = str(exc).strip().splitlines()[-1]
        log(f"  {writers} writers: FAILED: {last}")
        return {**row, "error": last}
    data = result.to_dict()
    wt = result.write_transfer
    row.update(
        commits=result.commits,
        duration_s=result.duration_s,
        commits_per_second=result.commits_per_second,
        conflicts=result.conflicts,
        conflict_rate=result.conflict_rate,
        failed_writes=result.failed_writes,
        write_p50_ms=result.write_latency.p50_ms,
        write_p95_ms=result.write_latency.p95_ms,
        requests_per_commit=wt.requests / max(result.commits, 1),
        bytes_up_per_commit=wt.bytes_up / max(result.commits, 1),
        lost_updates=result.lost_updates,
        integrity=result.integrity,
        ok=result.ok,
        result=data,
    )
    log(
        f"  {writers} writers: {result.commits_per_second:.1f} commits/s, "
        f"{result.conflict_rate:.0%} conflicts, ok={result.ok}"
    )
    return row


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| backend | writers | commits | commits/s | conflicts | conflict rate | write p50 "
        "| write p95 | storage requests per commit | lost updates | integrity |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['backend']} | {r['writers']} | failed: {r['error']} |||||||||")
            continue
        out.append(
            f"| {r['backend']} | {r['writers']} | {r['commits']} | {r['commits_per_second']:.1f} "
            f"| {r['conflicts']} | {r['conflict_rate']:.0%} | {r['write_p50_ms']:.0f} ms "
            f"| {r['write_p95_ms']:.0f} ms | {r['requests_per_commit']:.1f} "
            f"| {r['lost_updates']} | {r['integrity']} |"
        )
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for backend in sorted({r["backend"] for r in rows}):
        mine = [r for r in rows if r["backend"] == backend and "error" not in r]
        xs = [r["writers"] for r in mine]
        left.plot(xs, [r["commits_per_second"] for r in mine], "o-", label=backend)
        right.plot(xs, [100 * r["conflict_rate"] for r in mine], "o-", label=backend)
    for ax, title, unit in (
        (left, "commits per second", "commits/s"),
        (right, "conflicts per commit attempt", "%"),
    ):
        ax.set_xscale("log", base=2)
        counts = sorted({r["writers"] for r in rows})
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.set_xlabel("concurrent writers")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", default="1,2,4,8", help="writer counts (default: 1,2,4,8)")
    parser.add_argument("--requests", type=int, default=25, help="write requests per writer")
    parser.add_argument("--write-ratio", type=float, default=1.0, help="default: only writes")
    parser.add_argument("--backends", default="folder", help="folder, s3 (default: folder)")
    parser.add_argument("--connection-per-transaction", action="store_true")
    parser.add_argument(
        "--think-time", type=float, default=0.0, help="mean pause before each request, in ms"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    counts = [int(n) for n in args.writers.split(",") if n.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = set(backends) - {"folder", "s3"} or args.requests < 1 or args.think_time < 0
    if not counts or min(counts) < 1 or bad:
        parser.error("bad --writers, --backends, --requests or --think-time")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lambdalite-fleet-bench-") as tmp:
        for backend in backends:
            with backend_remote(backend, Path(tmp) / backend, name="lambdalite-fleet") as where:
                if where is None:
                    continue
                prefix, endpoint = where
                log(f"{backend}:")
                for n in counts:
                    rows.append(run_one(backend, prefix, endpoint, n, args))
    elapsed = time.perf_counter() - started
    print(table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "requests_per_writer": args.requests,
        "write_ratio": args.write_ratio,
        "connection_per_transaction": args.connection_per_transaction,
        "think_time_ms": args.think_time,
        "seed": args.seed,
        "seconds": round(elapsed, 1),
    }
    (args.out / "fleet.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    if plot(rows, args.out / "fleet.png"):
        log(f"wrote {args.out / 'fleet.png'}")
    log(f"wrote {args.out / 'fleet.json'} ({elapsed:.0f} s)")
    if any("error" in r or not r.get("ok", False) for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
