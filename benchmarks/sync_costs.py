"""Sync costs: storage requests and bytes per transaction, against database size.

For each backend (the folder remote, and S3 on a loopback SeaweedFS when its
``weed`` binary is installed) and each database size (1 MB and 100 MB by
default), this measures what one transaction of one instance moves to and from
the remote, from ``conn.replica.stats``:

* ``read_unchanged``: a read while nothing changed (one conditional GET, 304);
* ``read_after_change``: a read after another instance updated one row;
* ``write_1_row``: ``BEGIN; UPDATE one row; COMMIT``;
* ``write_1000_rows``: ``BEGIN; INSERT 1,000 rows of ~100 bytes; COMMIT``;
* ``cold_start``: the first read of an instance with an empty cache dir.

Next to each, the cost of the "full copy per commit" strategy of the tools
lambdalite replaces (django-s3-sqlite, zappa-django-utils, sqlalchemy-s3sqlite):
a reader GETs the whole file when it changed (conditional GET: a 304 otherwise),
a writer PUTs the whole file. Those numbers are **computed from the file size**,
not measured, and labelled so. Commit latency (p50 of the one-row write) is
reported per size.

The database is one table of random (incompressible) 4,000-byte blobs plus a
100-row key/value table and an events table, built with plain ``sqlite3`` and
published with ``lambdalite import`` (a snapshot at version 1), or, with
``--build commits`` (or without the admin module), inserted through lambdalite
itself in 32 MB transactions.

    .venv/bin/python benchmarks/sync_costs.py                       # 1 MB and 100 MB, folder and s3
    .venv/bin/python benchmarks/sync_costs.py --sizes 1,100,1000    # add 1 GB (minutes, ~5 GB disk)
    .venv/bin/python benchmarks/sync_costs.py --backends folder --repeat 20

Prints markdown tables; writes ``benchmarks/results/sync_costs.json`` and
``benchmarks/results/sync_costs.png`` (matplotlib: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _common import RESULTS, backend_remote, log, pyplot

import lambdalite
from lambdalite.fleet import format_bytes
from lambdalite.replica.stats import StorageStats

SCENARIOS = ("read_unchanged", "read_after_change", "write_1_row", "write_1000_rows", "cold_start")
MB = 1_000_000
BLOB = 4000
BATCH_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    requests: int
    gets: int
    puts: int
    not_modified: int
    bytes_down: int
    bytes_up: int
    seconds: float


def measure(conn: lambdalite.Connection, body: Callable[[], object]) -> Sample:
    before = conn.replica.stats.copy()
    began = time.perf_counter()
    body()
    seconds = time.perf_counter() - began
    d: StorageStats = conn.replica.stats.copy() - before
    return Sample(d.requests, d.gets, d.puts, d.not_modified, d.bytes_down, d.bytes_up, seconds)


# ---------------------------------------------------------------------------- building


def build_file(path: Path, size_bytes: int, rng: random.Random) -> None:
    """A plain SQLite file of about ``size_bytes``: random blobs, a kv table, an events table."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(
        """
        PRAGMA journal_mode = OFF;
        PRAGMA synchronous = OFF;
        CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL);
        CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL);
        CREATE TABLE events (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
        """
    )
    db.execute("BEGIN")
    db.executemany("INSERT INTO kv VALUES (?, ?)", [(k, _text(rng, 20)) for k in range(1, 101)])
    rows = max(1, size_bytes // (BLOB + 96))
    for start in range(0, rows, 1000):
        n = min(1000, rows - start)
        db.executemany(
            "INSERT INTO blobs (data) VALUES (?)", ((rng.randbytes(BLOB),) for _ in range(n))
        )
    db.execute("COMMIT")
    db.close()


def publish(build: str, source: Path, remote: str, endpoint_url: str | None, work: Path) -> str:
    """Put ``source`` at ``remote``; return how (``import`` or ``commits``)."""
    if build == "import":
        try:
            from lambdalite.admin.operations import import_database
        except ImportError:
            build = "commits"
        else:
            settings = lambdalite.Settings.build(
                remote, {"endpoint_url": endpoint_url, "cache_dir": str(work / "import")}
            )
            import_database(settings, source)
            return build
    conn = lambdalite.connect(remote, cache_dir=str(work / "builder"), endpoint_url=endpoint_url)
    src = sqlite3.connect(source)
    schema = [sql for (sql,) in src.execute("SELECT sql FROM sqlite_master WHERE type = 'table'")]
    conn.executescript(";".join(schema))
    for table in ("kv", "events", "blobs"):
        cur = src.execute(f"SELECT * FROM {table}")
        while True:
            batch = cur.fetchmany(max(1, BATCH_BYTES // (BLOB + 96)))
            if not batch:
                break
            marks = ", ".join("?" * len(batch[0]))
            conn.execute("BEGIN")
            conn.executemany(f"INSERT INTO {table} VALUES ({marks})", batch)
            conn.commit()
    src.close()
    conn.close()
    return "commits"


# ---------------------------------------------------------------------------- one size


def run_size(
    backend: str,
    remote: str,
    endpoint_url: str | None,
    size_mb: float,
    work: Path,
    args: argparse.Namespace,
) -> list[dict[str, Any]]:
    rng = random.Random(args.seed)
    source = work / "source.sqlite"
    t0 = time.perf_counter()
    build_file(source, int(size_mb * MB), rng)
    how = publish(args.build, source, remote, endpoint_url, work)
    source.unlink()
    log(f"  built {size_mb:g} MB on {backend} via {how} in {time.perf_counter() - t0:.1f} s")

    def instance(name: str) -> lambdalite.Connection:
        return lambdalite.connect(remote, cache_dir=str(work / name), endpoint_url=endpoint_url)

    a, b = instance("a"), instance("b")
    for conn in (a, b):
        conn.execute("SELECT count(*) FROM kv").fetchone()  # warm: pull the database
    db_bytes = os.path.getsize(a.replica.db_path)
    samples: dict[str, list[Sample]] = {s: [] for s in SCENARIOS}

    def read() -> None:
        a.execute("SELECT v FROM kv WHERE k = ?", (rng.randint(1, 100),)).fetchone()

    def change_one_row(conn: lambdalite.Connection) -> Callable[[], None]:
        def body() -> None:
            conn.execute("BEGIN")
            conn.execute("UPDATE kv SET v = ? WHERE k = ?", (_text(rng, 20), rng.randint(1, 100)))
            conn.commit()

        return body

    def write_many() -> None:
        a.execute("BEGIN")
        a.executemany(
            "INSERT INTO events (payload) VALUES (?)", [(_text(rng, 100),) for _ in range(1000)]
        )
        a.commit()

    for _ in range(args.repeat):
        samples["read_unchanged"].append(measure(a, read))
    for _ in range(args.cycle):
        change_one_row(b)()  # another instance commits one row
        samples["read_after_change"].append(measure(a, read))
    for _ in range(args.cycle):
        samples["write_1_row"].append(measure(a, change_one_row(a)))
    for _ in range(args.repeat):
        samples["write_1000_rows"].append(measure(a, write_many))
    for conn in (a, b):
        conn.close()
    for i in range(args.cold_repeat):
        cold = instance(f"cold-{i}")
        samples["cold_start"].append(measure(cold, _first_read(cold)))
        cold.close()
        shutil.rmtree(work / f"cold-{i}", ignore_errors=True)
    return [
        summarize(backend, size_mb, db_bytes, scenario, samples[scenario]) for scenario in SCENARIOS
    ]


def summarize(
    backend: str, size_mb: float, db_bytes: int, scenario: str, samples: list[Sample]
) -> dict[str, Any]:
    ms = sorted(s.seconds * 1000 for s in samples)
    return {
        "backend": backend,
        "size_mb": size_mb,
        "db_bytes": db_bytes,
        "scenario": scenario,
        "repeats": len(samples),
        "requests": statistics.median(s.requests for s in samples),
        "gets": statistics.median(s.gets for s in samples),
        "puts": statistics.median(s.puts for s in samples),
        "not_modified": statistics.median(s.not_modified for s in samples),
        "bytes_down": statistics.median(s.bytes_down for s in samples),
        "bytes_up": statistics.median(s.bytes_up for s in samples),
        "bytes_down_mean": statistics.fmean(s.bytes_down for s in samples),
        "bytes_up_mean": statistics.fmean(s.bytes_up for s in samples),
        "latency_p50_ms": statistics.median(ms),
        "latency_p95_ms": ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))],
        "latency_max_ms": ms[-1],
        "full_copy": full_copy(scenario, db_bytes),
        "samples": [asdict(s) for s in samples],
    }


def full_copy(scenario: str, db_bytes: int) -> dict[str, int]:
    """What the full-copy-per-commit tools move (analytical, from the file size)."""
    if scenario == "read_unchanged":
        return {"requests": 1, "bytes_down": 0, "bytes_up": 0}  # conditional GET: 304
    if scenario in ("read_after_change", "cold_start"):
        return {"requests": 1, "bytes_down": db_bytes, "bytes_up": 0}
    return {"requests": 2, "bytes_down": 0, "bytes_up": db_bytes}  # check + whole-file PUT


# ---------------------------------------------------------------------------- backends


# ---------------------------------------------------------------------------- output

LABELS = {
    "read_unchanged": "read, unchanged",
    "read_after_change": "read after a 1-row change",
    "write_1_row": "1-row write",
    "write_1000_rows": "1,000-row write",
    "cold_start": "cold start",
}


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| DB size | backend | transaction | n | requests (GET/PUT) | bytes down: median / mean "
        "| bytes up: median / mean | p50 | full copy*: requests | full copy*: bytes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fc = r["full_copy"]
        out.append(
            f"| {format_bytes(r['db_bytes'])} | {r['backend']} | {LABELS[r['scenario']]} "
            f"| {r['repeats']} | {r['requests']:g} ({r['gets']:g}/{r['puts']:g}) "
            f"| {format_bytes(r['bytes_down'])} / {format_bytes(r['bytes_down_mean'])} "
            f"| {format_bytes(r['bytes_up'])} / {format_bytes(r['bytes_up_mean'])} "
            f"| {r['latency_p50_ms']:.1f} ms "
            f"| {fc['requests']} | {format_bytes(fc['bytes_down'] + fc['bytes_up'])} |"
        )
    out.append("")
    out.append("\\* full copy per commit: computed from the file size, not measured.")
    return "\n".join(out)


def latency_table(rows: list[dict[str, Any]]) -> str:
    commits = [r for r in rows if r["scenario"] == "write_1_row"]
    out = [
        "| DB size | backend | commit p50 | p95 | max | bytes up per 1-row commit: median "
        "| mean (amortized) | full copy* | full copy / lambdalite mean |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in commits:
        fc = r["full_copy"]["bytes_up"]
        out.append(
            f"| {format_bytes(r['db_bytes'])} | {r['backend']} | {r['latency_p50_ms']:.1f} ms "
            f"| {r['latency_p95_ms']:.1f} ms | {r['latency_max_ms']:.0f} ms "
            f"| {format_bytes(r['bytes_up'])} | {format_bytes(r['bytes_up_mean'])} "
            f"| {format_bytes(fc)} | {fc / max(r['bytes_up_mean'], 1):,.1f}x |"
        )
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = (
        ("write_1_row", "bytes_up", "bytes up per 1-row commit"),
        ("read_after_change", "bytes_down", "bytes down per read after a 1-row change"),
    )
    for ax, (scenario, key, title) in zip(axes, panels, strict=True):
        chosen = [r for r in rows if r["scenario"] == scenario]
        for backend in sorted({r["backend"] for r in chosen}):
            mine = sorted(
                (r for r in chosen if r["backend"] == backend), key=lambda r: r["db_bytes"]
            )
            xs = [r["db_bytes"] for r in mine]
            line = ax.plot(
                xs, [max(r[key], 1) for r in mine], "o-", label=f"lambdalite ({backend}), median"
            )
            ax.plot(
                xs,
                [max(r[f"{key}_mean"], 1) for r in mine],
                "^:",
                color=line[0].get_color(),
                label=f"lambdalite ({backend}), mean over a compaction cycle",
            )
        sizes = sorted({r["db_bytes"] for r in chosen})
        ax.plot(sizes, sizes, "s--", color="grey", label="full copy per commit (computed)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("database size (bytes)")
        ax.set_ylabel("bytes")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _first_read(conn: lambdalite.Connection) -> Callable[[], object]:
    return lambda: conn.execute("SELECT count(*) FROM kv").fetchone()


def _text(rng: random.Random, n: int) -> str:
    return rng.randbytes((n + 1) // 2).hex()[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100", help="database sizes in MB (default: 1,100)")
    parser.add_argument("--backends", default="folder,s3", help="folder, s3 (default: both)")
    parser.add_argument("--repeat", type=int, default=15, help="transactions per measurement")
    parser.add_argument(
        "--cycle",
        type=int,
        default=65,
        help="1-row writes, and reads after a 1-row change, measured in a row: the default spans "
        "one compaction cycle (64 deltas), so means include the amortized snapshot upload",
    )
    parser.add_argument("--cold-repeat", type=int, default=3, help="cold starts per size")
    parser.add_argument("--build", choices=("import", "commits"), default="import")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - {"folder", "s3"}
    if (
        unknown
        or not sizes
        or min(sizes) <= 0
        or args.repeat < 1
        or args.cycle < 1
        or args.cold_repeat < 1
    ):
        parser.error(f"bad arguments (unknown backends: {sorted(unknown)})")
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lambdalite-sync-costs-") as tmp:
        for backend in backends:
            with backend_remote(backend, Path(tmp) / backend, name="lambdalite-bench") as where:
                if where is None:
                    continue
                prefix, endpoint = where
                for size in sizes:
                    log(f"{backend}: {size:g} MB")
                    work = Path(tmp) / backend / f"size-{size:g}"
                    work.mkdir(parents=True)
                    rows += run_size(
                        backend, f"{prefix}/size-{size:g}mb", endpoint, size, work, args
                    )
                    shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    print("## Storage requests and bytes per transaction (requests: median)\n")
    print(table(rows))
    print("\n## Commit latency and bytes per one-row commit\n")
    print(latency_table(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "sizes_mb": sizes,
        "backends": backends,
        "repeat": args.repeat,
        "cycle": args.cycle,
        "cold_repeat": args.cold_repeat,
        "build": args.build,
        "seconds": round(elapsed, 1),
        "full_copy": "computed from the file size (not measured): a changed file is downloaded "
        "whole, every commit uploads the whole file",
    }
    (args.out / "sync_costs.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    if plot(rows, args.out / "sync_costs.png"):
        log(f"wrote {args.out / 'sync_costs.png'}")
    log(f"wrote {args.out / 'sync_costs.json'} ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
