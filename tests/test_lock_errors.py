"""Lock errors: what is not contention fails at once, with a message saying what to do.

Against DynamoDB Local: a missing table, a table with another key schema, and refused
credentials (DynamoDB Local accepts any access key id made of letters and digits, and
refuses others with ``UnrecognizedClientException``, so refused credentials are tested
for real; AccessDenied, which it never sends, goes through the translation function as a
constructed ``ClientError``). Each time: a clear ``LockError``, after one attempt, and
nothing written.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
)

from lambdalite.errors import (
    ConfigurationError,
    LockError,
    LockTimeoutError,
    StorageError,
    TransientStorageError,
)
from lambdalite.locks import open_lock
from lambdalite.locks.base import ATTEMPT_SPACING, Backoff, Busy, Lease, TransientLockError
from lambdalite.locks.dynamodb import DynamoDBLock, init_table, translate_error
from lambdalite.locks.memory import MemoryLock, MemoryLockTable
from lambdalite.locks.object import ObjectLock
from lambdalite.storage import open_storage
from lambdalite.testing.dynamodb import DynamoDBLocal


def _client_error(code: str, message: str = "msg", status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message},
         "ResponseMetadata": {"HTTPStatusCode": status}},
        "UpdateItem",
    )


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["redis://x", "", "  ", "dynamo://t", "s4", "filelock"])
def test_unknown_lock_spec(spec: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_lock(spec, key="k")
    assert caught.value.key == "lock"
    assert "dynamodb://TABLE" in str(caught.value)


def test_bad_table_name_and_options() -> None:
    with pytest.raises(ConfigurationError) as caught:
        open_lock("dynamodb://x", key="k")
    assert caught.value.key == "lock" and "table name" in str(caught.value)
    with pytest.raises(ConfigurationError) as caught:
        open_lock("memory", key="")
    assert caught.value.key == "lock_key"
    with pytest.raises(ConfigurationError) as caught:
        open_lock("memory", key="k", expiration=0)
    assert caught.value.key == "lock_expiration"
    with pytest.raises(ConfigurationError) as caught:
        open_lock("memory", key="k", max_attempts=0)
    assert caught.value.key == "lock_max_attempts"
    with pytest.raises(ConfigurationError) as caught:
        open_lock("s3", key="lock")
    assert caught.value.key == "lock" and "storage" in str(caught.value)


def test_opening_does_no_io() -> None:
    lock = open_lock("dynamodb://no-such-table", key="k", endpoint_url="http://127.0.0.1:9")
    assert isinstance(lock, DynamoDBLock) and lock._client is None


# -- DynamoDB, for real ----------------------------------------------------------------------


def _table_names(server: DynamoDBLocal) -> list[str]:
    names: list[str] = server.client().list_tables()["TableNames"]
    return names


def _counting(lock: DynamoDBLock) -> list[str]:
    calls: list[str] = []
    client = lock.client
    for name in ("update_item", "get_item"):
        real = getattr(client, name)

        def wrapper(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            calls.append(_name)
            return _real(*args, **kwargs)

        setattr(client, name, wrapper)
    return calls


@pytest.mark.dynamodb
def test_missing_table(dynamodb: DynamoDBLocal, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in dynamodb.env.items():
        monkeypatch.setenv(name, value)
    table = f"missing-{uuid.uuid4().hex[:8]}"
    lock = open_lock(f"dynamodb://{table}", key="k", max_attempts=10)
    assert isinstance(lock, DynamoDBLock)
    calls = _counting(lock)
    started = time.monotonic()
    with pytest.raises(LockError) as caught:
        lock.acquire(10)
    assert not isinstance(caught.value, LockTimeoutError)  # never reported as "busy"
    assert calls == ["update_item"]  # one attempt: not contention, no retry
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"table {table} does not exist" in message
    assert f"lambdalite lock init-table dynamodb://{table}" in message
    assert isinstance(caught.value.__cause__, ClientError)
    for call in (lock.inspect, lock.break_):
        with pytest.raises(LockError, match="does not exist"):
            call()
    with pytest.raises(LockError, match="does not exist"):
        lock.renew(Lease("k", lock.owner, 1, time.time() + 30))
    assert table not in _table_names(dynamodb)


@pytest.mark.dynamodb
def test_wrong_key_schema(dynamodb: DynamoDBLocal, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in dynamodb.env.items():
        monkeypatch.setenv(name, value)
    client = dynamodb.client()
    table = f"wrong-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    try:
        lock = open_lock(f"dynamodb://{table}", key="k")
        assert isinstance(lock, DynamoDBLock)
        calls = _counting(lock)
        with pytest.raises(LockError) as caught:
            lock.acquire(10)
        assert not isinstance(caught.value, LockTimeoutError)
        assert calls == ["update_item"]
        assert "key schema is wrong" in str(caught.value)
        assert "partition key `pk` of type string (S)" in str(caught.value)
        with pytest.raises(LockError, match="pk"):
            lock.inspect()
        assert client.scan(TableName=table)["Count"] == 0  # nothing written
        with pytest.raises(LockError, match="another key schema"):
            init_table(table, endpoint_url=dynamodb.endpoint_url, region="us-east-1")
    finally:
        client.delete_table(TableName=table)


@pytest.mark.dynamodb
def test_refused_credentials(dynamodb: DynamoDBLocal, dynamodb_table: str,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    # DynamoDB Local refuses access key ids that are not letters and digits.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-valid-key")
    lock = open_lock(f"dynamodb://{dynamodb_table}", key="k")
    assert isinstance(lock, DynamoDBLock)
    calls = _counting(lock)
    with pytest.raises(LockError) as caught:
        lock.acquire(10)
    assert not isinstance(caught.value, LockTimeoutError)
    assert calls == ["update_item"]
    message = str(caught.value)
    assert "access refused (UnrecognizedClientException" in message
    assert "dynamodb:GetItem, dynamodb:UpdateItem" in message
    assert "not-a-valid-key" not in message  # never echo credentials
    assert dynamodb.client().scan(TableName=dynamodb_table)["Count"] == 0


@pytest.mark.dynamodb
def test_unreachable_endpoint_is_retried_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    lock = DynamoDBLock("locks", "k", endpoint_url="http://127.0.0.1:9", region="us-east-1",
                        max_attempts=2, sleep=lambda _: None)
    with pytest.raises(LockError) as caught:
        lock.acquire(5)
    assert not isinstance(caught.value, LockTimeoutError)
    assert "could not reach the lock" in str(caught.value)
    assert isinstance(caught.value.__cause__, TransientLockError)


# -- the translation function ----------------------------------------------------------------


def test_translate_access_denied_names_the_iam_actions() -> None:
    error = translate_error(_client_error("AccessDeniedException", "User: arn:... is not "
                                          "authorized"), table="t1", action="take the lock")
    assert type(error) is LockError
    assert "dynamodb:GetItem, dynamodb:UpdateItem on table t1" in str(error)
    error = translate_error(_client_error("AccessDeniedException"), table="t1",
                            action="create_table", init=True)
    for action in ("dynamodb:CreateTable", "dynamodb:DescribeTable",
                   "dynamodb:UpdateTimeToLive", "dynamodb:DescribeTimeToLive"):
        assert action in str(error)


@pytest.mark.parametrize(
    "exc",
    [
        _client_error("ThrottlingException"),
        _client_error("ProvisionedThroughputExceededException"),
        _client_error("InternalServerError", status=500),
        _client_error("SomethingNew", status=503),
        ReadTimeoutError(endpoint_url="http://x"),
        ConnectTimeoutError(endpoint_url="http://x"),
    ],
)
def test_translate_transient(exc: Exception) -> None:
    assert isinstance(translate_error(exc, table="t", action="a"), TransientLockError)


def test_translate_other_errors() -> None:
    error = translate_error(_client_error("ResourceNotFoundException"), table="t9", action="a")
    assert "lambdalite lock init-table dynamodb://t9" in str(error)
    error = translate_error(
        _client_error("ValidationException", "The provided key element does not match the "
                      "schema"), table="t", action="a")
    assert "pk" in str(error) and not isinstance(error, TransientLockError)
    error = translate_error(_client_error("ValidationException", "Invalid expression"),
                            table="t", action="a")
    assert "Invalid expression" in str(error) and "schema" not in str(error)
    error = translate_error(NoCredentialsError(), table="t", action="a")
    assert "no AWS credentials" in str(error)
    error = translate_error(NoRegionError(), table="t", action="a")
    assert "AWS_REGION" in str(error)
    for error in (
        translate_error(_client_error("ValidationException", "bad"), table="t", action="a"),
        translate_error(RuntimeError("boom"), table="t", action="a"),
    ):
        assert type(error) is LockError


# -- the shared acquire loop -----------------------------------------------------------------


class _Script(MemoryLock):
    """A memory lock whose attempts follow a script: "busy", "transient" or "fatal"."""

    def __init__(self, script: list[str], **kwargs: Any) -> None:
        super().__init__(f"k-{uuid.uuid4().hex}", table=MemoryLockTable(), **kwargs)
        self.script = script
        self.attempts = 0

    def _try_acquire(self, now: float) -> Lease | Busy:
        step = self.script[min(self.attempts, len(self.script) - 1)]
        self.attempts += 1
        if step == "busy":
            return Busy(Lease(self.key, "someone", 7, now + 5))
        if step == "transient":
            raise TransientLockError("flaky")
        if step == "fatal":
            raise LockError("access denied")
        return super()._try_acquire(now)


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    import random

    backoff = Backoff(base=0.01, cap=0.5, rng=random.Random(1))
    assert [backoff.ceiling(n) for n in range(8)] == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.5, 0.5]
    assert backoff.ceiling(10_000) == 0.5
    delays = [backoff.delay(n) for n in range(200) for _ in range(5)]
    assert all(0 <= d <= 0.5 for d in delays)
    assert min(delays) < 0.05 and max(delays) > 0.4  # spread over [0, ceiling]: full jitter
    with pytest.raises(ValueError):
        Backoff(base=0)


def test_acquire_sleeps_between_attempts_only() -> None:
    sleeps: list[float] = []
    lock = _Script(["busy"], max_attempts=5, sleep=sleeps.append)
    with pytest.raises(LockTimeoutError) as caught:
        lock.acquire(100)
    assert len(sleeps) == lock.attempts - 1  # no sleep after the last look
    assert all(0 <= s <= lock.backoff.ceiling(n) for n, s in enumerate(sleeps))
    # five of django-sqlite-efs's attempts: it waited 50 + 100 + 150 + 200 ms between them;
    # the looks themselves are quicker (a waiter must see its turn come)
    assert sum(sleeps) >= (1 + 2 + 3 + 4) * ATTEMPT_SPACING
    assert lock.attempts > 5 and min(sleeps) < ATTEMPT_SPACING
    assert caught.value.owner == "someone"


def test_acquire_never_sleeps_past_its_timeout() -> None:
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    lock = _Script(["busy"], max_attempts=1000, sleep=sleep, backoff=Backoff(base=5, cap=5))
    started = time.monotonic()
    with pytest.raises(LockTimeoutError):
        lock.acquire(0.2)
    assert time.monotonic() - started < 2
    assert all(s <= 0.2 for s in sleeps)


def test_transient_failures_are_retried_then_reported_as_unreachable() -> None:
    lock = _Script(["transient", "transient", "free"], max_attempts=5, sleep=lambda _: None)
    assert lock.acquire(5).owner == lock.owner and lock.attempts == 3
    lock = _Script(["transient"], max_attempts=3, sleep=lambda _: None)
    with pytest.raises(LockError) as caught:
        lock.acquire(5)
    assert not isinstance(caught.value, LockTimeoutError)
    assert "could not reach" in str(caught.value) and lock.attempts == 3
    lock = _Script(["busy", "transient"], max_attempts=3, sleep=lambda _: None)
    with pytest.raises(LockTimeoutError):  # contention seen: it is "busy", naming the holder
        lock.acquire(5)


def test_fatal_errors_fail_at_once() -> None:
    lock = _Script(["fatal"], max_attempts=10, sleep=lambda _: None)
    with pytest.raises(LockError, match="access denied") as caught:
        lock.acquire(5)
    assert not isinstance(caught.value, LockTimeoutError) and lock.attempts == 1


def test_bad_arguments() -> None:
    lock = open_lock("memory", key="k")
    with pytest.raises(ValueError):
        lock.acquire(-1)
    with pytest.raises(ValueError):
        MemoryLock("")


# -- the object lock -------------------------------------------------------------------------


class _Denied:
    """A storage that refuses everything (like S3 with no permission)."""

    url = "s3://denied/db"

    def __init__(self, transient: bool = False) -> None:
        self.calls = 0
        self.kind = TransientStorageError if transient else StorageError

    def get(self, key: str, **_: Any) -> Any:
        self.calls += 1
        raise self.kind("AccessDenied: no s3:GetObject", remote=self.url, key=key)

    def put(self, key: str, data: bytes, **_: Any) -> str:
        self.calls += 1
        raise self.kind("AccessDenied", remote=self.url, key=key)


def test_object_lock_storage_errors() -> None:
    storage = _Denied()
    lock = ObjectLock(storage, "lock", sleep=lambda _: None)  # type: ignore[arg-type]
    with pytest.raises(LockError, match="AccessDenied") as caught:
        lock.acquire(5)
    assert not isinstance(caught.value, LockTimeoutError) and storage.calls == 1
    assert isinstance(caught.value.__cause__, StorageError)
    storage = _Denied(transient=True)
    lock = ObjectLock(storage, "lock", max_attempts=3, sleep=lambda _: None)  # type: ignore[arg-type]
    with pytest.raises(LockError, match="could not reach"):
        lock.acquire(5)
    assert storage.calls == 3


def test_object_lock_refuses_a_foreign_object_and_break_resets_it(tmp_path: Path) -> None:
    storage = open_storage((tmp_path / "remote").as_uri())
    storage.put("lock", b"not a lock")
    lock = ObjectLock(storage, "lock")
    with pytest.raises(LockError, match="not a lambdalite lock") as caught:
        lock.acquire(1)
    assert "lambdalite lock break" in str(caught.value)
    with pytest.raises(LockError):
        lock.inspect()
    broken = lock.break_()
    assert broken is not None and broken.owner == "(not a lambdalite lock)"
    lease = lock.acquire(1)
    assert lease.generation > 1
    lock.release(lease)
