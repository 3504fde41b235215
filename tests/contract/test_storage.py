"""The storage contract (``lambdalite.storage.base``), one body of tests for every backend.

Each test runs against the folder backend, the in-process memory backend and S3
(SeaweedFS on loopback). The races use 8 real processes (spawned, each opening
the remote from its URL like a separate Lambda instance) for the folder and S3,
and 8 threads for memory; they assert counts, never timings.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lambdalite.errors import (
    ConfigurationError,
    NotFoundError,
    PreconditionFailedError,
    TransientStorageError,
)
from lambdalite.storage import ObjectInfo, Storage, open_storage
from lambdalite.storage.memory import reset

RACERS = 8
BIG = 12 * 1024 * 1024 + 12345  # above the 8 MiB multipart threshold of S3Storage


@dataclass(frozen=True)
class Remote:
    kind: str
    url: str
    endpoint_url: str | None = None

    def open(self, suffix: str = "") -> Storage:
        return open_storage(self.url + suffix, endpoint_url=self.endpoint_url)


@pytest.fixture(
    params=["folder", "memory", pytest.param("s3", marks=pytest.mark.s3)],
)
def remote(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Remote]:
    kind = request.param
    if kind == "folder":
        yield Remote(kind, (tmp_path / "remote").as_uri())
    elif kind == "memory":
        name = f"contract-{uuid.uuid4().hex}"
        yield Remote(kind, f"memory://{name}/db")
        reset(name)
    else:
        s3 = request.getfixturevalue("s3_remote")
        yield Remote(kind, s3.url, s3.endpoint_url)


@pytest.fixture
def storage(remote: Remote) -> Iterator[Storage]:
    opened = remote.open()
    yield opened
    opened.close()


# -- single operations ---------------------------------------------------------------------


def test_is_a_storage_and_reopens_from_its_url(storage: Storage, remote: Remote) -> None:
    assert isinstance(storage, Storage)
    storage.put("k", b"v")
    again = open_storage(storage.url, endpoint_url=remote.endpoint_url)
    assert again.url == storage.url
    blob = again.get("k")
    assert blob is not None and blob.data == b"v"


def test_get_missing_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFoundError) as info:
        storage.get("nothing/here")
    assert info.value.key == "nothing/here"
    assert info.value.remote == storage.url


def test_put_then_get_returns_the_bytes_and_the_etag(storage: Storage) -> None:
    etag = storage.put("manifest", b"version 1")
    blob = storage.get("manifest")
    assert blob is not None
    assert (blob.data, blob.etag) == (b"version 1", etag)
    assert etag and not etag.startswith('"')


def test_empty_object(storage: Storage) -> None:
    etag = storage.put("empty", b"")
    blob = storage.get("empty")
    assert blob is not None and blob.data == b"" and blob.etag == etag


def test_unconditional_put_overwrites(storage: Storage) -> None:
    first = storage.put("k", b"one")
    second = storage.put("k", b"two")
    assert first != second
    blob = storage.get("k")
    assert blob is not None and (blob.data, blob.etag) == (b"two", second)


def test_get_if_none_match(storage: Storage) -> None:
    old = storage.put("manifest", b"v1")
    assert storage.get("manifest", if_none_match=old) is None  # 304: nothing moved
    new = storage.put("manifest", b"v2")
    blob = storage.get("manifest", if_none_match=old)
    assert blob is not None and (blob.data, blob.etag) == (b"v2", new)
    with pytest.raises(NotFoundError):
        storage.get("missing", if_none_match=old)


def test_create_only_twice_fails_the_second_time(storage: Storage) -> None:
    etag = storage.put("lock", b"first", if_none_match=True)
    with pytest.raises(PreconditionFailedError) as info:
        storage.put("lock", b"second", if_none_match=True)
    assert info.value.key == "lock"
    blob = storage.get("lock")
    assert blob is not None and (blob.data, blob.etag) == (b"first", etag)


def test_compare_and_swap(storage: Storage) -> None:
    v1 = storage.put("manifest", b"v1", if_none_match=True)
    v2 = storage.put("manifest", b"v2", if_match=v1)
    with pytest.raises(PreconditionFailedError):
        storage.put("manifest", b"v3 from a stale reader", if_match=v1)
    blob = storage.get("manifest")
    assert blob is not None and (blob.data, blob.etag) == (b"v2", v2)


def test_compare_and_swap_on_a_missing_object_fails(storage: Storage) -> None:
    with pytest.raises(PreconditionFailedError):
        storage.put("manifest", b"v1", if_match="0123456789abcdef0123456789abcdef")
    with pytest.raises(NotFoundError):
        storage.get("manifest")


def test_delete(storage: Storage) -> None:
    storage.delete("never-existed")  # not an error without a condition
    storage.put("k", b"v")
    storage.delete("k")
    with pytest.raises(NotFoundError):
        storage.get("k")


def test_delete_if_match(storage: Storage) -> None:
    etag = storage.put("lease", b"held by a")
    with pytest.raises(PreconditionFailedError):
        storage.delete("lease", if_match="0123456789abcdef0123456789abcdef")
    assert storage.get("lease") is not None
    storage.delete("lease", if_match=etag)
    with pytest.raises(NotFoundError):
        storage.get("lease")
    with pytest.raises(PreconditionFailedError):
        storage.delete("lease", if_match=etag)  # gone: the condition cannot hold


def test_list_in_key_order_with_prefix(storage: Storage) -> None:
    # '-' < '/' < '0' in byte order: a server listing in folder-tree order gets this wrong.
    keys = ["b", "a/c", "a0", "a-x", "a/b", "snapshots/0002", "snapshots/0001", "\u00e4"]
    etags = {key: storage.put(key, key.encode() * 3) for key in keys}
    listed = list(storage.list())
    assert [info.key for info in listed] == sorted(keys)
    for info in listed:
        assert isinstance(info, ObjectInfo)
        assert (info.size, info.etag) == (len(info.key.encode()) * 3, etags[info.key])
        assert info.modified > 0
    assert [i.key for i in storage.list("a")] == ["a-x", "a/b", "a/c", "a0"]
    assert [i.key for i in storage.list("a/")] == ["a/b", "a/c"]
    assert [i.key for i in storage.list("snapshots/")] == ["snapshots/0001", "snapshots/0002"]
    assert list(storage.list("zzz")) == []


def test_list_of_an_empty_remote(storage: Storage) -> None:
    assert list(storage.list()) == []


def test_prefixes_and_folders_are_isolated(storage: Storage, remote: Remote) -> None:
    sibling = remote.open("-sibling")
    storage.put("manifest", b"ours")
    assert list(sibling.list()) == []
    with pytest.raises(NotFoundError):
        sibling.get("manifest")
    sibling.put("manifest", b"theirs")
    blob = storage.get("manifest")
    assert blob is not None and blob.data == b"ours"
    sibling.close()


@pytest.mark.parametrize(
    "key", ["", "/abs", "trailing/", "a//b", "a/./b", "a/../b", "..", "nul\x00", ".lambdalite/x"]
)
def test_invalid_keys_are_refused_by_every_backend(storage: Storage, key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        storage.put(key, b"x")
    assert info.value.key == "key"
    with pytest.raises(ConfigurationError):
        storage.get(key)
    assert list(storage.list()) == []


def test_put_file_and_get_file_round_trip(storage: Storage, tmp_path: Path) -> None:
    data = os.urandom(1 << 20) * 12 + os.urandom(BIG - 12 * (1 << 20))
    assert len(data) == BIG
    source = tmp_path / "snapshot.in"
    source.write_bytes(data)
    sent: list[int] = []
    etag = storage.put_file("snapshots/big", str(source), progress=sent.append)
    assert sum(sent) == BIG

    target = tmp_path / "snapshot.out"
    target.write_bytes(b"stale local copy")  # replaced, not appended to
    received: list[int] = []
    assert storage.get_file("snapshots/big", str(target), progress=received.append) == etag
    assert sum(received) == BIG
    assert target.read_bytes() == data
    assert [(i.key, i.size, i.etag) for i in storage.list("snapshots/")] == [
        ("snapshots/big", BIG, etag)
    ]
    assert not [
        p
        for p in tmp_path.iterdir()
        if p.name not in ("snapshot.in", "snapshot.out") and not p.name.startswith("remote")
    ]


def test_get_file_of_a_missing_object(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        storage.get_file("missing", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# -- exactly one winner of N ------------------------------------------------------------------


def _attempt(write: Callable[[], str]) -> str:
    try:
        write()
    except PreconditionFailedError:
        return "lost"
    except TransientStorageError:
        return "transient"  # S3 may answer 409 to a racing conditional write: nothing written
    return "won"


def _racer(remote: Remote, key: str, index: int, barrier: Any, results: Any) -> None:
    """One simulated instance: a create-only round, then a compare-and-swap round."""
    storage = remote.open()
    try:
        barrier.wait(120)
        outcome = _attempt(lambda: storage.put(key, b"create %d" % index, if_none_match=True))
        results.put(("create", index, outcome))
        barrier.wait(120)
        blob = storage.get(key)
        assert blob is not None
        barrier.wait(120)  # everyone holds the same ETag before anyone swaps
        outcome = _attempt(lambda: storage.put(key, b"swap %d" % index, if_match=blob.etag))
        results.put(("swap", index, outcome))
    finally:
        storage.close()


def _run_racers(remote: Remote, key: str) -> list[tuple[str, int, str]]:
    if remote.kind == "memory":
        barrier: Any = threading.Barrier(RACERS)
        results: Any = queue.Queue()
        threads = [
            threading.Thread(target=_racer, args=(remote, key, i, barrier, results))
            for i in range(RACERS)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(RACERS)
        results = ctx.Queue()
        procs = [
            ctx.Process(target=_racer, args=(remote, key, i, barrier, results))
            for i in range(RACERS)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(180)
        assert [p.exitcode for p in procs] == [0] * RACERS
    return [results.get(timeout=10) for _ in range(2 * RACERS)]


@pytest.mark.slow
def test_exactly_one_winner_of_n(remote: Remote) -> None:
    outcomes = _run_racers(remote, "manifest")
    storage = remote.open()
    final = storage.get("manifest")
    storage.close()
    assert final is not None
    for round_name in ("create", "swap"):
        rows = [(i, o) for r, i, o in outcomes if r == round_name]
        winners = [i for i, o in rows if o == "won"]
        assert len(rows) == RACERS
        assert len(winners) == 1, rows
        assert {o for _, o in rows} <= {"won", "lost", "transient"}
        if round_name == "swap":
            assert final.data == b"swap %d" % winners[0]
