"""A Jepsen-style chaos test of the replica engine on S3: many instances, kills, freezes, faults.

::

    from lambdalite.testing.chaos import ChaosConfig, run_chaos

    result = run_chaos(ChaosConfig(remote="s3://bucket/chaos", endpoint_url=server.endpoint_url,
                                   work_dir=str(tmp_path), writers=4, duration=30, seed=1))
    assert result.ok, result.table() + "\\n".join(result.violations)

From a shell (starts a throwaway SeaweedFS when no ``--remote`` is given; prints a
Markdown table; exit status 1 if any violation was found)::

    python -m lambdalite.testing.chaos --writers 16 --minutes 10 --seed 1 --json chaos.json

**The workload.** ``writers`` processes run at once, each one simulated instance (a
``python -m lambdalite.testing.chaos worker`` subprocess with a cache dir of its own),
talking to S3 through a :class:`~lambdalite.testing.s3proxy.FaultProxy` that injects
random faults (lost answers after a write landed, 5xx before and after, resets, truncated
and slow answers). Each transaction picks a new unique id (``<instance>-<sequence>``) and
runs ``BEGIN; SELECT n FROM counter; UPDATE counter SET n = n + 1; INSERT INTO ids(id)
VALUES (?); COMMIT``. ``ids`` has no unique constraint, so a transaction applied twice
would show as a duplicate row.

**The journals.** Before ``BEGIN`` a worker appends ``attempt <id> <t>`` to its own
journal and fsyncs it; after the transaction, ``ok <id> <n> <t>`` (``n``: the counter it
read), ``unknown <id> <n> <t>`` (:class:`~lambdalite.errors.CommitOutcomeUnknownError`:
the engine could not learn whether the commit landed) or ``fail <id> <ErrorClass> <t>``
(any other exception: a definite failure, the transaction left no trace). ``t`` is
:func:`time.monotonic`, one clock for every process of the host. An ``attempt`` without a
result (the process was killed) is unknown too.

**The nemesis.** At random times (driven by ``random.Random(seed)``, which also seeds the
proxy) a random worker is SIGKILLed and replaced by a new instance with a new, cold cache
dir, and a random worker is SIGSTOPped, then SIGCONTed 0.5 to 3 seconds later. At the end
every worker is resumed and stopped with SIGTERM (a worker finishes its transaction
first), and the faults are cleared.

**The checker** reads the remote directly (no proxy), with a cold instance, and holds it
to DESIGN §2:

* every acknowledged id is present exactly once (none *lost*, none *duplicated*);
* no id of a definite failure is present, nor an id never attempted (*phantoms*);
* every present id was acknowledged or is unknown (the unknowns that *landed* are counted);
* ``counter`` equals the number of rows, ``PRAGMA integrity_check`` is ok, and
  :func:`lambdalite.admin.verify` finds nothing wrong;
* the history is a serial order of the transactions: the rows' order (rowid) is the commit
  order, each acknowledged transaction read exactly the counter of its position (no stale
  read committed), and one acknowledged before another began commits before it (real time);
* every retained version restores (:func:`lambdalite.admin.restore`) into a file that plain
  ``sqlite3`` opens with integrity ok and ``counter`` = rows, each version holds exactly
  one transaction more than the one before it and the rows of every earlier version as a
  prefix (a monotonic history), and the last version is what the cold instance read.
  Up to ``max_restore`` versions are all restored; beyond, a seeded sample of
  ``restore_sample`` plus the first and the last.

Every violation is a sentence in :attr:`ChaosResult.violations`; the work dir keeps the
journals (``<instance>.journal``), each worker's log (``<instance>.log``) and the
nemesis's own log (``nemesis.log``, times on the journals' clock) for the post-mortem.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, TextIO

import lambdalite
from lambdalite import errors
from lambdalite.admin import list_versions, restore, verify
from lambdalite.config import Settings
from lambdalite.errors import ConfigurationError
from lambdalite.testing.s3proxy import FaultKind, FaultProxy

__all__ = [
    "DEFAULT_RATES",
    "SCHEMA",
    "ChaosConfig",
    "ChaosResult",
    "Evaluation",
    "Journals",
    "Observation",
    "VersionState",
    "check_history",
    "evaluate",
    "main",
    "observe",
    "read_journals",
    "run_chaos",
    "run_worker",
]

logger = logging.getLogger("lambdalite.testing.chaos")

DEFAULT_RATES: Mapping[str, float] = {
    "reset_after": 0.03,
    "error_after": 0.02,
    "error_before": 0.03,
    "error_500_before": 0.01,
    "reset_before": 0.01,
    "truncate": 0.01,
    "trickle": 0.01,
    "delay": 0.01,
}
"""Fault probabilities per request (13 % of the requests get one)."""

SCHEMA = (
    "CREATE TABLE counter(n INTEGER)",
    "INSERT INTO counter VALUES (0)",
    "CREATE TABLE ids(id TEXT)",  # no unique constraint: a transaction applied twice shows
)

_LAMBDALITE_ERRORS = frozenset(errors.__all__)
_POLL = 0.05  # seconds between two looks of the nemesis at its schedule
_LIST_LIMIT = 20  # ids named in one violation sentence
_RESTORE_THREADS = 4


# ---------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ChaosConfig:
    """One chaos run. ``remote`` is an ``s3://`` URL whose prefix holds no database yet;
    ``endpoint_url`` the S3 server itself (plain ``http://``): the workers reach it through
    a fault proxy started in front of it, the checker directly."""

    remote: str
    endpoint_url: str
    work_dir: str
    writers: int = 4
    duration: float = 30.0
    """Seconds of chaos (the run goes on until the minimums below are met)."""
    seed: int = 0
    rates: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    """Fault probability per request, by :class:`~lambdalite.testing.s3proxy.FaultKind`."""
    proxy_delay: float = 0.3
    """Seconds a ``delay`` fault stalls an answer."""
    proxy_latency: float = 0.0
    kill_interval: float | None = 5.0
    """Mean seconds between two SIGKILLs (each replaced by a cold instance); None: none."""
    stop_interval: float | None = 4.0
    """Mean seconds between two SIGSTOPs; None: none."""
    freeze: tuple[float, float] = (0.5, 3.0)
    """How long a SIGSTOPped worker stays frozen (uniform, seconds)."""
    warm_restarts: float = 0.0
    """Probability that a killed instance's replacement reuses its cache dir (0: always cold)."""
    options: Mapping[str, Any] = field(default_factory=dict)
    """Options for every worker's ``lambdalite.connect`` (``compact_after_deltas``, ...)."""
    think_time: float = 0.0
    """Mean seconds a worker pauses between two transactions (exponential; 0: none)."""
    min_acknowledged: int = 0
    """The run goes on past ``duration`` until this many transactions were acknowledged..."""
    max_duration: float | None = None
    """...but not past this many seconds (default: ten times ``duration``)."""
    max_restore: int = 300
    """Restore every retained version up to this many; beyond, a sample."""
    restore_sample: int = 100
    stop_timeout: float = 60.0
    """Seconds the workers get to stop after SIGTERM before they are SIGKILLed."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables for the workers, on top of this process's."""
    worker_log_level: str = "INFO"

    def __post_init__(self) -> None:
        if not self.remote.startswith("s3://"):
            raise ConfigurationError(
                f"the chaos test needs an s3:// remote, not {self.remote!r}", key="remote"
            )
        if not self.endpoint_url.startswith("http://"):
            raise ConfigurationError(
                "endpoint_url must be the S3 server's plain http:// URL (the fault proxy "
                f"sits in front of it), not {self.endpoint_url!r}",
                key="endpoint_url",
            )
        if self.writers < 1:
            raise ConfigurationError("writers must be >= 1", key="writers")
        if self.duration <= 0:
            raise ConfigurationError("duration must be > 0", key="duration")
        for name in ("kill_interval", "stop_interval"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"{name} must be > 0 or None", key=name)
        low, high = self.freeze
        if not 0 <= low <= high:
            raise ConfigurationError("freeze must be (min, max) with 0 <= min <= max", key="freeze")
        if not 0 <= self.warm_restarts <= 1:
            raise ConfigurationError("warm_restarts must be in [0, 1]", key="warm_restarts")
        if self.max_restore < 2 or self.restore_sample < 0:
            raise ConfigurationError("max_restore must be >= 2", key="max_restore")

    @property
    def deadline(self) -> float:
        """The longest the chaos may last, in seconds."""
        return self.max_duration if self.max_duration is not None else 10 * self.duration


# ---------------------------------------------------------------------------- the worker


class _Stop:
    requested = False

    @classmethod
    def on_signal(cls, signum: int, frame: FrameType | None) -> None:
        cls.requested = True


def _journal_line(journal: TextIO, line: str) -> None:
    journal.write(line + "\n")
    journal.flush()
    os.fsync(journal.fileno())


def _error_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "lambdalite.errors":
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def run_worker(
    *,
    remote: str,
    endpoint_url: str,
    cache_dir: str,
    journal: str,
    name: str,
    options: Mapping[str, Any],
    think_time: float = 0.0,
    seed: int = 0,
) -> int:
    """One instance's loop, until SIGTERM (checked between transactions) or the parent dies.

    Runs in a process of its own (``python -m lambdalite.testing.chaos worker``); see the
    module docstring for the transaction and the journal.
    """
    signal.signal(signal.SIGTERM, _Stop.on_signal)
    parent = os.getppid()
    rng = random.Random(seed)

    def connect() -> lambdalite.Connection:
        return lambdalite.connect(
            remote,
            cache_dir=cache_dir,
            endpoint_url=endpoint_url,
            isolation_level=None,
            **options,
        )

    conn = connect()
    logger.info("instance %s (pid %d) starts with cache dir %s", name, os.getpid(), cache_dir)
    seq = 0
    with open(journal, "a", buffering=1, encoding="utf-8") as out:
        while not _Stop.requested and os.getppid() == parent:
            seq += 1
            ident = f"{name}-{seq}"
            _journal_line(out, f"attempt {ident} {time.monotonic():.6f}")
            n: int | None = None
            try:
                conn.execute("BEGIN")
                (n,) = conn.execute("SELECT n FROM counter").fetchone()
                conn.execute("UPDATE counter SET n = n + 1")
                conn.execute("INSERT INTO ids(id) VALUES (?)", (ident,))
                conn.commit()
            except lambdalite.CommitOutcomeUnknownError as exc:
                logger.warning("unknown %s: %s", ident, exc)
                result = f"unknown {ident} {'-' if n is None else n}"
            except Exception as exc:
                level = logging.DEBUG if isinstance(exc, lambdalite.ConflictError) else logging.INFO
                if _error_name(exc) not in _LAMBDALITE_ERRORS:
                    level = logging.ERROR
                logger.log(
                    level,
                    "fail %s: %s: %s",
                    ident,
                    _error_name(exc),
                    exc,
                    exc_info=level >= logging.ERROR,
                )
                result = f"fail {ident} {_error_name(exc)}"
            else:
                result = f"ok {ident} {n}"
            _journal_line(out, f"{result} {time.monotonic():.6f}")
            if conn.in_transaction:
                try:
                    conn.rollback()
                except Exception as exc:
                    logger.warning("rollback failed (%s: %s); reconnecting", _error_name(exc), exc)
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = connect()
            if think_time > 0:
                time.sleep(rng.expovariate(1 / think_time))
    conn.close()
    logger.info("instance %s stops after %d transactions", name, seq)
    return 0


# ---------------------------------------------------------------------------- journals


@dataclass
class Journals:
    """What the workers' journals say about every transaction id."""

    attempted: dict[str, float] = field(default_factory=dict)
    """id -> when it began (``time.monotonic``)."""
    acknowledged: dict[str, tuple[int | None, float | None]] = field(default_factory=dict)
    """id -> (the counter it read, when its commit returned)."""
    failed: dict[str, str] = field(default_factory=dict)
    """id -> the class of the definite error."""
    unknown: dict[str, int | None] = field(default_factory=dict)
    """id -> the counter it read: CommitOutcomeUnknownError."""
    unresolved: set[str] = field(default_factory=set)
    """Attempted without a result: the process was killed (unknown too)."""
    anomalies: list[str] = field(default_factory=list)
    """Lines that contradict each other (a broken journal, not a database violation)."""

    @property
    def uncertain(self) -> set[str]:
        """Every id whose outcome is unknown: explicit, or attempted without a result."""
        return set(self.unknown) | self.unresolved


def _float(text: str | None) -> float | None:
    if text is None or text == "-":
        return None
    return float(text)


def _int(text: str | None) -> int | None:
    if text is None or text == "-":
        return None
    return int(text)


def read_journals(paths: Iterable[str | os.PathLike[str]]) -> Journals:
    """Parse the journals at ``paths``. A last line without its newline (the writer was
    killed while writing it) is ignored: its transaction stays unresolved."""
    out = Journals()
    results: set[str] = set()
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        lines = text.split("\n")
        if lines and lines[-1]:
            logger.info("%s ends with a partial line %r (ignored)", path, lines[-1])
        for number, line in enumerate(lines[:-1], start=1):
            where = f"{os.path.basename(os.fspath(path))}:{number}"
            words = line.split()
            if not words:
                continue
            kind, rest = words[0], words[1:]
            if not rest:
                out.anomalies.append(f"{where}: no id in {line!r}")
                continue
            ident = rest[0]
            arg = rest[1] if len(rest) > 1 else None
            when = rest[2] if len(rest) > 2 else None
            try:
                if kind == "attempt":
                    if ident in out.attempted:
                        out.anomalies.append(f"{where}: {ident} attempted twice")
                    out.attempted[ident] = _float(arg) or 0.0
                    continue
                if kind not in ("ok", "fail", "unknown"):
                    out.anomalies.append(f"{where}: unknown line {line!r}")
                    continue
                if ident not in out.attempted:
                    out.anomalies.append(f"{where}: {kind} {ident} without an attempt")
                if ident in results:
                    out.anomalies.append(f"{where}: a second result for {ident}")
                results.add(ident)
                if kind == "ok":
                    out.acknowledged[ident] = (_int(arg), _float(when))
                elif kind == "unknown":
                    out.unknown[ident] = _int(arg)
                else:
                    out.failed[ident] = arg or "?"
            except ValueError:
                out.anomalies.append(f"{where}: unreadable line {line!r}")
    out.unresolved = set(out.attempted) - results
    return out


# ---------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class Observation:
    """What a database holds: the ids in rowid order (the commit order), the counter."""

    ids: tuple[str, ...]
    counter: int | None
    """``None`` when the counter table does not hold exactly one row."""
    counter_rows: int
    integrity: tuple[str, ...]


def observe(conn: sqlite3.Connection | lambdalite.Connection) -> Observation:
    """Read an :class:`Observation` through ``conn`` (plain sqlite3 or lambdalite)."""
    integrity = tuple(str(row[0]) for row in conn.execute("PRAGMA integrity_check").fetchall())
    ids = tuple(str(row[0]) for row in conn.execute("SELECT id FROM ids ORDER BY rowid"))
    counters = [int(row[0]) for row in conn.execute("SELECT n FROM counter").fetchall()]
    counter = counters[0] if len(counters) == 1 else None
    return Observation(ids, counter, len(counters), integrity)


def _names(ids: Iterable[str]) -> str:
    items = sorted(ids)
    text = ", ".join(items[:_LIST_LIMIT])
    if len(items) > _LIST_LIMIT:
        text += f" ... ({len(items)} in all)"
    return text


@dataclass
class Evaluation:
    """The verdict on the final database against the journals."""

    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    phantom: list[str] = field(default_factory=list)
    unknown_landed: int = 0
    counter_ok: bool = False
    violations: list[str] = field(default_factory=list)


def evaluate(journals: Journals, final: Observation) -> Evaluation:
    """Hold the final database to the journals (see the module docstring)."""
    ev = Evaluation()
    v = ev.violations
    v += [f"journal: {a}" for a in journals.anomalies]
    counts = Counter(final.ids)
    position: dict[str, int] = {}
    for index, ident in enumerate(final.ids):
        position.setdefault(ident, index)
    ev.lost = sorted(i for i in journals.acknowledged if counts[i] == 0)
    ev.duplicated = sorted(i for i, c in counts.items() if c > 1)
    failed_present = sorted(i for i in journals.failed if counts[i] > 0)
    never_attempted = sorted(i for i in counts if i not in journals.attempted)
    ev.phantom = sorted({*failed_present, *never_attempted})
    uncertain = journals.uncertain
    ev.unknown_landed = sum(1 for i in uncertain if counts[i] > 0)
    if ev.lost:
        v.append(f"lost: {len(ev.lost)} acknowledged ids are missing: {_names(ev.lost)}")
    if ev.duplicated:
        v.append(
            f"duplicated: {len(ev.duplicated)} ids are present more than once: "
            + _names(f"{i} (x{counts[i]})" for i in ev.duplicated)
        )
    if failed_present:
        v.append(
            f"phantom: {len(failed_present)} ids of definite failures are present: "
            + _names(f"{i} ({journals.failed[i]})" for i in failed_present)
        )
    if never_attempted:
        v.append(
            f"phantom: {len(never_attempted)} ids were never attempted: " + _names(never_attempted)
        )
    if final.integrity != ("ok",):
        v.append(f"integrity_check: {'; '.join(final.integrity[:10])}")
    if final.counter is None:
        v.append(f"the counter table holds {final.counter_rows} rows, not 1")
    ev.counter_ok = final.counter == len(final.ids)
    if final.counter is not None and not ev.counter_ok:
        v.append(f"counter is {final.counter} but ids holds {len(final.ids)} rows")
    # The rows' order is the commit order: each acknowledged transaction read the counter of
    # its position (a stale read never commits), and real time is respected.
    stale = []
    for ident, (n, _) in journals.acknowledged.items():
        if n is not None and ident in position and position[ident] != n:
            stale.append(f"{ident} (read {n}, committed as row {position[ident]})")
    for ident, n in journals.unknown.items():
        if n is not None and ident in position and position[ident] != n:
            stale.append(f"{ident} (unknown outcome, read {n}, landed as row {position[ident]})")
    if stale and not ev.duplicated:
        v.append(
            f"not serial: {len(stale)} transactions committed on a counter they did not "
            f"read: {_names(stale)}"
        )
    v += _real_time_violations(journals, position)
    return ev


def _real_time_violations(journals: Journals, position: Mapping[str, int]) -> list[str]:
    """An id acknowledged before another began must precede it in the commit order."""
    acked = sorted(
        (when, position[i], i)
        for i, (_, when) in journals.acknowledged.items()
        if when is not None and i in position
    )
    ends = [a[0] for a in acked]
    best: list[tuple[int, str]] = []  # prefix maximum of (position, id) over acked by end time
    for _, pos, ident in acked:
        best.append(max(best[-1], (pos, ident)) if best else (pos, ident))
    wrong = []
    for ident, pos in position.items():
        start = journals.attempted.get(ident)
        if start is None:
            continue
        k = bisect.bisect_left(ends, start)  # acked strictly before ``start``
        if k and best[k - 1][0] > pos:
            wrong.append(
                f"{ident} (row {pos}) began after {best[k - 1][1]} "
                f"(row {best[k - 1][0]}) was acknowledged"
            )
    if not wrong:
        return []
    return [
        f"real-time order: {len(wrong)} transactions committed before one acknowledged "
        f"before they began: {_names(wrong)}"
    ]


@dataclass(frozen=True)
class VersionState:
    """One retained version, restored: its observation, or why it could not be."""

    version: int
    observation: Observation | None
    error: str | None = None


def check_history(
    states: Sequence[VersionState], final: Observation | None, final_version: int | None
) -> list[str]:
    """Hold the restored versions to a monotonic history (see the module docstring)."""
    v: list[str] = []
    good: list[tuple[int, Observation]] = []
    for s in sorted(states, key=lambda s: s.version):
        if s.observation is None:
            v.append(f"version {s.version} is not restorable: {s.error}")
            continue
        o = s.observation
        if o.integrity != ("ok",):
            v.append(f"version {s.version}: integrity_check: {'; '.join(o.integrity[:5])}")
        if o.counter != len(o.ids):
            v.append(f"version {s.version}: counter is {o.counter}, ids holds {len(o.ids)} rows")
        dups = sorted(i for i, c in Counter(o.ids).items() if c > 1)
        if dups:
            v.append(f"version {s.version}: duplicated ids {_names(dups)}")
        good.append((s.version, o))
    for (v1, o1), (v2, o2) in itertools.pairwise(good):
        if (
            o1.counter is not None
            and o2.counter is not None
            and (o2.counter - o1.counter != v2 - v1)
        ):
            v.append(
                f"versions {v1} -> {v2}: counter {o1.counter} -> {o2.counter}, not one "
                "transaction per version"
            )
        if o2.ids[: len(o1.ids)] != o1.ids:
            gone = sorted(set(o1.ids) - set(o2.ids))
            v.append(
                f"versions {v1} -> {v2}: the rows of {v1} are not a prefix of {v2}'s"
                + (f" (gone: {_names(gone)})" if gone else " (reordered)")
            )
    if good and final is not None and good[-1][0] == final_version and good[-1][1].ids != final.ids:
        v.append(f"version {final_version} restored differs from what a cold instance reads")
    return v


# ---------------------------------------------------------------------------- the result


@dataclass
class ChaosResult:
    """What a chaos run did and found; ``ok`` when no violation was found."""

    writers: int
    minutes: float
    seed: int
    faults: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    warm_restarts: int = 0
    """Kills whose replacement reused the killed instance's cache dir."""
    stops: int = 0
    forced_stops: int = 0
    """Workers that did not stop within ``stop_timeout`` of SIGTERM and were SIGKILLed."""
    crashes: int = 0
    """Workers that exited without being told to (each also a violation)."""
    attempted: int = 0
    acknowledged: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    unknown: int = 0
    unknown_explicit: int = 0
    unknown_landed: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    phantom: list[str] = field(default_factory=list)
    rows: int = 0
    counter: int | None = None
    counter_ok: bool = False
    integrity: list[str] = field(default_factory=list)
    verify_ok: bool = False
    current_version: int | None = None
    versions_retained: int = 0
    versions_checked: int = 0
    versions_restorable: int = 0
    versions_sampled: bool = False
    checked_versions: list[int] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    work_dir: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"ok": self.ok}

    def table(self) -> str:
        """A Markdown table of the run."""

        def by_kind(counts: Mapping[str, int]) -> str:
            if not counts:
                return "0"
            parts = ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda x: -x[1]))
            return f"{sum(counts.values())} ({parts})"

        def yes(flag: bool) -> str:
            return "ok" if flag else "**FAILED**"

        sample = "sampled, first and last included" if self.versions_sampled else "all"
        rows = [
            ("writers", str(self.writers)),
            ("duration", f"{self.minutes:.1f} min (seed {self.seed})"),
            ("faults injected", by_kind(self.faults)),
            ("SIGKILL (replaced by a new instance)", f"{self.kills} ({self.warm_restarts} warm)"),
            ("SIGSTOP / SIGCONT", str(self.stops)),
            ("transactions attempted", str(self.attempted)),
            ("acknowledged", str(self.acknowledged)),
            ("definite failures", by_kind(self.failed)),
            (
                "unknown outcome (explicit + killed)",
                f"{self.unknown} ({self.unknown_explicit} + {self.unknown - self.unknown_explicit})"
                f", {self.unknown_landed} landed",
            ),
            (
                "lost / duplicated / phantom",
                f"{len(self.lost)} / {len(self.duplicated)} / {len(self.phantom)}",
            ),
            (
                "rows = acknowledged + unknown landed",
                f"{self.rows} = {self.acknowledged} + {self.unknown_landed}",
            ),
            ("counter = rows", f"{yes(self.counter_ok)} ({self.counter})"),
            ("integrity_check", "; ".join(self.integrity[:3]) or "-"),
            ("lambdalite verify", yes(self.verify_ok)),
            (
                "versions restorable / checked / retained",
                f"{self.versions_restorable} / {self.versions_checked} / {self.versions_retained}"
                f" ({sample}; current {self.current_version})",
            ),
            ("workers crashed / SIGKILLed at the end", f"{self.crashes} / {self.forced_stops}"),
            ("violations", str(len(self.violations)) if self.violations else "none"),
        ]
        lines = ["| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        return "\n".join(lines)


# ---------------------------------------------------------------------------- the controller


@dataclass
class _Instance:
    slot: int
    generation: int
    name: str
    cache_dir: str
    journal: str
    log: str
    proc: subprocess.Popen[bytes]
    log_file: IO[bytes]
    frozen_until: float | None = None


class _Fleet:
    """The worker processes, one per slot, and the nemesis's actions on them."""

    def __init__(self, config: ChaosConfig, proxy_url: str, rng: random.Random) -> None:
        self.config = config
        self.proxy_url = proxy_url
        self.rng = rng
        self.work = config.work_dir
        self.slots: list[_Instance | None] = [None] * config.writers
        self.journals: list[str] = []
        self.kills = 0
        self.warm = 0
        self.stops = 0
        self.forced = 0
        self.crashes: list[str] = []
        self._events = open(  # noqa: SIM115 - closed by close()
            os.path.join(self.work, "nemesis.log"), "a", encoding="utf-8"
        )
        self._env = {**os.environ, **config.env}

    def event(self, text: str) -> None:
        self._events.write(f"{time.monotonic():.6f} {text}\n")
        self._events.flush()
        logger.info("%s", text)

    def start(self, slot: int, generation: int, cache_dir: str | None = None) -> None:
        name = f"w{slot}g{generation}"
        cache = cache_dir or os.path.join(self.work, "caches", name)
        journal = os.path.join(self.work, f"{name}.journal")
        log = os.path.join(self.work, f"{name}.log")
        os.makedirs(cache, exist_ok=True)
        Path(journal).touch()
        self.journals.append(journal)
        command = [
            sys.executable,
            "-m",
            "lambdalite.testing.chaos",
            "worker",
            "--remote",
            self.config.remote,
            "--endpoint-url",
            self.proxy_url,
            "--cache-dir",
            cache,
            "--journal",
            journal,
            "--name",
            name,
            "--options",
            json.dumps(dict(self.config.options)),
            "--think-time",
            str(self.config.think_time),
            "--seed",
            str(self.rng.randrange(2**31)),
            "--log-level",
            self.config.worker_log_level,
        ]
        log_file = open(log, "ab")  # noqa: SIM115 - closed when the instance ends
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=self._env,
            start_new_session=True,  # a Ctrl+C is the controller's to handle
        )
        self.slots[slot] = _Instance(slot, generation, name, cache, journal, log, proc, log_file)
        self.event(f"start {name} pid {proc.pid} cache {cache}")

    def live(self) -> list[_Instance]:
        return [i for i in self.slots if i is not None]

    def _ended(self, inst: _Instance) -> None:
        inst.log_file.close()
        self.slots[inst.slot] = None

    def kill_one(self) -> None:
        inst = self.rng.choice(self.live())
        inst.proc.kill()
        inst.proc.wait()
        self.kills += 1
        self.event(
            f"SIGKILL {inst.name} pid {inst.proc.pid}"
            + (" (frozen)" if inst.frozen_until is not None else "")
        )
        self._ended(inst)
        warm = self.rng.random() < self.config.warm_restarts
        self.warm += warm
        self.start(inst.slot, inst.generation + 1, inst.cache_dir if warm else None)

    def freeze_one(self, now: float) -> None:
        candidates = [i for i in self.live() if i.frozen_until is None]
        if not candidates:
            return
        inst = self.rng.choice(candidates)
        low, high = self.config.freeze
        inst.frozen_until = now + self.rng.uniform(low, high)
        os.kill(inst.proc.pid, signal.SIGSTOP)
        self.stops += 1
        self.event(f"SIGSTOP {inst.name} pid {inst.proc.pid} for {inst.frozen_until - now:.2f} s")

    def thaw(self, now: float, *, everyone: bool = False) -> None:
        for inst in self.live():
            if inst.frozen_until is not None and (everyone or inst.frozen_until <= now):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(inst.proc.pid, signal.SIGCONT)
                inst.frozen_until = None
                self.event(f"SIGCONT {inst.name} pid {inst.proc.pid}")

    def reap(self) -> None:
        """Replace a worker that exited on its own (a crash: reported as a violation)."""
        for inst in self.live():
            code = inst.proc.poll()
            if code is None:
                continue
            self._ended(inst)
            tail = _tail(inst.log)
            self.crashes.append(f"worker {inst.name} exited on its own with code {code}: {tail}")
            self.event(f"CRASH {inst.name} pid {inst.proc.pid} code {code}")
            self.start(inst.slot, inst.generation + 1)

    def stop_all(self) -> None:
        """SIGCONT everyone, SIGTERM, wait; SIGKILL whoever outlives ``stop_timeout``."""
        self.thaw(0.0, everyone=True)
        for inst in self.live():
            with contextlib.suppress(ProcessLookupError):
                inst.proc.send_signal(signal.SIGCONT)
                inst.proc.terminate()
        deadline = time.monotonic() + self.config.stop_timeout
        for inst in self.live():
            try:
                code = inst.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                # -SIGTERM: it was still starting (before its handler): it began nothing
                if code not in (0, -signal.SIGTERM):
                    self.crashes.append(
                        f"worker {inst.name} stopped with code {code}: " + _tail(inst.log)
                    )
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait()
                self.forced += 1
                self.event(f"SIGKILL {inst.name} pid {inst.proc.pid} (did not stop in time)")
            self._ended(inst)
        self.event("stopped")

    def kill_all(self) -> None:
        """The emergency exit (an error or Ctrl+C in the controller)."""
        for inst in self.live():
            with contextlib.suppress(ProcessLookupError):
                inst.proc.kill()
            inst.proc.wait()
            self._ended(inst)

    def acknowledged(self) -> int:
        total = 0
        for path in self.journals:
            with open(path, encoding="utf-8") as f:
                total += sum(1 for line in f if line.startswith("ok "))
        return total

    def close(self) -> None:
        self._events.close()


def _tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _next(rng: random.Random, now: float, mean: float | None) -> float:
    return math.inf if mean is None else now + rng.expovariate(1 / mean)


def _create_schema(config: ChaosConfig) -> None:
    conn = lambdalite.connect(
        config.remote,
        cache_dir=os.path.join(config.work_dir, "caches", "setup"),
        endpoint_url=config.endpoint_url,
        isolation_level=None,
        **config.options,
    )
    try:
        conn.execute("BEGIN")
        (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if tables:
            conn.rollback()
            raise ConfigurationError(
                f"{config.remote} already holds a database; give the chaos test a fresh prefix",
                key="remote",
            )
        for statement in SCHEMA:
            conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def run_chaos(config: ChaosConfig) -> ChaosResult:
    """Run the workload under the nemesis and the faults, then check (module docstring)."""
    os.makedirs(config.work_dir, exist_ok=True)
    rng = random.Random(config.seed)
    _create_schema(config)
    proxy = FaultProxy(
        config.endpoint_url,
        seed=rng.randrange(2**31),
        latency=config.proxy_latency,
        delay=config.proxy_delay,
    )
    with proxy:
        fleet = _Fleet(config, proxy.endpoint_url, rng)
        started = time.monotonic()
        try:
            proxy.set_rates(config.rates)
            for slot in range(config.writers):
                fleet.start(slot, 0)
            _nemesis(config, fleet, rng)
            fleet.stop_all()
            chaos_time = time.monotonic() - started
        except BaseException:
            fleet.kill_all()
            raise
        finally:
            fleet.close()
        proxy.clear()
        faults = {kind.value: n for kind, n in proxy.counts().items() if n}
    result = ChaosResult(
        writers=config.writers,
        minutes=chaos_time / 60,
        seed=config.seed,
        faults=faults,
        kills=fleet.kills,
        warm_restarts=fleet.warm,
        stops=fleet.stops,
        forced_stops=fleet.forced,
        crashes=len(fleet.crashes),
        work_dir=config.work_dir,
    )
    result.violations += fleet.crashes
    _check(config, fleet.journals, result)
    for line in result.violations:
        logger.error("violation: %s", line)
    return result


def _nemesis(config: ChaosConfig, fleet: _Fleet, rng: random.Random) -> None:
    start = time.monotonic()
    next_kill = _next(rng, start, config.kill_interval)
    next_stop = _next(rng, start, config.stop_interval)
    last_count = start
    while True:
        now = time.monotonic()
        if now - start >= config.duration:
            done = (config.kill_interval is None or fleet.kills > 0) and (
                config.stop_interval is None or fleet.stops > 0
            )
            if done and config.min_acknowledged and now - last_count >= 1.0:
                last_count = now
                done = fleet.acknowledged() >= config.min_acknowledged
            elif config.min_acknowledged:
                done = False
            if done or now - start >= config.deadline:
                if not done:
                    logger.warning("chaos ends at its deadline before its minimums were met")
                return
        fleet.thaw(now)
        fleet.reap()
        if now >= next_kill:
            fleet.kill_one()
            next_kill = _next(rng, now, config.kill_interval)
        if now >= next_stop:
            fleet.freeze_one(now)
            next_stop = _next(rng, now, config.stop_interval)
        time.sleep(_POLL)


# ---------------------------------------------------------------------------- the checker


def _check(config: ChaosConfig, journal_paths: Sequence[str], result: ChaosResult) -> None:
    checks = os.path.join(config.work_dir, "check")
    os.makedirs(checks, exist_ok=True)
    journals = read_journals(journal_paths)
    result.attempted = len(journals.attempted)
    result.acknowledged = len(journals.acknowledged)
    result.failed = dict(Counter(journals.failed.values()))
    result.unknown = len(journals.uncertain)
    result.unknown_explicit = len(journals.unknown)
    unexpected = Counter(c for c in journals.failed.values() if c not in _LAMBDALITE_ERRORS)
    for name, count in sorted(unexpected.items()):
        result.violations.append(
            f"{count} transactions failed with {name}, not a lambdalite error (see the logs)"
        )

    final: Observation | None = None
    conn = lambdalite.connect(
        config.remote,
        cache_dir=os.path.join(checks, "cold"),
        endpoint_url=config.endpoint_url,
        isolation_level=None,
    )
    try:
        final = observe(conn)
    except Exception as exc:
        result.violations.append(
            f"a cold instance could not read the database: {_error_name(exc)}: {exc}"
        )
    finally:
        conn.close()
    if final is not None:
        ev = evaluate(journals, final)
        result.lost, result.duplicated, result.phantom = ev.lost, ev.duplicated, ev.phantom
        result.unknown_landed = ev.unknown_landed
        result.counter_ok = ev.counter_ok
        result.rows = len(final.ids)
        result.counter = final.counter
        result.integrity = list(final.integrity)
        result.violations += ev.violations

    settings = Settings.build(
        config.remote,
        {"cache_dir": os.path.join(checks, "admin"), "endpoint_url": config.endpoint_url},
    )
    try:
        report = verify(settings)
    except Exception as exc:
        result.violations.append(f"lambdalite verify raised {_error_name(exc)}: {exc}")
    else:
        result.verify_ok = report.ok
        if not report.ok:
            problems = [f"{p.key}: {p.message}" for p in report.problems[:10]]
            result.violations.append(
                f"lambdalite verify: integrity {report.integrity}; "
                f"{len(report.problems)} problems: {'; '.join(problems)}"
            )
    _check_versions(config, settings, final, result)


def _check_versions(
    config: ChaosConfig, settings: Settings, final: Observation | None, result: ChaosResult
) -> None:
    try:
        infos = list_versions(settings)
    except Exception as exc:
        result.violations.append(f"the history could not be listed: {_error_name(exc)}: {exc}")
        return
    versions = [info.version for info in infos]
    result.versions_retained = len(versions)
    if not versions:
        result.violations.append("no version is restorable")
        return
    result.current_version = versions[-1]
    expected = list(range(1, versions[-1] + 1))  # nothing ran gc: every version is retained
    if versions != expected:
        missing = sorted(set(expected) - set(versions))
        result.violations.append(
            f"versions missing from the history (none was garbage-collected): "
            f"{_names(str(m) for m in missing)}"
        )
    if len(versions) <= config.max_restore:
        chosen = versions
    else:
        sample = random.Random(config.seed).sample(versions[1:-1], config.restore_sample)
        chosen = sorted({versions[0], versions[-1], *sample})
        result.versions_sampled = True
    result.checked_versions = chosen
    out_dir = tempfile.mkdtemp(prefix="restore-", dir=os.path.join(config.work_dir, "check"))
    try:
        with ThreadPoolExecutor(_RESTORE_THREADS) as pool:
            states = list(pool.map(lambda v: _restore_one(settings, v, out_dir), chosen))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    result.versions_checked = len(states)
    result.versions_restorable = sum(1 for s in states if s.observation is not None)
    result.violations += check_history(states, final, result.current_version)


def _restore_one(settings: Settings, version: int, out_dir: str) -> VersionState:
    path = os.path.join(out_dir, f"v{version}.sqlite")
    try:
        restore(settings, to_version=version, output=path, overwrite=True)
        conn = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True)
        try:
            observation = observe(conn)
        finally:
            conn.close()
    except Exception as exc:
        return VersionState(version, None, f"{_error_name(exc)}: {exc}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return VersionState(version, observation)


# ---------------------------------------------------------------------------- command line


def _parse_rate(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError(text)
        return FaultKind(name.strip()).value, float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected kind=probability with a kind among "
            f"{', '.join(k.value for k in FaultKind)}; got {text!r}"
        ) from exc


def _parse_option(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def _worker_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lambdalite.testing.chaos worker",
        description="One chaos instance (started by the controller; not for direct use).",
    )
    parser.add_argument("--remote", required=True)
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--options", default="{}", help="connect() options as a JSON object")
    parser.add_argument("--think-time", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {args.name} %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)  # "Found credentials" each time
    return run_worker(
        remote=args.remote,
        endpoint_url=args.endpoint_url,
        cache_dir=args.cache_dir,
        journal=args.journal,
        name=args.name,
        options=json.loads(args.options),
        think_time=args.think_time,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: run one chaos test, print its table; 1 if a violation was found."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["worker"]:
        return _worker_main(args_in[1:])
    parser = argparse.ArgumentParser(
        prog="python -m lambdalite.testing.chaos",
        description="A Jepsen-style chaos test: N instances increment a counter and insert "
        "unique ids through a fault-injecting S3 proxy while instances are SIGKILLed "
        "(replaced by cold ones) and SIGSTOPped; then every acknowledged id must be there "
        "exactly once, nothing else, and every version of the history restorable. Without "
        "--remote a throwaway SeaweedFS is started. Prints a Markdown table; exits 1 on a "
        "violation. (The subcommand 'worker' is the instance the controller starts.)",
    )
    parser.add_argument("--writers", type=int, default=8, help="concurrent instances (8)")
    parser.add_argument("--minutes", type=float, default=1.0, help="minutes of chaos (1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the nemesis and faults (0)")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    parser.add_argument("--remote", help="s3://bucket/prefix holding no database yet")
    parser.add_argument("--endpoint-url", help="the S3 server (plain http://) for --remote")
    parser.add_argument(
        "--kill-interval",
        type=float,
        default=5.0,
        help="mean seconds between SIGKILLs (5; 0: none)",
    )
    parser.add_argument(
        "--stop-interval",
        type=float,
        default=4.0,
        help="mean seconds between SIGSTOPs (4; 0: none)",
    )
    parser.add_argument(
        "--freeze",
        type=float,
        nargs=2,
        default=(0.5, 3.0),
        metavar=("MIN", "MAX"),
        help="seconds a SIGSTOP lasts (0.5 3)",
    )
    parser.add_argument(
        "--warm-restarts",
        type=float,
        default=0.0,
        metavar="P",
        help="probability a replacement reuses the killed cache dir (0)",
    )
    parser.add_argument(
        "--rate",
        type=_parse_rate,
        action="append",
        metavar="KIND=P",
        help="fault probability per request, repeatable (replaces the defaults: "
        + ", ".join(f"{k}={v}" for k, v in DEFAULT_RATES.items())
        + ")",
    )
    parser.add_argument("--no-faults", action="store_true", help="inject no faults")
    parser.add_argument(
        "--proxy-delay", type=float, default=0.3, help="seconds of a delay fault (0.3)"
    )
    parser.add_argument(
        "--option",
        type=_parse_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="connect() option for the workers, repeatable (default "
        "compact_after_deltas=8 compact_after_bytes=20000)",
    )
    parser.add_argument(
        "--think-time",
        type=float,
        default=0.0,
        help="mean seconds between a worker's transactions (0)",
    )
    parser.add_argument(
        "--max-restore",
        type=int,
        default=300,
        help="restore every version up to this many, else a sample (300)",
    )
    parser.add_argument(
        "--work-dir",
        help="where journals and logs go (default: a temp dir, removed after a clean run)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir after a clean run")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the nemesis's actions")
    args = parser.parse_args(args_in)
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.verbose:
        logger.setLevel(logging.INFO)
    if args.remote is not None and args.endpoint_url is None:
        parser.error("--remote needs --endpoint-url (the S3 server the fault proxy fronts)")
    rates = {} if args.no_faults else dict(args.rate) if args.rate else dict(DEFAULT_RATES)
    options: dict[str, Any] = {"compact_after_deltas": 8, "compact_after_bytes": 20000}
    options.update(dict(args.option))
    own_dir = args.work_dir is None
    work = args.work_dir or tempfile.mkdtemp(prefix="lambdalite-chaos-")
    try:
        with contextlib.ExitStack() as stack:
            remote, endpoint = args.remote, args.endpoint_url
            if remote is None:
                from lambdalite.testing.seaweedfs import start_seaweedfs

                server = stack.enter_context(start_seaweedfs(os.path.join(work, "seaweedfs")))
                server.create_bucket("chaos")
                os.environ.update(server.env)
                remote, endpoint = "s3://chaos/db", server.endpoint_url
            config = ChaosConfig(
                remote=remote,
                endpoint_url=endpoint,
                work_dir=os.path.join(work, "run"),
                writers=args.writers,
                duration=args.minutes * 60,
                seed=args.seed,
                rates=rates,
                proxy_delay=args.proxy_delay,
                kill_interval=args.kill_interval or None,
                stop_interval=args.stop_interval or None,
                freeze=(args.freeze[0], args.freeze[1]),
                warm_restarts=args.warm_restarts,
                options=options,
                think_time=args.think_time,
                max_restore=args.max_restore,
            )
            result = run_chaos(config)
    except ConfigurationError as exc:
        parser.error(str(exc))
    print(result.table())
    for line in result.violations:
        print(f"- {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    if result.ok and own_dir and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work dir (journals, logs): {work}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
