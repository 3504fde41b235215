"""Lock latency: acquire and release, uncontended, per backend.

Backends: the file lock (local disk), the object lock on a folder remote, the object lock on
S3 (SeaweedFS on loopback, when its ``weed`` binary is installed) and the DynamoDB lock
(DynamoDB Local on loopback, when installed). Each round is one ``acquire`` then one
``release`` by the same owner, after some warm-up rounds. Loopback servers measure the
client and protocol cost, not a network: on AWS add one round trip per call (a few ms
in-region). Prints a table and writes ``benchmarks/results/lock_latency.json``.

    .venv/bin/python benchmarks/lock_latency.py [--rounds 200] [--warmup 20]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lambdalite.locks import open_lock
from lambdalite.locks.base import Lock
from lambdalite.storage import open_storage

RESULTS = Path(__file__).resolve().parent / "results" / "lock_latency.json"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _summary(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "p50_ms": round(_percentile(ms, 0.50), 3),
        "p95_ms": round(_percentile(ms, 0.95), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "max_ms": round(max(ms), 3),
    }


def measure(lock: Lock, rounds: int, warmup: int) -> dict[str, Any]:
    acquire: list[float] = []
    release: list[float] = []
    for i in range(warmup + rounds):
        t0 = time.perf_counter()
        lease = lock.acquire(5)
        t1 = time.perf_counter()
        lock.release(lease)
        t2 = time.perf_counter()
        if i >= warmup:
            acquire.append(t1 - t0)
            release.append(t2 - t1)
    lock.close()
    return {"rounds": rounds, "acquire": _summary(acquire), "release": _summary(release)}


@contextlib.contextmanager
def _dynamodb() -> Iterator[Callable[[], Lock] | str]:
    from lambdalite.locks.dynamodb import init_table
    from lambdalite.testing.dynamodb import DynamoDBLocalUnavailable, start_dynamodb_local

    try:
        manager = start_dynamodb_local()
        server = manager.__enter__()
    except DynamoDBLocalUnavailable as exc:
        yield f"skipped: {exc}"
        return
    try:
        os.environ.update(server.env)
        init_table("lock-bench", region="us-east-1")
        yield lambda: open_lock("dynamodb://lock-bench", key="bench", region="us-east-1")
    finally:
        manager.__exit__(None, None, None)


@contextlib.contextmanager
def _s3(workdir: str) -> Iterator[Callable[[], Lock] | str]:
    from lambdalite.testing.seaweedfs import SeaweedFSError, start_seaweedfs

    try:
        manager = start_seaweedfs(os.path.join(workdir, "seaweedfs"))
        server = manager.__enter__()
    except SeaweedFSError as exc:
        yield f"skipped: {exc}"
        return
    try:
        os.environ.update(server.env)
        bucket = f"lockbench-{uuid.uuid4().hex[:8]}"
        server.create_bucket(bucket)
        url = f"s3://{bucket}/db"
        yield lambda: open_lock("s3", key="lock", storage=open_storage(
            url, endpoint_url=server.endpoint_url))
    finally:
        manager.__exit__(None, None, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="lambdalite-lockbench-") as workdir:
        local: dict[str, Callable[[], Lock]] = {
            "file": lambda: open_lock("file", key=os.path.join(workdir, "bench.lock")),
            "object on folder remote": lambda: open_lock(
                "object", key="lock",
                storage=open_storage(Path(workdir, "remote").as_uri())),
        }
        for name, make in local.items():
            results[name] = measure(make(), args.rounds, args.warmup)
        for name, server in (("object on S3 (SeaweedFS, loopback)", _s3(workdir)),
                             ("DynamoDB (DynamoDB Local, loopback)", _dynamodb())):
            with server as make_or_reason:
                if isinstance(make_or_reason, str):
                    results[name] = {"skipped": make_or_reason}
                else:
                    results[name] = measure(make_or_reason(), args.rounds, args.warmup)

    header = f"{'backend':<38} {'acquire p50':>11} {'p95':>8} {'release p50':>12} {'p95':>8}"
    print(f"lock latency, ms, {args.rounds} rounds after {args.warmup} warm-up, uncontended")
    print(header)
    print("-" * len(header))
    for name, row in results.items():
        if "skipped" in row:
            print(f"{name:<38} {row['skipped']}")
            continue
        a, r = row["acquire"], row["release"]
        print(f"{name:<38} {a['p50_ms']:>11.2f} {a['p95_ms']:>8.2f} "
              f"{r['p50_ms']:>12.2f} {r['p95_ms']:>8.2f}")

    args.output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "lock_latency",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rounds": args.rounds,
        "warmup": args.warmup,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "platform": platform.platform(),
                    "load_average_1m": round(os.getloadavg()[0], 2)},
        "results": results,
    }
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
