"""A hypothesis state machine: several instances against a model of acknowledged commits.

At the end, every version the observer saw is restored (point-in-time restore)
and compared with the model as it was at that version.

Instances write, roll back, read, cold-start, die in the middle of a commit and
compact (small thresholds make compaction frequent). After every step the
remote, read by an observer instance, equals the model; every instance that
reads sees the model (strong consistency).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import lambdalite
from lambdalite.admin import restore
from lambdalite.config import Settings
from lambdalite.replica import commit as engine
from lambdalite.replica.engine import forget_replicas

INSTANCES = 3
KEYS = st.integers(min_value=0, max_value=7)
VALUES = st.binary(min_size=0, max_size=300)


class Died(BaseException):
    """Raised by the crash hook: the instance stops in the middle of a commit."""


class Fleet(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        forget_replicas()
        self.tmp = Path(tempfile.mkdtemp(prefix="lambdalite-stateful-"))
        self.remote = (self.tmp / "remote").as_uri()
        self.options = {
            "compact_after_deltas": 3,  # rollovers every 3 commits
            "compact_after_bytes": 20000,  # snapshots now and then
            "inline_delta_max": 200,
        }
        self.model: dict[int, bytes] = {}
        self.generation = [0] * INSTANCES
        self.conns = [self._open(i) for i in range(INSTANCES)]
        self.conns[0].execute("CREATE TABLE kv(k INTEGER PRIMARY KEY, v BLOB)")
        self.observer = lambdalite.connect(self.remote, cache_dir=str(self.tmp / "observer"))
        self.history: dict[int, dict[int, bytes]] = {}  # version -> the model at that version

    def _open(self, i: int) -> lambdalite.Connection:
        cache = self.tmp / f"cache-{i}-{self.generation[i]}"
        return lambdalite.connect(
            self.remote, cache_dir=str(cache), isolation_level=None, **self.options
        )

    def _rows(self, conn: lambdalite.Connection) -> dict[int, bytes]:
        return dict(conn.execute("SELECT k, v FROM kv").fetchall())

    @rule(i=st.integers(0, INSTANCES - 1), k=KEYS, v=VALUES)
    def write(self, i: int, k: int, v: bytes) -> None:
        conn = self.conns[i]
        try:
            conn.execute("BEGIN")
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))
            conn.commit()
        except lambdalite.ConflictError:
            assert not conn.in_transaction
            return
        self.model[k] = v

    @rule(i=st.integers(0, INSTANCES - 1), k=KEYS)
    def delete(self, i: int, k: int) -> None:
        conn = self.conns[i]
        try:
            conn.execute("DELETE FROM kv WHERE k = ?", (k,))
        except lambdalite.ConflictError:
            return
        self.model.pop(k, None)

    @rule(i=st.integers(0, INSTANCES - 1), k=KEYS, v=VALUES)
    def rolled_back(self, i: int, k: int, v: bytes) -> None:
        conn = self.conns[i]
        conn.execute("BEGIN")
        conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))
        conn.rollback()

    @rule(i=st.integers(0, INSTANCES - 1), n=st.integers(1, 40))
    def bulk(self, i: int, n: int) -> None:
        conn = self.conns[i]
        rows = [(100 + j, bytes([j % 256]) * 500) for j in range(n)]
        try:
            conn.execute("BEGIN")
            conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", rows)
            conn.commit()
        except lambdalite.ConflictError:
            return
        self.model.update(rows)

    @rule(i=st.integers(0, INSTANCES - 1))
    def read(self, i: int) -> None:
        assert self._rows(self.conns[i]) == self.model

    @rule(i=st.integers(0, INSTANCES - 1))
    def cold_start(self, i: int) -> None:
        self.conns[i].close()
        self.generation[i] += 1
        self.conns[i] = self._open(i)

    @rule(
        i=st.integers(0, INSTANCES - 1),
        point=st.sampled_from(["before-push", "after-manifest"]),
        k=KEYS,
        v=VALUES,
    )
    def dies_mid_commit(self, i: int, point: str, k: int, v: bytes) -> None:
        def hook(name: str) -> None:
            if name == point:
                raise Died

        conn = self.conns[i]
        engine.crash_hook = hook
        try:
            conn.execute("BEGIN")
            conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))
            conn.commit()
        except Died:
            if point == "after-manifest":
                self.model[k] = v  # it was published before the instance died
        except lambdalite.ConflictError:
            pass
        else:
            self.model[k] = v  # the hook never fired (e.g. nothing changed)
        finally:
            engine.crash_hook = None
        if conn.in_transaction:
            conn.rollback()

    @precondition(lambda self: True)
    @invariant()
    def remote_equals_model(self) -> None:
        assert self._rows(self.observer) == self.model
        assert self.observer.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        self.history[self.observer.replica.version] = dict(self.model)

    def _restore_every_version(self) -> None:
        """Point-in-time restore of every version equals the model at that version."""
        settings = Settings.build(self.remote, {"cache_dir": str(self.tmp / "admin")})
        for version, expected in sorted(self.history.items()):
            if version < 1:
                continue
            out = self.tmp / f"restored-{version}.db"
            restore(settings, to_version=version, output=str(out))
            db = sqlite3.connect(out)
            try:
                assert dict(db.execute("SELECT k, v FROM kv").fetchall()) == expected, version
            finally:
                db.close()

    def teardown(self) -> None:
        try:
            fresh = lambdalite.connect(self.remote, cache_dir=str(self.tmp / "fresh"))
            assert self._rows(fresh) == self.model
            fresh.close()
            self._restore_every_version()
        finally:
            for conn in [*self.conns, self.observer]:
                conn.close()
            forget_replicas()
            shutil.rmtree(self.tmp, ignore_errors=True)


Fleet.TestCase.settings = settings(
    max_examples=20,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFleet = Fleet.TestCase
