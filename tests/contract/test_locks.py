"""The lock contract (``lambdalite.locks.base``), one body of tests for every backend.

Backends: the in-process memory lock, the file lock, the object lock on the memory, folder
and S3 (SeaweedFS) storages, and DynamoDB (DynamoDB Local). Races use 8 real processes
(each opening the lock from its spec like a separate Lambda instance) for every
backend that can cross a process boundary, 8 threads for the in-process ones. Lease expiry
uses an injected clock: no test sleeps for a lease to run out, except the SIGKILL tests,
which kill a real holder process and wait for its real lease to expire.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lambdalite.errors import LockLostError, LockTimeoutError
from lambdalite.locks.base import Lease, LeaseLock, Lock, TransientLockError
from lambdalite.storage.faulty import FaultyStorage
from tests.contract.lock_workers import LockSpec, holder, racer

RACERS = 8
EXPIRATION = 30.0
_PRELOAD = [
    "tests.contract.lock_workers",
    "boto3",
    "botocore.client",
    "lambdalite.locks.dynamodb",
    "lambdalite.locks.file",
    "lambdalite.locks.object",
    "lambdalite.storage.folder",
    "lambdalite.storage.s3",
]


def _processes() -> Any:
    """Processes forked from a server that has imported boto3 and the backends once: each
    still opens its own lock, clients and connections (a separate instance), but starts in
    a fraction of the time of a spawned interpreter (they inherit no environment: a
    :class:`LockSpec` carries the variables it needs)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


class FakeClock:
    """A clock that only moves when told to (starts at the real time, so that DynamoDB's
    TTL, were it to run, would never see our items as years old)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _ambiguous_attempt(lock: LeaseLock) -> None:
    """The next acquire attempt takes effect, then its answer is lost."""
    real = lock._try_acquire
    calls: list[int] = []

    def once(now: float) -> Any:
        result = real(now)
        if not calls:
            calls.append(1)
            raise TransientLockError("injected: the answer never came back")
        return result

    lock._try_acquire = once  # type: ignore[method-assign]


def _ambiguous_put(lock: LeaseLock) -> None:
    """The next write of the lock object lands, then its answer is lost."""
    faulty = FaultyStorage(lock.storage, seed=0, ops=())  # type: ignore[attr-defined]
    faulty.fail_next("put", after=True)
    lock.storage = faulty  # type: ignore[attr-defined]


def _ambiguous_update(lock: LeaseLock) -> None:
    """The next DynamoDB UpdateItem is applied, then the client times out reading the answer."""
    from botocore.exceptions import ReadTimeoutError

    client = lock.client  # type: ignore[attr-defined]
    real = client.update_item
    calls: list[int] = []

    def update_item(**params: Any) -> Any:
        result = real(**params)
        if not calls:
            calls.append(1)
            raise ReadTimeoutError(endpoint_url="http://dynamodb.local")
        return result

    client.update_item = update_item


@dataclass(frozen=True)
class Backend:
    name: str
    spec: LockSpec
    processes: bool  # can it be shared between processes (so: race with processes)?
    takeover_after_expiry: bool  # the file lock: a live holder keeps its flock
    make_ambiguous: Callable[[LeaseLock], None]

    def make(self, **kwargs: Any) -> LeaseLock:
        lock = self.spec.open(**kwargs)
        assert isinstance(lock, LeaseLock) and isinstance(lock, Lock)
        return lock


@pytest.fixture(
    params=[
        "memory",
        "file",
        "object-memory",
        "object-folder",
        pytest.param("object-s3", marks=pytest.mark.s3),
        pytest.param("dynamodb", marks=pytest.mark.dynamodb),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    name = request.param
    key = f"test-{uuid.uuid4().hex[:12]}"
    if name == "memory":
        yield Backend(name, LockSpec("memory", key), False, True, _ambiguous_attempt)
    elif name == "file":
        spec = LockSpec("file", str(tmp_path / "locks" / "db.lock"))
        yield Backend(name, spec, True, False, _ambiguous_attempt)
    elif name == "object-memory":
        from lambdalite.storage.memory import reset

        store = f"locks-{key}"
        yield Backend(
            name, LockSpec("object", "lock", f"memory://{store}/db"), False, True, _ambiguous_put
        )
        reset(store)
    elif name == "object-folder":
        spec = LockSpec("object", "lock", (tmp_path / "remote").as_uri())
        yield Backend(name, spec, True, True, _ambiguous_put)
    elif name == "object-s3":
        s3 = request.getfixturevalue("s3_remote")
        spec = LockSpec("s3", "lock", s3.url, s3.endpoint_url, _aws_env())
        yield Backend(name, spec, True, True, _ambiguous_put)
    else:
        table = request.getfixturevalue("dynamodb_table")
        spec = LockSpec(f"dynamodb://{table}", key, env=_aws_env())
        yield Backend(name, spec, True, True, _ambiguous_update)


def _aws_env() -> dict[str, str]:
    """The AWS variables the fixtures set (endpoints, test credentials, region)."""
    return {k: v for k, v in os.environ.items() if k.startswith("AWS_")}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- one holder ------------------------------------------------------------------------------


def test_acquire_inspect_release(backend: Backend, clock: FakeClock) -> None:
    lock = backend.make(clock=clock, expiration=EXPIRATION)
    assert lock.inspect() is None
    lease = lock.acquire(1)
    assert (lease.key, lease.owner) == (lock.key, lock.owner)
    assert lease.expires_at == pytest.approx(clock() + EXPIRATION, abs=0.002)
    seen = lock.inspect()
    assert seen is not None
    assert (seen.owner, seen.generation) == (lease.owner, lease.generation)
    assert seen.expires_at == pytest.approx(lease.expires_at, abs=0.002)
    lock.release(lease)
    assert lock.inspect() is None
    lock.release(lease)  # releasing twice is harmless
    again = lock.acquire(1)
    assert again.generation > lease.generation
    lock.release(again)
    lock.close()


def test_a_second_owner_waits_and_the_timeout_names_the_holder(
    backend: Backend, clock: FakeClock
) -> None:
    a = backend.make(clock=clock, expiration=EXPIRATION)
    b = backend.make(clock=clock, max_attempts=3)
    lease = a.acquire(1)
    attempts: list[float] = []
    real = b._try_acquire

    def counted(now: float) -> Any:
        attempts.append(now)
        return real(now)

    b._try_acquire = counted  # type: ignore[method-assign]
    with pytest.raises(LockTimeoutError) as caught:
        b.acquire(10)
    assert len(attempts) == 3  # bounded by max_attempts, well before the 10 s timeout
    assert caught.value.owner == a.owner
    assert caught.value.expires_at == pytest.approx(lease.expires_at, abs=0.002)
    assert a.owner in str(caught.value) and "busy" in str(caught.value)

    patient = backend.make(clock=clock, max_attempts=10_000)
    started = time.monotonic()
    with pytest.raises(LockTimeoutError):
        patient.acquire(0.3)
    assert time.monotonic() - started < 5  # bounded by the timeout (generous for slow CI)
    a.release(lease)
    b.release(b.acquire(1))


def test_takeover_after_expiry(backend: Backend, clock: FakeClock) -> None:
    a = backend.make(clock=clock, expiration=EXPIRATION)
    b = backend.make(clock=clock, expiration=EXPIRATION)
    lease_a = a.acquire(1)
    clock.advance(EXPIRATION + 1)
    if not backend.takeover_after_expiry:
        # A live process keeps its flock: expiry only stops the holder itself.
        with pytest.raises(LockTimeoutError):
            b.acquire(0)
        with pytest.raises(LockLostError, match="expired"):
            a.renew(lease_a)
        a.release(lease_a)  # after losing its lease, the holder still frees the lock
        lease_b = b.acquire(1)
    else:
        lease_b = b.acquire(1)
        with pytest.raises(LockLostError):
            a.release(lease_a)  # a superseded holder cannot free the new holder's lock
    assert lease_b.owner == b.owner
    assert lease_b.generation > lease_a.generation
    seen = b.inspect()
    assert seen is not None and seen.owner == b.owner
    b.release(lease_b)


def test_release_by_a_non_owner_is_refused(backend: Backend, clock: FakeClock) -> None:
    a = backend.make(clock=clock)
    b = backend.make(clock=clock)
    stale_b = b.acquire(1)  # b's own lease, from before a took the lock
    b.release(stale_b)
    lease_a = a.acquire(1)
    with pytest.raises(LockLostError):
        b.release(lease_a)  # someone else's lease
    with pytest.raises(LockLostError):
        b.release(stale_b)  # b's lease of an earlier generation
    with pytest.raises(LockLostError):
        b.renew(stale_b)
    seen = a.inspect()
    assert seen is not None
    assert (seen.owner, seen.generation) == (a.owner, lease_a.generation)
    assert a.renew(lease_a).generation == lease_a.generation
    a.release(lease_a)


def test_renew_after_loss_raises(backend: Backend) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    a = backend.make(clock=clock_a, expiration=EXPIRATION)
    b = backend.make(clock=clock_b, expiration=EXPIRATION)
    lease_a = a.acquire(1)
    if backend.takeover_after_expiry:
        clock_b.advance(EXPIRATION + 1)  # b's clock says a's lease is over; a's does not
        lease_b = b.acquire(1)
    else:
        assert b.break_() is not None
        lease_b = b.acquire(1)
    with pytest.raises(LockLostError):
        a.renew(lease_a)
    with pytest.raises(LockLostError):
        a.ensure(lease_a, min_remaining=EXPIRATION * 2)  # forces a renew
    with pytest.raises(LockLostError):
        a.release(lease_a)
    seen = b.inspect()
    assert seen is not None and seen.owner == b.owner
    b.release(lease_b)


def test_renew_and_ensure(backend: Backend, clock: FakeClock) -> None:
    lock = backend.make(clock=clock, expiration=EXPIRATION)
    lease = lock.acquire(1)
    assert lock.ensure(lease, min_remaining=10) is lease  # far from expiry: no round trip
    clock.advance(EXPIRATION - 5)
    renewed = lock.ensure(lease, min_remaining=10)
    assert renewed.generation == lease.generation
    assert renewed.expires_at == pytest.approx(clock() + EXPIRATION, abs=0.002)
    seen = lock.inspect()
    assert seen is not None and seen.expires_at == pytest.approx(renewed.expires_at, abs=0.002)
    clock.advance(EXPIRATION - 5)
    renewed = lock.renew(renewed)
    clock.advance(EXPIRATION + 1)
    with pytest.raises(LockLostError, match="expired"):
        lock.ensure(renewed, min_remaining=1)
    with pytest.raises(LockLostError, match="expired"):
        lock.renew(renewed)


def test_generation_increases_across_acquires_takeovers_and_breaks(
    backend: Backend, clock: FakeClock
) -> None:
    a = backend.make(clock=clock, expiration=EXPIRATION)
    b = backend.make(clock=clock, expiration=EXPIRATION)
    generations = []
    for lock in (a, b, a):
        lease = lock.acquire(1)
        generations.append(lease.generation)
        lock.release(lease)
    lease = a.acquire(1)
    generations.append(lease.generation)
    if backend.takeover_after_expiry:
        clock.advance(EXPIRATION + 1)
        lease = b.acquire(1)
        generations.append(lease.generation)
    broken = b.break_()
    assert broken is not None and broken.generation == lease.generation
    assert b.inspect() is None
    assert b.break_() is None
    lease = a.acquire(1)
    generations.append(lease.generation)
    a.release(lease)
    assert generations == sorted(set(generations)), generations


def test_ambiguous_acquire_is_idempotent(backend: Backend, clock: FakeClock) -> None:
    lock = backend.make(clock=clock, expiration=EXPIRATION)
    backend.make_ambiguous(lock)
    lease = lock.acquire(5)  # the first answer is lost; the retry finds the lock is ours
    seen = lock.inspect()
    assert seen is not None and (seen.owner, seen.generation) == (lock.owner, lease.generation)
    other = backend.make(clock=clock, max_attempts=1)
    with pytest.raises(LockTimeoutError) as caught:
        other.acquire(0)
    assert caught.value.owner == lock.owner
    lock.release(lease)
    assert lock.inspect() is None


# -- many holders ----------------------------------------------------------------------------


def _race(backend: Backend) -> tuple[list[tuple[int, str, Any]], Lease | None]:
    """The racers' outcomes, and the holder as seen while the winner still holds the lock."""
    if backend.processes:
        ctx = _processes()
        start: Any = ctx.Barrier(RACERS + 1)
        done: Any = ctx.Event()
        results: Any = ctx.Queue()
        workers: list[Any] = [
            ctx.Process(target=racer, args=(backend.spec, i, start, done, results))
            for i in range(RACERS)
        ]
    else:
        start = threading.Barrier(RACERS + 1)
        done = threading.Event()
        results = queue.Queue()
        workers = [
            threading.Thread(target=racer, args=(backend.spec, i, start, done, results))
            for i in range(RACERS)
        ]
    for worker in workers:
        worker.start()
    try:
        start.wait(120)
        outcomes = [results.get(timeout=120) for _ in range(RACERS)]
        seen = backend.make().inspect()
    finally:
        done.set()
        for worker in workers:
            worker.join(60)
    if backend.processes:
        assert [w.exitcode for w in workers] == [0] * RACERS
    return outcomes, seen


@pytest.mark.slow
def test_exactly_one_winner_of_n(backend: Backend) -> None:
    outcomes, seen = _race(backend)
    assert sorted(o[0] for o in outcomes) == list(range(RACERS))
    assert not [o for o in outcomes if o[1] == "error"], outcomes
    winners = [o for o in outcomes if o[1] == "won"]
    assert len(winners) == 1, outcomes
    assert seen is not None and seen.generation == winners[0][2]


@pytest.mark.slow
def test_a_killed_holder_blocks_others_only_until_its_lease_expires(backend: Backend) -> None:
    if not backend.processes:
        pytest.skip("an in-process lock dies with its process")
    expiration = 2.0
    ctx = _processes()
    results: Any = ctx.Queue()
    process = ctx.Process(target=holder, args=(backend.spec, expiration, results))
    process.start()
    try:
        owner, generation, expires_at = results.get(timeout=120)
    finally:
        assert process.pid is not None
        os.kill(process.pid, signal.SIGKILL)
        process.join(30)
    assert process.exitcode == -signal.SIGKILL
    survivor = backend.make(max_attempts=1000)
    if not backend.takeover_after_expiry:
        lease = survivor.acquire(0)  # the kernel dropped the dead process's flock at once
    else:
        if time.time() < expires_at - 0.3:
            with pytest.raises(LockTimeoutError) as caught:
                backend.make(max_attempts=1).acquire(0)
            assert caught.value.owner == owner
        lease = survivor.acquire(expiration + 10)
        assert time.time() >= expires_at  # not before the dead holder's lease ran out
    assert lease.generation > generation
    survivor.release(lease)


def test_open_lock_gives_every_backend(backend: Backend) -> None:
    lock = backend.make()
    assert isinstance(lock, Lock)
    assert lock.key and lock.owner and lock.expiration == 30.0
    assert lock.max_attempts is None  # as many as the timeout allows
    lock.close()


def test_lease_helpers() -> None:
    lease = Lease("k", "me", 3, 100.0)
    assert lease.remaining(90.0) == 10.0
    assert not lease.expired(100.0) and lease.expired(100.5)
