"""Storage failures: bad URLs, missing buckets, wrong endpoints, refused credentials,
crash leftovers, SDK error translation and the fault-injecting wrapper.

Every failure must be a clear lambdalite error naming what is wrong, and must
write nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import S3TransferRetriesExceededError as RetriesExceededError
from botocore.awsrequest import AWSResponse
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

import lambdalite.storage
from lambdalite.errors import (
    ConfigurationError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
    TransientStorageError,
)
from lambdalite.storage import Storage, open_storage, register_storage
from lambdalite.storage.faulty import FaultyStorage, InjectedFaultError
from lambdalite.storage.folder import FolderStorage
from lambdalite.storage.memory import MemoryStorage, reset
from lambdalite.storage.s3 import REQUIRED_IAM_ACTIONS, S3Storage, translate_error
from lambdalite.testing.seaweedfs import Server
from tests.servers.seaweedfs import S3Remote


def test_public_names_are_sorted_and_exported() -> None:
    assert lambdalite.storage.__all__ == sorted(lambdalite.storage.__all__)
    for name in lambdalite.storage.__all__:
        assert hasattr(lambdalite.storage, name)


# -- malformed URLs: ConfigurationError naming "remote", before any I/O ----------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("relative/path/db", "not a URL"),
        ("/abs/path/without/scheme", "not a URL"),
        ("file:relative/path", "absolute"),
        ("file://relative/path", "host"),
        ("file://server/share/db", "host"),
        ("file:///abs/path?mode=ro", "query"),
        ("ftp://example.com/db", "unknown scheme"),
        ("s3://", "bucket"),
        ("s3:///only/a/prefix", "bucket"),
        ("s3://Bad_Bucket/db", "invalid bucket"),
        ("s3://ab/db", "invalid bucket"),
        ("s3://-leading-hyphen/db", "invalid bucket"),
        ("s3://two..dots/db", "invalid bucket"),
        ("s3://192.168.10.20/db", "IP address"),
        ("s3://bucket:9000/db", "port"),
        ("s3://bucket/a//b", "prefix"),
        ("s3://bucket/db?versionId=1", "query"),
        ("memory://", "name"),
        ("memory://name/a/../b", "prefix"),
    ],
)
def test_malformed_urls_are_configuration_errors(url: str, says: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_storage(url)
    assert info.value.key == "remote"
    message = str(info.value)
    assert says in message
    assert "expected" in message  # says which forms are accepted


def test_credentials_in_an_s3_url_are_refused_and_never_echoed() -> None:
    with pytest.raises(ConfigurationError) as info:
        open_storage("s3://AKIAEXAMPLE:sup3r-secret@bucket/db")
    assert info.value.key == "remote"
    assert "sup3r-secret" not in str(info.value)
    assert "credential chain" in str(info.value)


def test_an_unknown_scheme_lists_the_accepted_forms() -> None:
    with pytest.raises(ConfigurationError) as info:
        open_storage("gs://bucket/db")
    message = str(info.value)
    for form in ("file:///", "s3://bucket", "memory://"):
        assert form in message


def test_endpoint_url_must_be_http() -> None:
    with pytest.raises(ConfigurationError) as info:
        open_storage("s3://bucket/db", endpoint_url="127.0.0.1:9000")
    assert info.value.key == "endpoint_url"


def test_opening_does_no_io(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet"
    storage = open_storage(root.as_uri())
    assert not root.exists()
    # Reads of a remote that does not exist yet create nothing either.
    with pytest.raises(NotFoundError):
        storage.get("manifest")
    assert list(storage.list()) == []
    storage.delete("manifest")
    assert not (tmp_path / "not").exists()
    # An S3 remote pointing nowhere opens fine: the client is created on first use.
    open_storage("s3://bucket/db", endpoint_url="http://127.0.0.1:9")


def test_register_storage_serves_a_new_scheme(tmp_path: Path) -> None:
    def factory(url: str, *, endpoint_url: str | None = None, region: str | None = None) -> Storage:
        return FolderStorage(tmp_path / url.split("://", 1)[1])

    register_storage("test-folder", factory)
    storage = open_storage("test-folder://x")
    storage.put("k", b"v")
    assert (tmp_path / "x" / "k").read_bytes() == b"v"
    with pytest.raises(ConfigurationError):
        register_storage("bad scheme", factory)


# -- folder backend: bad roots, clashes, crash leftovers -------------------------------------


def test_a_file_url_pointing_at_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "app.db"
    target.write_bytes(b"SQLite format 3\x00")
    storage = open_storage(target.as_uri())  # no I/O yet
    for call in (
        lambda: storage.get("manifest"),
        lambda: storage.put("manifest", b"x"),
        lambda: list(storage.list()),
    ):
        with pytest.raises(ConfigurationError) as info:
            call()
        assert info.value.key == "remote"
        assert "not a folder" in str(info.value)
    assert target.read_bytes() == b"SQLite format 3\x00"


def test_folder_creates_its_root_on_first_write(tmp_path: Path) -> None:
    root = tmp_path / "a" / "b" / "remote"
    storage = FolderStorage(root)
    storage.put("deltas/0001", b"pages")
    assert (root / "deltas" / "0001").read_bytes() == b"pages"
    assert [i.key for i in storage.list()] == ["deltas/0001"]


def test_folder_made_by_hand_is_usable(tmp_path: Path) -> None:
    root = tmp_path / "remote"
    (root / "snapshots").mkdir(parents=True)
    (root / "snapshots" / "0001").write_bytes(b"image")  # copied in, no .lambdalite folder
    storage = FolderStorage(root)
    (info,) = storage.list()
    assert (info.key, info.etag) == ("snapshots/0001", hashlib.md5(b"image").hexdigest())
    storage.delete("snapshots/0001", if_match=info.etag)
    assert list(storage.list()) == []


def test_folder_key_clash_between_object_and_folder(tmp_path: Path) -> None:
    storage = FolderStorage(tmp_path / "remote")
    storage.put("a", b"object")
    with pytest.raises(StorageError) as info:
        storage.put("a/b", b"needs a folder named a")
    assert "clashes" in str(info.value)
    assert info.value.key == "a/b"
    with pytest.raises(NotFoundError):
        storage.get("a/b")
    blob = storage.get("a")
    assert blob is not None and blob.data == b"object"


def _leave_temp_file(root: Path, age: float) -> Path:
    tmp_dir = root / ".lambdalite" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    leftover = tmp_dir / "tmpcrashed.tmp"
    leftover.write_bytes(b"half a snapshot")
    then = time.time() - age
    os.utime(leftover, (then, then))
    return leftover


def test_folder_ignores_and_cleans_leftover_temp_files(tmp_path: Path) -> None:
    root = tmp_path / "remote"
    FolderStorage(root).put("manifest", b"v1")
    leftover = _leave_temp_file(root, age=3600)
    stray = root / "snapshots"
    stray.mkdir()

    reader = FolderStorage(root)
    assert [i.key for i in reader.list()] == ["manifest"]
    for hidden in (".lambdalite", ".lambdalite/", ".lambdalite/tmp/", "../", "/"):
        assert list(reader.list(hidden)) == []
    with pytest.raises(ConfigurationError):
        reader.get(".lambdalite/tmp/tmpcrashed.tmp")
    assert leftover.exists()

    writer = FolderStorage(root)  # a new instance sweeps on its first write
    writer.put("deltas/0002", b"pages")
    assert not leftover.exists()
    assert [i.key for i in writer.list()] == ["deltas/0002", "manifest"]


def test_folder_never_removes_a_temp_file_a_live_writer_holds(tmp_path: Path) -> None:
    root = tmp_path / "remote"
    storage = FolderStorage(root)
    storage.put("manifest", b"v1")
    young = _leave_temp_file(root, age=0)
    assert storage.clean_temp_files() == 0  # too young: maybe a writer about to lock it
    held = _leave_temp_file(root, age=3600)
    with open(held, "rb") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        assert storage.clean_temp_files() == 0
        assert held.exists() and young.exists()
    assert storage.clean_temp_files() == 1
    assert not held.exists()


# -- memory backend --------------------------------------------------------------------------


def test_memory_stores_are_shared_by_name_and_reset() -> None:
    a = open_storage("memory://shared-by-name")
    b = open_storage("memory://shared-by-name")
    a.put("k", b"v")
    blob = b.get("k")
    assert blob is not None and blob.data == b"v"
    assert isinstance(a, MemoryStorage)
    a.reset()
    with pytest.raises(NotFoundError):
        b.get("k")
    b.put("k", b"v")
    reset()
    assert list(a.list()) == []


# -- S3 against SeaweedFS: missing bucket, wrong endpoint, refused or missing credentials ----


@pytest.mark.s3
def test_missing_bucket_is_not_found_naming_the_bucket(
    s3_remote: S3Remote, seaweedfs: Server
) -> None:
    storage = open_storage("s3://lambdalite-no-such-bucket/db", endpoint_url=s3_remote.endpoint_url)
    for call in (
        lambda: storage.get("manifest"),
        lambda: storage.put("manifest", b"v1"),
        lambda: storage.put("manifest", b"v1", if_none_match=True),
        lambda: list(storage.list()),
    ):
        with pytest.raises(NotFoundError) as info:
            call()
        message = str(info.value)
        assert "'lambdalite-no-such-bucket'" in message
        assert "create it" in message and "remote URL" in message
        assert info.value.remote == "s3://lambdalite-no-such-bucket/db"
        assert isinstance(info.value.__cause__, ClientError)
    # SeaweedFS checks If-Match before the bucket (AWS answers NoSuchBucket): "lost the
    # race" is what the caller sees, and its next read reports the missing bucket.
    with pytest.raises((NotFoundError, PreconditionFailedError)):
        storage.put("manifest", b"v1", if_match="0" * 32)
    assert not seaweedfs.bucket_exists("lambdalite-no-such-bucket")  # nothing created


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when we return: nobody listens


@pytest.mark.s3
def test_wrong_endpoint_is_transient_and_names_the_endpoint(s3_remote: S3Remote) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    storage = S3Storage(s3_remote.bucket, "db", endpoint_url=endpoint, max_attempts=1)
    for call in (lambda: storage.get("manifest"), lambda: storage.put("manifest", b"v1")):
        with pytest.raises(TransientStorageError) as info:
            call()
        message = str(info.value)
        assert endpoint in message
        assert "endpoint_url" in message and "AWS_ENDPOINT_URL_S3" in message
        assert info.value.key == "manifest"
        assert isinstance(info.value.__cause__, EndpointConnectionError)
    assert list(open_storage(s3_remote.url).list()) == []  # nothing written


@pytest.mark.s3
@pytest.mark.parametrize(
    ("key_id", "secret", "code"),
    [
        ("lambdalite-wrong", "whatever-secret", "InvalidAccessKeyId"),
        ("lambdalite-test", "a-wrong-secret-value", "SignatureDoesNotMatch"),
    ],
)
def test_refused_credentials(
    s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch, key_id: str, secret: str, code: str
) -> None:
    # weed mini is started with one S3 identity (see lambdalite.testing.seaweedfs), so
    # SeaweedFS itself refuses other keys, as AWS would.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    storage = open_storage(s3_remote.url)
    with pytest.raises(StorageError) as info:
        storage.put("manifest", b"v1", if_none_match=True)
    error = info.value
    assert type(error) is StorageError  # not retryable, not "lost the race"
    assert "credentials were refused" in str(error) and code in str(error)
    for action in REQUIRED_IAM_ACTIONS:
        assert action in str(error)
    assert secret not in str(error)
    assert isinstance(error.__cause__, ClientError)
    for name, value in s3_remote.server.env.items():  # the right keys again
        monkeypatch.setenv(name, value)
    with pytest.raises(NotFoundError):
        open_storage(s3_remote.url).get("manifest")  # nothing was written


@pytest.mark.s3
def test_no_credentials_at_all(s3_remote: S3Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage = open_storage(s3_remote.url)
    with pytest.raises(StorageError) as info:
        storage.get("manifest")
    assert type(info.value) is StorageError
    assert "default credential chain" in str(info.value)
    assert "AWS_ACCESS_KEY_ID" in str(info.value)
    assert isinstance(info.value.__cause__, NoCredentialsError)


# -- ambiguous outcomes: a conditional write is sent once, its failure left open -------------


class _EmptyBody:
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b""


@pytest.fixture
def s3_storage(s3_remote: S3Remote) -> Iterator[S3Storage]:
    storage = S3Storage(s3_remote.bucket, "db", endpoint_url=s3_remote.endpoint_url)
    yield storage
    storage.close()


def _first_attempt_then_500(storage: S3Storage, event: str, action: Any) -> list[Any]:
    """Make the first ``event`` request run ``action`` out of band and answer 500 instead."""
    calls: list[Any] = []

    def before_send(request: Any, **_: Any) -> AWSResponse | None:
        calls.append(request)
        if len(calls) > 1:
            return None  # any retry goes to the server for real
        action()
        return AWSResponse(request.url, 500, {}, _EmptyBody())

    for once in (False, True):
        storage._client(once=once).meta.events.register(f"before-send.s3.{event}", before_send)
    return calls


@pytest.mark.s3
@pytest.mark.parametrize("condition", ["if_none_match", "if_match"])
def test_a_conditional_write_is_sent_once_and_its_failure_left_open(
    s3_storage: S3Storage, s3_remote: S3Remote, condition: str
) -> None:
    """A retried conditional write refused with 412 could hide that the first attempt won
    (and the object may since hold another writer's bytes): the SDK never retries it."""
    other = open_storage(s3_remote.url)
    etag = other.put("manifest", b"v0")
    calls = _first_attempt_then_500(s3_storage, "PutObject", lambda: other.put("manifest", b"v1"))
    kwargs: dict[str, Any] = (
        {"if_none_match": True} if condition == "if_none_match" else {"if_match": etag}
    )
    with pytest.raises(TransientStorageError) as caught:
        s3_storage.put("manifest", b"v1", **kwargs)
    assert caught.value.request_sent
    assert len(calls) == 1
    assert not isinstance(caught.value, PreconditionFailedError)


@pytest.mark.s3
def test_an_unconditional_write_is_still_retried_by_the_sdk(
    s3_storage: S3Storage, s3_remote: S3Remote
) -> None:
    calls = _first_attempt_then_500(s3_storage, "PutObject", lambda: None)
    s3_storage.put("object", b"data")
    assert len(calls) == 2
    blob = open_storage(s3_remote.url).get("object")
    assert blob is not None and blob.data == b"data"


@pytest.mark.s3
def test_a_conditional_delete_is_sent_once(s3_storage: S3Storage, s3_remote: S3Remote) -> None:
    other = open_storage(s3_remote.url)
    etag = other.put("lease", b"held")
    calls = _first_attempt_then_500(s3_storage, "DeleteObject", lambda: other.delete("lease"))
    with pytest.raises(TransientStorageError):
        s3_storage.delete("lease", if_match=etag)
    assert len(calls) == 1
    with pytest.raises(NotFoundError):
        other.get("lease")


# -- the one translation function, fed constructed SDK errors -------------------------------


def _client_error(status: int, code: str, message: str = "", op: str = "PutObject") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": 0},
    }
    return ClientError(response, op)


def _translate(exc: BaseException, *, conditional: bool = False) -> StorageError:
    return translate_error(
        exc,
        remote="s3://bucket/db",
        key="manifest",
        bucket="bucket",
        endpoint="http://127.0.0.1:9",
        op="put",
        conditional=conditional,
    )


@pytest.mark.parametrize(
    ("exc", "conditional", "expected"),
    [
        (_client_error(412, "PreconditionFailed"), True, PreconditionFailedError),
        (_client_error(404, "NoSuchKey"), True, PreconditionFailedError),  # AWS: If-Match, gone
        (_client_error(404, "NoSuchKey"), False, NotFoundError),
        (_client_error(404, "404"), False, NotFoundError),  # a HEAD has no error body
        (_client_error(404, "NoSuchBucket"), True, NotFoundError),
        (_client_error(409, "ConditionalRequestConflict"), True, TransientStorageError),
        (_client_error(503, "SlowDown"), False, TransientStorageError),
        (_client_error(500, "InternalError"), False, TransientStorageError),
        (_client_error(400, "RequestTimeout"), False, TransientStorageError),
        (_client_error(429, "TooManyRequests"), False, TransientStorageError),
        (_client_error(400, "InvalidArgument", "bad header"), False, StorageError),
        (ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), False, TransientStorageError),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:9"), False, TransientStorageError),
        (
            RetriesExceededError(ReadTimeoutError(endpoint_url="http://x")),
            False,
            TransientStorageError,
        ),
        (NoCredentialsError(), False, StorageError),
        (ValueError("not from the SDK"), False, StorageError),
    ],
)
def test_translate_error(exc: BaseException, conditional: bool, expected: type) -> None:
    error = _translate(exc, conditional=conditional)
    assert type(error) is expected
    assert (error.remote, error.key) == ("s3://bucket/db", "manifest")


@pytest.mark.parametrize(
    "code", ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"]
)
def test_translate_refused_credentials(code: str) -> None:
    error = _translate(_client_error(403, code))
    assert type(error) is StorageError
    assert "credentials were refused" in str(error)
    assert all(action in str(error) for action in REQUIRED_IAM_ACTIONS)


def test_translate_names_the_endpoint_of_a_connection_failure() -> None:
    error = _translate(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))
    assert isinstance(error, TransientStorageError)
    assert "http://127.0.0.1:9" in str(error) and "AWS_ENDPOINT_URL_S3" in str(error)


# -- FaultyStorage ---------------------------------------------------------------------------


@pytest.fixture
def inner() -> Iterator[MemoryStorage]:
    storage = MemoryStorage("faulty-tests")
    yield storage
    storage.reset()


def _fault_pattern(inner: Storage, seed: int) -> list[str]:
    faulty = FaultyStorage(inner, seed=seed, fail_rate=0.2, fail_after_rate=0.2)
    pattern = []
    for i in range(60):
        try:
            faulty.put(f"k{i}", b"x")
            pattern.append("ok")
        except InjectedFaultError as exc:
            pattern.append("after" if exc.performed else "before")
    return pattern


def test_faults_are_deterministic_from_the_seed(inner: MemoryStorage) -> None:
    first = _fault_pattern(inner, seed=7)
    assert first == _fault_pattern(inner, seed=7)
    assert first != _fault_pattern(inner, seed=8)
    assert {"ok", "before", "after"} == set(first)


def test_fault_before_writes_nothing_and_after_writes(inner: MemoryStorage) -> None:
    faulty = FaultyStorage(inner, seed=1)
    faulty.fail_next("put")
    with pytest.raises(InjectedFaultError) as before:
        faulty.put("manifest", b"v1", if_none_match=True)
    assert isinstance(before.value, TransientStorageError) and not before.value.performed
    with pytest.raises(NotFoundError):
        inner.get("manifest")

    faulty.fail_next("put", after=True)
    with pytest.raises(InjectedFaultError) as after:
        faulty.put("manifest", b"v1", if_none_match=True)
    assert after.value.performed  # ambiguous: it raised, yet the write happened
    blob = inner.get("manifest")
    assert blob is not None and blob.data == b"v1"
    assert [(f.op, f.key, f.performed) for f in faulty.injected] == [
        ("put", "manifest", False),
        ("put", "manifest", True),
    ]
    assert faulty.calls["put"] == 2


def test_fail_next_counts_and_ops_filter(inner: MemoryStorage) -> None:
    faulty = FaultyStorage(inner, seed=3, fail_rate=1.0, ops={"put"})
    for _ in range(5):
        assert list(faulty.list()) == []  # "list" is not in ops: never fails by chance
    faulty.fail_next("list", 2)
    for _ in range(2):
        with pytest.raises(InjectedFaultError):
            faulty.list()
    assert list(faulty.list()) == []
    with pytest.raises(InjectedFaultError):
        faulty.put("k", b"v")


def test_faulty_storage_rejects_bad_settings(inner: MemoryStorage) -> None:
    with pytest.raises(ConfigurationError):
        FaultyStorage(inner, seed=0, fail_rate=0.7, fail_after_rate=0.7)
    with pytest.raises(ConfigurationError):
        FaultyStorage(inner, seed=0, ops={"upload"})
    with pytest.raises(ConfigurationError):
        FaultyStorage(inner, seed=0).fail_next("upload")
