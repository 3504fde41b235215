"""The simulated Lambda fleet behind ``lambdalite demo`` and the benchmarks.

N worker processes (``spawn``: nothing is inherited, as between real Lambda
instances), each with its own cache dir, run a small guestbook app against one
remote. A request is, with probability ``write_ratio``, a write transaction::

    BEGIN; SELECT n FROM counter; INSERT INTO guestbook ...; UPDATE counter SET n = ?; COMMIT

(a read-modify-write, re-run with jittered backoff on
:class:`~lambdalite.errors.ConflictError`), otherwise a read transaction: the
counter and the last 10 guestbook rows. Each worker records, per request, its
kind, latency, conflicts and what crossed the wire (``conn.replica.stats``
deltas); the first pull (the cold start) is recorded apart, before the clock
starts.

The parent creates the schema, starts the workers together, aggregates, and
checks the outcome from a fresh instance: **lost updates** (acknowledged writes
minus the counter's growth), guestbook rows of acknowledged writes that are
missing (or rows of writes that were never acknowledged), and ``PRAGMA
integrity_check``. A run is good when all three are 0, 0 and ``ok``::

    from lambdalite.fleet import FleetConfig, run_fleet

    result = run_fleet(FleetConfig(instances=4, requests=50, write_ratio=0.5))
    assert result.ok, result.to_dict()

Without a ``remote`` the fleet uses a fresh folder remote in its temporary
directory. Another fleet running against the same remote at the same time
would make the counter check meaningless; rows are tagged with a run id.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import queue
import random
import secrets
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import lambdalite
from lambdalite.errors import ConfigurationError, ConflictError, LambdaliteError
from lambdalite.replica.stats import StorageStats

__all__ = [
    "FleetConfig",
    "FleetError",
    "FleetResult",
    "LatencySummary",
    "ProgressCallback",
    "RequestRecord",
    "TransferSummary",
    "format_bytes",
    "run_fleet",
]

log = logging.getLogger("lambdalite.fleet")

ProgressCallback = Callable[[int, int], None]
"""Called with (requests done, requests in all) after each request of any instance."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
INSERT OR IGNORE INTO counter (id, n) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS guestbook (
    id INTEGER PRIMARY KEY,
    run TEXT NOT NULL,
    instance INTEGER NOT NULL,
    request INTEGER NOT NULL,
    name TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""

_NAMES = ("Ada", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret")
_BACKOFF_BASE = 0.005
_BACKOFF_MAX = 0.2
_POLL = 0.2


class FleetError(LambdaliteError, RuntimeError):
    """An instance of the fleet failed (its traceback is in the message) or the run timed out."""


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What to run. ``requests`` is per instance; ``remote=None`` means a fresh folder remote.

    ``connection_per_transaction``: every transaction (and every retry of one) opens a new
    connection and closes it, as a handler doing ``with closing(lambdalite.connect(...))``
    inside its retried function does, instead of one connection per instance kept across
    requests (a warm Lambda holding it in a global). The local copy is kept either way.

    ``think_time``: mean pause in seconds before each request (exponentially distributed),
    as between a real instance's invocations. Without it, requests run back to back and the
    instance that just committed tends to win the next race too (its local copy is current,
    the losers pull and back off first), so instances take turns in long runs.
    """

    instances: int = 4
    requests: int = 50
    write_ratio: float = 0.5
    remote: str | None = None
    endpoint_url: str | None = None
    seed: int | None = None
    max_attempts: int = 100
    timeout: float = 600.0
    work_dir: str | None = None
    connection_per_transaction: bool = False
    think_time: float = 0.0

    def validate(self) -> None:
        """Raise :class:`ConfigurationError` naming the first invalid field."""
        checks = (
            ("instances", self.instances >= 1, "must be at least 1"),
            ("requests", self.requests >= 1, "must be at least 1"),
            ("write_ratio", 0.0 <= self.write_ratio <= 1.0, "must be between 0 and 1"),
            ("max_attempts", self.max_attempts >= 1, "must be at least 1"),
            ("timeout", self.timeout > 0, "must be positive"),
            ("think_time", self.think_time >= 0, "must not be negative"),
            (
                "remote",
                not (self.remote or "").lower().startswith("memory:"),
                "must be shared by processes (memory:// lives in one process)",
            ),
        )
        for key, good, why in checks:
            if not good:
                raise ConfigurationError(f"{key} {why} (got {getattr(self, key)!r})", key=key)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request of one instance, as the instance saw it."""

    instance: int
    kind: str  # "read" or "write"
    latency: float  # seconds, retries and backoff included
    conflicts: int
    ok: bool  # False: a write that gave up after max_attempts conflicts
    stats: StorageStats
    version: int  # the version the instance's local copy held afterwards


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency of a set of requests, in milliseconds."""

    count: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> LatencySummary:
        if not seconds:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        ms = sorted(s * 1000 for s in seconds)
        return cls(
            count=len(ms),
            p50_ms=_percentile(ms, 50),
            p95_ms=_percentile(ms, 95),
            p99_ms=_percentile(ms, 99),
            max_ms=ms[-1],
            mean_ms=sum(ms) / len(ms),
        )


@dataclass(frozen=True, slots=True)
class TransferSummary:
    """Storage traffic of a set of transactions: totals and means per transaction."""

    transactions: int
    requests: int
    gets: int
    not_modified: int
    puts: int
    bytes_down: int
    bytes_up: int

    @classmethod
    def of(cls, stats: Sequence[StorageStats]) -> TransferSummary:
        total = _sum_stats(stats)
        return cls(
            transactions=len(stats),
            requests=total.requests,
            gets=total.gets,
            not_modified=total.not_modified,
            puts=total.puts,
            bytes_down=total.bytes_down,
            bytes_up=total.bytes_up,
        )

    def _mean(self, value: int) -> float:
        return value / self.transactions if self.transactions else 0.0

    @property
    def requests_per_transaction(self) -> float:
        return self._mean(self.requests)

    @property
    def bytes_down_per_transaction(self) -> float:
        return self._mean(self.bytes_down)

    @property
    def bytes_up_per_transaction(self) -> float:
        return self._mean(self.bytes_up)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["requests_per_transaction"] = self.requests_per_transaction
        d["bytes_down_per_transaction"] = self.bytes_down_per_transaction
        d["bytes_up_per_transaction"] = self.bytes_up_per_transaction
        return d


@dataclass(frozen=True, slots=True)
class FleetResult:
    """The aggregate of one run and its verification (``to_dict()`` is JSON-able)."""

    remote: str
    instances: int
    requests_per_instance: int
    write_ratio: float
    connection_per_transaction: bool
    seed: int
    run_id: str
    duration_s: float
    requests: int
    reads: int
    writes: int  # write transactions attempted (requests)
    commits: int  # write transactions acknowledged
    failed_writes: int  # gave up after max_attempts conflicts: not acknowledged
    conflicts: int  # ConflictErrors retried (or given up on)
    counter_before: int
    counter_after: int
    lost_updates: int
    guestbook_rows: int  # rows of this run
    missing_rows: int  # acknowledged writes without their guestbook row
    unexpected_rows: int  # guestbook rows of writes that were never acknowledged
    integrity: str
    read_latency: LatencySummary
    write_latency: LatencySummary
    cold_start_latency: LatencySummary
    read_transfer: TransferSummary
    write_transfer: TransferSummary
    cold_start_transfer: TransferSummary
    per_instance: list[dict[str, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No lost update, every acknowledged row present, none extra, integrity ``ok``."""
        return (
            self.lost_updates == 0
            and self.missing_rows == 0
            and self.unexpected_rows == 0
            and self.integrity == "ok"
        )

    @property
    def commits_per_second(self) -> float:
        return self.commits / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def conflict_rate(self) -> float:
        """Conflicts per write attempt (each conflict and each commit is one attempt)."""
        attempts = self.commits + self.conflicts
        return self.conflicts / attempts if attempts else 0.0

    def summary_rows(self) -> list[tuple[str, str]]:
        """(label, value) rows for a human-readable table (the demo prints them)."""
        rl, wl, cl = self.read_latency, self.write_latency, self.cold_start_latency
        rt, wt, ct = self.read_transfer, self.write_transfer, self.cold_start_transfer
        return [
            ("instances", str(self.instances)),
            ("requests", f"{self.requests} ({self.requests_per_instance} per instance)"),
            ("read transactions", str(self.reads)),
            ("write transactions", str(self.writes)),
            ("commits", f"{self.commits} ({self.commits_per_second:.1f}/s)"),
            ("conflicts retried", f"{self.conflicts} ({self.conflict_rate:.0%} of attempts)"),
            ("writes given up", str(self.failed_writes)),
            ("lost updates (must be 0)", str(self.lost_updates)),
            ("guestbook rows missing (must be 0)", str(self.missing_rows + self.unexpected_rows)),
            ("integrity", self.integrity),
            ("read latency p50 / p95", f"{rl.p50_ms:.1f} ms / {rl.p95_ms:.1f} ms"),
            ("write latency p50 / p95", f"{wl.p50_ms:.1f} ms / {wl.p95_ms:.1f} ms"),
            ("storage requests per read", f"{rt.requests_per_transaction:.2f}"),
            ("storage requests per write", f"{wt.requests_per_transaction:.2f}"),
            ("bytes per read (down)", format_bytes(rt.bytes_down_per_transaction)),
            (
                "bytes per write (up / down)",
                f"{format_bytes(wt.bytes_up_per_transaction)} / "
                f"{format_bytes(wt.bytes_down_per_transaction)}",
            ),
            (
                "cold start (per instance)",
                f"{ct.requests_per_transaction:.1f} requests, "
                f"{format_bytes(ct.bytes_down_per_transaction)}, {cl.p50_ms:.0f} ms",
            ),
            ("duration", f"{self.duration_s:.2f} s"),
        ]

    def problems(self) -> list[str]:
        """Human-readable reasons why :attr:`ok` is false (empty when it is true)."""
        out = []
        if self.lost_updates:
            out.append(f"{self.lost_updates} lost update(s)")
        if self.missing_rows:
            out.append(f"{self.missing_rows} acknowledged guestbook row(s) missing")
        if self.unexpected_rows:
            out.append(f"{self.unexpected_rows} guestbook row(s) of unacknowledged writes")
        if self.integrity != "ok":
            out.append(f"integrity check: {self.integrity}")
        return out

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, TransferSummary):
                d[name] = value.to_dict()
            elif isinstance(value, LatencySummary):
                d[name] = asdict(value)
            else:
                d[name] = value
        d["ok"] = self.ok
        d["commits_per_second"] = self.commits_per_second
        d["conflict_rate"] = self.conflict_rate
        return d


# ---------------------------------------------------------------------------- the parent


def run_fleet(config: FleetConfig, progress: ProgressCallback | None = None) -> FleetResult:
    """Run the fleet described by ``config`` and verify the outcome (see the module docstring).

    Raises :class:`ConfigurationError` for an invalid ``config`` or remote and
    :class:`FleetError` when an instance fails for a reason other than a conflict.
    """
    config.validate()
    seed = config.seed if config.seed is not None else secrets.randbelow(2**31)
    run_id = secrets.token_hex(6)
    with tempfile.TemporaryDirectory(prefix="lambdalite-fleet-", dir=config.work_dir) as tmp:
        remote = config.remote or _folder_remote(Path(tmp) / "remote")
        setup = _connect(remote, config.endpoint_url, Path(tmp) / "setup")
        try:
            counter_before = _create_schema(setup)
        finally:
            setup.close()
        log.info(
            "fleet %s: %d instances x %d requests against %s (seed %d)",
            run_id,
            config.instances,
            config.requests,
            remote,
            seed,
        )
        specs = [
            _WorkerSpec(
                index=i,
                remote=remote,
                endpoint_url=config.endpoint_url,
                cache_dir=str(Path(tmp) / f"instance-{i}"),
                requests=config.requests,
                write_ratio=config.write_ratio,
                seed=seed * 1000 + i,
                run_id=run_id,
                max_attempts=config.max_attempts,
                connection_per_transaction=config.connection_per_transaction,
                think_time=config.think_time,
                log_level=logging.getLogger("lambdalite").getEffectiveLevel(),
            )
            for i in range(config.instances)
        ]
        outcome = _run_workers(specs, config.timeout, progress)
        check = _verify(remote, config.endpoint_url, Path(tmp) / "verify", run_id, outcome.acked)
    return _summarize(config, remote, seed, run_id, counter_before, outcome, check)


def _folder_remote(path: Path) -> str:
    path.mkdir(parents=True)
    return path.as_uri()


def _connect(remote: str, endpoint_url: str | None, cache_dir: Path) -> lambdalite.Connection:
    return lambdalite.connect(remote, cache_dir=str(cache_dir), endpoint_url=endpoint_url)


def _create_schema(conn: lambdalite.Connection) -> int:
    """Create the app's tables if needed; return the counter's value before the run."""
    for attempt in range(1, 51):
        try:
            conn.executescript(SCHEMA)
            break
        except ConflictError:
            if attempt == 50:
                raise
            time.sleep(random.uniform(0, _BACKOFF_MAX))
    row = conn.execute("SELECT n FROM counter WHERE id = 1").fetchone()
    return int(row[0])


@dataclass(slots=True)
class _Outcome:
    duration: float
    records: list[RequestRecord]
    cold_starts: list[RequestRecord]
    acked: set[tuple[int, int]]  # (instance, request) of every acknowledged write


def _run_workers(
    specs: Sequence[_WorkerSpec], timeout: float, progress: ProgressCallback | None
) -> _Outcome:
    ctx = multiprocessing.get_context("spawn")
    messages: multiprocessing.Queue[tuple[Any, ...]] = ctx.Queue()
    start = ctx.Event()
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(spec, messages, start),
            name=f"lambdalite-instance-{spec.index}",
            daemon=True,
        )
        for spec in specs
    ]
    total = sum(spec.requests for spec in specs)
    outcome = _Outcome(0.0, [], [], set())
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        _collect(procs, messages, deadline, {"ready"}, outcome, progress, total)
        began = time.perf_counter()
        start.set()
        _collect(procs, messages, deadline, {"done"}, outcome, progress, total)
        outcome.duration = time.perf_counter() - began
        for p in procs:
            p.join(timeout=10)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        messages.close()
    return outcome


def _collect(
    procs: Sequence[multiprocessing.process.BaseProcess],
    messages: multiprocessing.Queue[tuple[Any, ...]],
    deadline: float,
    wanted: set[str],
    outcome: _Outcome,
    progress: ProgressCallback | None,
    total: int,
) -> None:
    """Read messages until every instance has sent one of the ``wanted`` kinds."""
    pending = set(range(len(procs)))
    done = len(outcome.records)
    while pending:
        if time.monotonic() > deadline:
            raise FleetError(f"the fleet did not finish in time ({len(pending)} instance(s) left)")
        try:
            msg = messages.get(timeout=_POLL)
        except queue.Empty:
            for i in pending:
                code = procs[i].exitcode
                if code is not None and code != 0:
                    raise FleetError(f"instance {i} exited with code {code}") from None
            continue
        kind, index = msg[0], msg[1]
        if kind == "error":
            raise FleetError(f"instance {index} failed:\n{msg[2]}")
        if kind == "progress":
            done += 1
            if progress is not None:
                progress(done, total)
            continue
        if kind == "ready":
            outcome.cold_starts.append(msg[2])
        elif kind == "done":
            outcome.records.extend(msg[2])
            outcome.acked.update((index, r) for r in msg[3])
        if kind in wanted:
            pending.discard(index)


@dataclass(frozen=True, slots=True)
class _Check:
    counter: int
    rows: set[tuple[int, int]]
    integrity: str


def _verify(
    remote: str, endpoint_url: str | None, cache_dir: Path, run_id: str, acked: set[tuple[int, int]]
) -> _Check:
    """Read the outcome from a fresh instance (a cold start: nothing cached)."""
    conn = _connect(remote, endpoint_url, cache_dir)
    try:
        conn.execute("BEGIN")
        counter = int(conn.execute("SELECT n FROM counter WHERE id = 1").fetchone()[0])
        rows = {
            (int(i), int(r))
            for i, r in conn.execute(
                "SELECT instance, request FROM guestbook WHERE run = ?", (run_id,)
            )
        }
        results = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
        conn.commit()
    finally:
        conn.close()
    integrity = "ok" if results == ["ok"] else "; ".join(results)
    log.info(
        "verified: counter %d, %d rows, %d acknowledged, %s",
        counter,
        len(rows),
        len(acked),
        integrity,
    )
    return _Check(counter, rows, integrity)


def _summarize(
    config: FleetConfig,
    remote: str,
    seed: int,
    run_id: str,
    counter_before: int,
    outcome: _Outcome,
    check: _Check,
) -> FleetResult:
    records = outcome.records
    reads = [r for r in records if r.kind == "read"]
    writes = [r for r in records if r.kind == "write"]
    committed = [r for r in writes if r.ok]
    per_instance = []
    for i in range(config.instances):
        mine = [r for r in records if r.instance == i]
        per_instance.append(
            {
                "instance": i,
                "reads": sum(r.kind == "read" for r in mine),
                "commits": sum(r.kind == "write" and r.ok for r in mine),
                "conflicts": sum(r.conflicts for r in mine),
            }
        )
    acked = len(outcome.acked)
    return FleetResult(
        remote=remote if config.remote else "(temporary folder remote)",
        instances=config.instances,
        requests_per_instance=config.requests,
        write_ratio=config.write_ratio,
        connection_per_transaction=config.connection_per_transaction,
        seed=seed,
        run_id=run_id,
        duration_s=outcome.duration,
        requests=len(records),
        reads=len(reads),
        writes=len(writes),
        commits=len(committed),
        failed_writes=len(writes) - len(committed),
        conflicts=sum(r.conflicts for r in writes),
        counter_before=counter_before,
        counter_after=check.counter,
        lost_updates=counter_before + acked - check.counter,
        guestbook_rows=len(check.rows),
        missing_rows=len(outcome.acked - check.rows),
        unexpected_rows=len(check.rows - outcome.acked),
        integrity=check.integrity,
        read_latency=LatencySummary.of([r.latency for r in reads]),
        write_latency=LatencySummary.of([r.latency for r in committed]),
        cold_start_latency=LatencySummary.of([r.latency for r in outcome.cold_starts]),
        read_transfer=TransferSummary.of([r.stats for r in reads]),
        write_transfer=TransferSummary.of([r.stats for r in writes]),
        cold_start_transfer=TransferSummary.of([r.stats for r in outcome.cold_starts]),
        per_instance=per_instance,
    )


# ---------------------------------------------------------------------------- one instance


@dataclass(frozen=True, slots=True)
class _WorkerSpec:
    index: int
    remote: str
    endpoint_url: str | None
    cache_dir: str
    requests: int
    write_ratio: float
    seed: int
    run_id: str
    max_attempts: int
    connection_per_transaction: bool
    think_time: float
    log_level: int


def _worker_main(
    spec: _WorkerSpec, messages: multiprocessing.Queue[tuple[Any, ...]], start: Event
) -> None:
    """The body of one simulated Lambda instance (a spawned process)."""
    logging.basicConfig(
        level=spec.log_level, format=f"%(asctime)s instance-{spec.index} %(name)s: %(message)s"
    )
    try:
        _Instance(spec, messages).run(start)
    except BaseException:  # reported to the parent, which raises FleetError
        messages.put(("error", spec.index, traceback.format_exc()))


class _Instance:
    def __init__(self, spec: _WorkerSpec, messages: multiprocessing.Queue[tuple[Any, ...]]) -> None:
        self.spec = spec
        self.messages = messages
        plan = random.Random(spec.seed)  # the request mix: the same for a given seed
        self.writes = [plan.random() < spec.write_ratio for _ in range(spec.requests)]
        self.names = [plan.choice(_NAMES) for _ in range(spec.requests)]
        self.rng = random.Random(f"jitter-{spec.seed}")  # backoff: depends on the race
        self.pause = random.Random(f"pause-{spec.seed}")
        self.conn = self._connect()

    def _connect(self) -> lambdalite.Connection:
        spec = self.spec
        return lambdalite.connect(
            spec.remote, cache_dir=spec.cache_dir, endpoint_url=spec.endpoint_url
        )

    def run(self, start: Event) -> None:
        spec = self.spec
        cold = self._measure("cold", self._cold_start)
        self.messages.put(("ready", spec.index, cold))
        start.wait()
        records: list[RequestRecord] = []
        acked: list[int] = []
        for n in range(spec.requests):
            if spec.think_time > 0:
                time.sleep(self.pause.expovariate(1 / spec.think_time))
            if self.writes[n]:
                record = self._measure("write", functools.partial(self._write, n))
                if record.ok:
                    acked.append(n)
            else:
                record = self._measure("read", self._read)
            records.append(record)
            self.messages.put(("progress", spec.index))
        self.conn.close()
        self.messages.put(("done", spec.index, records, acked))

    def _measure(self, kind: str, body: Callable[[], tuple[int, bool]]) -> RequestRecord:
        """Run one request; ``body`` returns (conflicts, committed)."""
        replica = self.conn.replica  # one per process and cache dir, whatever the connection
        before = replica.stats.copy()
        began = time.perf_counter()
        conflicts, ok = body()
        latency = time.perf_counter() - began
        stats = replica.stats.copy() - before
        return RequestRecord(self.spec.index, kind, latency, conflicts, ok, stats, replica.version)

    def _cold_start(self) -> tuple[int, bool]:
        self.conn.execute("SELECT count(*) FROM guestbook").fetchone()
        return 0, True

    def _fresh(self) -> lambdalite.Connection:
        """The connection for the next transaction: a new one if so configured."""
        if self.spec.connection_per_transaction:
            self.conn.close()
            self.conn = self._connect()
        return self.conn

    def _read(self) -> tuple[int, bool]:
        conn = self._fresh()
        conn.execute("BEGIN")
        try:
            conn.execute("SELECT n FROM counter WHERE id = 1").fetchone()
            conn.execute(
                "SELECT name, message, created_at FROM guestbook ORDER BY id DESC LIMIT 10"
            ).fetchall()
        finally:
            conn.commit()
        return 0, True

    def _write(self, request: int) -> tuple[int, bool]:
        """The read-modify-write transaction, re-run on conflict: (conflicts, committed)."""
        conflicts = 0
        while True:
            try:
                self._write_once(request)
                return conflicts, True
            except ConflictError:
                conflicts += 1
                if conflicts >= self.spec.max_attempts:
                    log.warning(
                        "instance %d gave up a write after %d conflicts", self.spec.index, conflicts
                    )
                    return conflicts, False
                cap = min(_BACKOFF_MAX, _BACKOFF_BASE * 2 ** min(conflicts, 16))
                time.sleep(self.rng.uniform(0, cap))

    def _write_once(self, request: int) -> None:
        conn = self._fresh()
        spec = self.spec
        conn.execute("BEGIN")
        try:
            (n,) = conn.execute("SELECT n FROM counter WHERE id = 1").fetchone()
            conn.execute(
                "INSERT INTO guestbook (run, instance, request, name, message, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    spec.run_id,
                    spec.index,
                    request,
                    self.names[request],
                    f"hello from instance {spec.index}, request {request}",
                    time.time(),
                ),
            )
            conn.execute("UPDATE counter SET n = ? WHERE id = 1", (n + 1,))
            conn.commit()
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise


def _sum_stats(stats: Sequence[StorageStats]) -> StorageStats:
    total = StorageStats()
    for s in stats:
        for f in fields(s):
            setattr(total, f.name, getattr(total, f.name) + getattr(s, f.name))
    return total


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation between closest ranks."""
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    pos = (len(sorted_values) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))


def format_bytes(n: float) -> str:
    """``n`` bytes in B, KiB, MiB or GiB, with one decimal above bytes."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"
