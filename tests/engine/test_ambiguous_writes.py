"""A write whose answer was not seen has an unknown outcome until proven (issue 8 part A).

On S3 (SeaweedFS behind :class:`~lambdalite.testing.s3proxy.FaultProxy`), answers
are lost after a write landed, 5xx come back for writes that happened, and other
instances commit in between; on the folder remote the same is scripted with a
storage wrapper. The rules checked: a published commit is never reported as a
conflict (so a retry never applies it twice); a commit reported as failed is not
in the remote; what cannot be proven is ``CommitOutcomeUnknownError``; nothing a
manifest may name is ever deleted; every failure on the wire is a lambdalite error.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import lambdalite
from lambdalite.admin import verify
from lambdalite.config import Settings
from lambdalite.connection import Connection
from lambdalite.errors import StorageError, TransientStorageError
from lambdalite.replica.engine import EngineOptions, Replica
from lambdalite.storage import open_storage
from lambdalite.storage.base import Blob, ObjectInfo, ProgressCallback, Storage
from lambdalite.storage.s3 import S3Storage
from lambdalite.testing.s3proxy import FaultKind, FaultProxy
from lambdalite.testing.seaweedfs import Server
from tests.servers.seaweedfs import S3Remote


@pytest.fixture
def proxy(seaweedfs: Server) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs.endpoint_url, delay=0.2, trickle_duration=0.1) as p:
        yield p


def _connect(url: str, cache: Path, endpoint: str, **options: Any) -> lambdalite.Connection:
    return lambdalite.connect(
        url, cache_dir=str(cache), endpoint_url=endpoint, isolation_level=None, **options
    )


MODES = {
    "optimistic": {"lock": "none"},
    # the write lease, claimed at BEGIN: a claim, then the publish
    "lease": {"transaction_mode": "IMMEDIATE"},
    # the write lease, free when the transaction read: the publish only, no claim
    "unclaimed": {},
}


def _at_publish(proxy: FaultProxy, kind: str | None, mode: str, **kw: Any) -> None:
    """Script ``kind`` on the manifest write that publishes the next commit (under the write
    lease, the one that claims it comes first and passes)."""
    if mode == "lease":
        proxy.script(None, method="PUT", key_pattern=r"/manifest$")
    proxy.script(kind, method="PUT", key_pattern=r"/manifest$", **kw)


def _insert(conn: lambdalite.Connection, ident: str) -> None:
    conn.execute("BEGIN")
    conn.execute("INSERT INTO t(id) VALUES (?)", (ident,))
    conn.commit()


def _ids(url: str, cache: Path, endpoint: str | None = None) -> list[str]:
    """Every id in the remote, read by a cold instance (duplicates would show twice)."""
    conn = lambdalite.connect(url, cache_dir=str(cache), endpoint_url=endpoint)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return sorted(i for (i,) in conn.execute("SELECT id FROM t"))
    finally:
        conn.close()


def _verify(url: str, cache: Path, endpoint: str | None = None) -> None:
    options = {"cache_dir": str(cache)} | ({"endpoint_url": endpoint} if endpoint else {})
    report = verify(Settings.build(url, options))
    assert report.ok, report.to_dict()


def _setup(url: str, tmp_path: Path, endpoint: str | None = None) -> None:
    conn = lambdalite.connect(url, cache_dir=str(tmp_path / "setup"), endpoint_url=endpoint)
    conn.execute("CREATE TABLE t(id TEXT, n INTEGER)")  # no key: a duplicate would show
    conn.commit()
    conn.close()


# ---------------------------------------------------------------------------- S3, on the wire


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("inline", [True, False], ids=["inline-delta", "delta-object"])
def test_a_lost_answer_then_another_commit_is_still_a_success(
    s3_remote: S3Remote, proxy: FaultProxy, tmp_path: Path, inline: bool, mode: str
) -> None:
    """Item 1 and 2a: A's manifest lands, its answer is lost, B commits on top before A's
    next request. A's commit is a success, applied once, and its delta is never deleted."""
    url, direct = s3_remote.url, s3_remote.endpoint_url
    _setup(url, tmp_path, direct)
    options = ({} if inline else {"inline_delta_max": 0}) | MODES[mode]
    a = _connect(url, tmp_path / "a", proxy.endpoint_url, **options)
    b = _connect(url, tmp_path / "b", direct, **MODES[mode])
    assert a.execute("SELECT count(*) FROM t").fetchone() == (0,)
    _at_publish(proxy, "reset_after", mode)
    proxy.script(None, before=lambda: _insert(b, "b1"))  # A's very next request waits for it
    _insert(a, "a1")  # no ConflictError: the remote holds it
    assert proxy.pending == 0
    assert _ids(url, tmp_path / "cold", direct) == ["a1", "b1"]
    _verify(url, tmp_path / "verify", direct)
    _insert(a, "a2")
    assert _ids(url, tmp_path / "cold2", direct) == ["a1", "a2", "b1"]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("fault", ["reset_after", "error_after"])
def test_a_manifest_write_that_landed_is_a_success_whatever_the_answer(
    s3_remote: S3Remote, proxy: FaultProxy, tmp_path: Path, fault: str, mode: str
) -> None:
    url = s3_remote.url
    _setup(url, tmp_path, s3_remote.endpoint_url)
    a = _connect(url, tmp_path / "a", proxy.endpoint_url, **MODES[mode])
    _at_publish(proxy, fault, mode)
    _insert(a, "a1")
    assert _ids(url, tmp_path / "cold", s3_remote.endpoint_url) == ["a1"]
    puts = [r for r in proxy.log if r.method == "PUT" and r.key.endswith("/manifest")]
    assert len(puts) == (2 if mode == "lease" else 1)  # never sent twice: read back instead


@pytest.mark.parametrize("fault", ["reset_after", "error_after"])
def test_a_lease_claim_whose_answer_was_lost_is_held(
    s3_remote: S3Remote, proxy: FaultProxy, tmp_path: Path, fault: str
) -> None:
    url = s3_remote.url
    _setup(url, tmp_path, s3_remote.endpoint_url)
    a = _connect(url, tmp_path / "a", proxy.endpoint_url, **MODES["lease"])
    proxy.script(fault, method="PUT", key_pattern=r"/manifest$")  # the claim
    _insert(a, "a1")
    _insert(a, "a2")
    assert _ids(url, tmp_path / "cold", s3_remote.endpoint_url) == ["a1", "a2"]


def test_an_outcome_that_cannot_be_proven_is_unknown_and_nothing_is_deleted(
    s3_remote: S3Remote, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 2b: the answer is lost and the remote cannot be read back."""
    url, direct = s3_remote.url, s3_remote.endpoint_url
    _setup(url, tmp_path, direct)
    a = _connect(url, tmp_path / "a", proxy.endpoint_url, inline_delta_max=0, **MODES["lease"])
    assert a.execute("SELECT count(*) FROM t").fetchone() == (0,)
    _at_publish(proxy, "reset_after", "lease")
    proxy.script("error_before", method="GET", key_pattern=r"/manifest$", count=100)
    with pytest.raises(lambdalite.CommitOutcomeUnknownError) as caught:
        _insert(a, "a1")
    assert isinstance(caught.value, TransientStorageError)
    proxy.clear()
    assert not a.in_transaction
    storage = open_storage(url, endpoint_url=direct)
    deltas = [info.key for info in storage.list("deltas/")]
    assert len(deltas) == 1  # the delta it may name is still there
    assert _ids(url, tmp_path / "cold", direct) == ["a1"]  # it did land, exactly once
    _verify(url, tmp_path / "verify", direct)
    assert sorted(i for (i,) in a.execute("SELECT id FROM t")) == ["a1"]  # A heals


@pytest.mark.parametrize("fault", [k.value for k in FaultKind])
def test_random_faults_never_duplicate_or_lose_an_acknowledged_commit(
    s3_remote: S3Remote, proxy: FaultProxy, tmp_path: Path, fault: str
) -> None:
    url, direct = s3_remote.url, s3_remote.endpoint_url
    _setup(url, tmp_path, direct)
    a = _connect(url, tmp_path / "a", proxy.endpoint_url, inline_delta_max=200)
    b = _connect(url, tmp_path / "b", direct)
    proxy.set_rates({fault: 0.3})
    acknowledged, unknown = [], []
    for i in range(12):
        ident = f"a{i}"
        try:
            _insert(a, ident)
            acknowledged.append(ident)
        except lambdalite.CommitOutcomeUnknownError:
            unknown.append(ident)
        except (lambdalite.ConflictError, StorageError):
            pass
        assert not a.in_transaction
        if i % 4 == 0:
            _insert(b, f"b{i}")
            acknowledged.append(f"b{i}")
    proxy.clear()
    ids = _ids(url, tmp_path / "cold", direct)
    assert len(ids) == len(set(ids))  # nothing applied twice
    assert set(acknowledged) <= set(ids) <= set(acknowledged) | set(unknown)
    _verify(url, tmp_path / "verify", direct)


def test_every_failure_on_the_wire_is_a_lambdalite_error(
    s3_remote: S3Remote, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Item 3: whatever the proxy does to a request, only StorageErrors come out."""
    bucket, prefix = s3_remote.bucket, s3_remote.prefix
    storage = S3Storage(bucket, prefix, endpoint_url=proxy.endpoint_url, max_attempts=1)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(300_000))
    direct = S3Storage(bucket, prefix, endpoint_url=s3_remote.endpoint_url)
    direct.put("fixed", b"x" * 5000)
    etag = direct.put("cas", b"v0")
    ops: dict[str, Callable[[], object]] = {
        "get": lambda: storage.get("fixed"),
        "get-304": lambda: storage.get("cas", if_none_match=etag),
        "put": lambda: storage.put("other", b"y" * 5000),
        "put-if-match": lambda: storage.put("cas", b"v0", if_match=etag),  # same bytes, ETag
        "list": lambda: list(storage.list("")),
        "put_file": lambda: storage.put_file("file", str(big)),
        "get_file": lambda: storage.get_file("fixed", str(tmp_path / "down")),
        "delete": lambda: storage.delete("other"),
    }
    outcomes: dict[str, set[str]] = {}
    for kind in FaultKind:
        proxy.set_rates({kind.value: 1.0})
        for name, op in ops.items():
            try:
                op()
                outcome = "ok"
            except StorageError as exc:
                outcome = type(exc).__name__
            except BaseException as exc:  # pragma: no cover - the failure this test looks for
                pytest.fail(f"{kind} on {name} raised {type(exc).__module__}.{exc!r}")
            outcomes.setdefault(kind.value, set()).add(outcome)
    proxy.clear()
    assert outcomes["delay"] == {"ok"} and outcomes["trickle"] == {"ok"}
    assert "ok" not in outcomes["error_before"]


def test_commit_outcome_unknown_is_a_public_name() -> None:
    """Item 4."""
    from lambdalite import errors

    assert lambdalite.CommitOutcomeUnknownError is errors.CommitOutcomeUnknownError
    assert issubclass(lambdalite.CommitOutcomeUnknownError, sqlite3.OperationalError)
    assert issubclass(lambdalite.LocalCopyError, lambdalite.ConflictError)


# ---------------------------------------------------------------------------- folder, scripted


class _Interleaving:
    """A storage whose next manifest write lands, then runs ``between``, then fails."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.between: Callable[[], None] | None = None

    @property
    def url(self) -> str:
        return self.inner.url

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        etag = self.inner.put(key, data, if_match=if_match, if_none_match=if_none_match)
        between, self.between = self.between, None
        if key == "manifest" and between is not None:
            between()
            raise TransientStorageError("the answer was lost", remote=self.url, key=key)
        return etag

    def get(self, key: str, *, if_none_match: str | None = None) -> Blob | None:
        return self.inner.get(key, if_none_match=if_none_match)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self.inner.delete(key, if_match=if_match)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def put_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        return self.inner.put_file(key, path, progress=progress)

    def get_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        return self.inner.get_file(key, path, progress=progress)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("later", ["commits", "rollovers", "a-compaction"])
def test_settling_finds_the_commit_through_archived_manifests(
    tmp_path: Path, later: str
) -> None:
    """While A's answer is lost, B commits more, rolls over or compacts: A's version is then
    only in an archived manifest, and settling finds it there by its nonce."""
    url = (tmp_path / "remote").as_uri()
    _setup(url, tmp_path)
    storage = _Interleaving(open_storage(url))
    a = Connection(Replica(url, storage, str(tmp_path / "a")), isolation_level=None)
    options = {
        "commits": {},
        "rollovers": {"compact_after_deltas": 2},
        "a-compaction": {"compact_after_bytes": 1, "compact_after_deltas": 1},
    }[later]
    b = lambdalite.connect(url, cache_dir=str(tmp_path / "b"), isolation_level=None, **options)
    assert a.execute("SELECT count(*) FROM t").fetchone() == (0,)

    def others_commit() -> None:
        for i in range(3):
            _insert(b, f"b{i}")

    storage.between = others_commit
    _insert(a, "a1")
    assert _ids(url, tmp_path / "cold") == ["a1", "b0", "b1", "b2"]
    _verify(url, tmp_path / "verify")
    _insert(a, "a2")
    assert _ids(url, tmp_path / "cold2") == ["a1", "a2", "b0", "b1", "b2"]
    assert EngineOptions().compact_after_deltas > 2  # the defaults never got in the way
