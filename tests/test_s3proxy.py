"""The fault-injecting S3 proxy: a real boto3 client, the proxy, and SeaweedFS behind it.

Every fault kind is scripted once and its effect checked from both sides: what the
client got, and (read directly from SeaweedFS) whether the request landed. Timing
assertions are lower bounds only.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import boto3.session
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    IncompleteReadError,
    ResponseStreamingError,
)

import lambdalite.testing.s3proxy as s3proxy
from lambdalite.errors import ConfigurationError
from lambdalite.storage.s3 import SMALL_BODY, S3Storage
from lambdalite.testing.s3proxy import FaultKind, FaultProxy
from tests.servers.seaweedfs import S3Remote

MB = 1024 * 1024
PROXY_CLI = (sys.executable, "-m", "lambdalite.testing.s3proxy")


def make_client(endpoint_url: str, *, attempts: int = 1) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        config=Config(
            retries={"total_max_attempts": attempts},
            s3={"addressing_style": "path"},
            connect_timeout=2,
            read_timeout=20,
        ),
    )


@pytest.fixture
def proxy(s3_remote: S3Remote) -> Iterator[FaultProxy]:
    with FaultProxy(s3_remote.endpoint_url, seed=1) as p:
        yield p


@pytest.fixture
def client(proxy: FaultProxy) -> Iterator[Any]:
    c = make_client(proxy.endpoint_url)
    yield c
    c.close()


@pytest.fixture
def direct(s3_remote: S3Remote) -> Iterator[Any]:
    """A client that talks to SeaweedFS itself, to see what really landed."""
    c = s3_remote.server.client(max_attempts=1)
    yield c
    c.close()


def exists(direct: Any, bucket: str, key: str) -> bool:
    try:
        direct.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        assert exc.response["Error"]["Code"] in ("404", "NoSuchKey")
        return False
    return True


def presigned_put(proxy: FaultProxy, bucket: str, key: str) -> SplitResult:
    """A presigned PUT URL through the proxy (its Host is the proxy's, like boto3's)."""
    signer = make_client(proxy.endpoint_url)
    try:
        url: str = signer.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": key}
        )
    finally:
        signer.close()
    return urlsplit(url)


def code_of(error: BaseException) -> tuple[str, int]:
    """The S3 error code and HTTP status of a botocore ClientError."""
    assert isinstance(error, ClientError)
    return error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"]


# -- the module and its configuration ------------------------------------------------------


def test_public_names_are_sorted_and_exported() -> None:
    assert s3proxy.__all__ == sorted(s3proxy.__all__)
    for name in s3proxy.__all__:
        assert hasattr(s3proxy, name)
    assert [k.value for k in FaultKind] == [
        "error_before",
        "error_500_before",
        "reset_before",
        "reset_after",
        "error_after",
        "delay",
        "trickle",
        "truncate",
    ]


def test_constructor_does_no_io_and_validates() -> None:
    p = FaultProxy("http://127.0.0.1:1", seed=3)  # nothing listens there: no I/O yet
    with pytest.raises(RuntimeError):
        _ = p.endpoint_url
    with pytest.raises(ConfigurationError) as exc:
        FaultProxy("https://s3.amazonaws.com")
    assert exc.value.key == "upstream"
    with pytest.raises(ConfigurationError) as exc:
        p.set_rates({"explode": 0.1})
    assert exc.value.key == "rates"
    with pytest.raises(ConfigurationError):
        p.set_rates({"error_before": 0.7, "reset_after": 0.7})
    with pytest.raises(ConfigurationError):
        p.script("nope")
    with pytest.raises(ConfigurationError) as exc:
        p.script("delay", key_pattern="(")
    assert exc.value.key == "key_pattern"
    p.stop()  # stopping a proxy that never started is harmless


# -- plain traffic -------------------------------------------------------------------------


def test_plain_operations_pass_through(
    proxy: FaultProxy, client: Any, direct: Any, s3_remote: S3Remote
) -> None:
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/plain key+ü"
    put = client.put_object(Bucket=bucket, Key=key, Body=b"hello proxy")
    assert direct.get_object(Bucket=bucket, Key=key)["Body"].read() == b"hello proxy"
    got = client.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == b"hello proxy"
    assert got["ETag"] == put["ETag"]
    assert client.head_object(Bucket=bucket, Key=key)["ContentLength"] == 11
    listing = client.list_objects_v2(Bucket=bucket, Prefix=s3_remote.prefix)
    assert [o["Key"] for o in listing["Contents"]] == [key]
    client.delete_object(Bucket=bucket, Key=key)
    assert not exists(direct, bucket, key)

    log = proxy.log
    assert [(r.method, r.status, r.client_status, r.fault) for r in log] == [
        ("PUT", 200, 200, None),
        ("GET", 200, 200, None),
        ("HEAD", 200, 200, None),
        ("GET", 200, 200, None),
        ("DELETE", 204, 204, None),
    ]
    assert log[0].key == key and log[0].bucket == bucket and log[0].bytes_up == 11
    assert log[1].bytes_down == 11 and log[2].bytes_down == 0
    assert log[3].key == "" and "list-type=2" in log[3].query
    assert proxy.counts() == Counter()


def test_conditional_requests_and_304(proxy: FaultProxy, client: Any, s3_remote: S3Remote) -> None:
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/manifest"
    first = client.put_object(Bucket=bucket, Key=key, Body=b"v1", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=bucket, Key=key, Body=b"v1 again", IfNoneMatch="*")
    assert code_of(exc.value)[1] == 412
    second = client.put_object(Bucket=bucket, Key=key, Body=b"v2", IfMatch=first)["ETag"]
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=bucket, Key=key, Body=b"v3", IfMatch=first)
    assert code_of(exc.value)[1] == 412
    with pytest.raises(ClientError) as exc:
        client.get_object(Bucket=bucket, Key=key, IfNoneMatch=second)
    assert code_of(exc.value)[1] == 304
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"v2"
    assert [r.status for r in proxy.log] == [200, 412, 200, 412, 304, 200]
    # the 304 had no body, and the connection stayed usable for the last GET
    assert proxy.log[4].bytes_down == 0


def test_multipart_upload_and_ranged_download(
    proxy: FaultProxy, s3_remote: S3Remote, direct: Any, tmp_path: Path
) -> None:
    source = tmp_path / "big.bin"
    data = os.urandom(11 * MB + 12345)
    source.write_bytes(data)
    config = TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB)
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/big.bin"
    client = make_client(proxy.endpoint_url, attempts=3)
    try:
        client.upload_file(str(source), bucket, key, Config=config)
        target = tmp_path / "back.bin"
        client.download_file(bucket, key, str(target), Config=config)
    finally:
        client.close()
    assert target.read_bytes() == data
    assert direct.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(data)
    parts = [r for r in proxy.log if "partNumber=" in r.query]
    assert len(parts) == 3
    assert all(r.expect_continue and r.status == 200 for r in parts)
    assert sum(r.bytes_up for r in parts) == len(data)
    downloads = [r for r in proxy.log if r.method == "GET" and r.key == key]
    assert sum(r.bytes_down for r in downloads) == len(data)


def test_chunked_request_body(proxy: FaultProxy, direct: Any, s3_remote: S3Remote) -> None:
    """A presigned PUT sent with Transfer-Encoding: chunked arrives whole."""
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/chunked"
    url = presigned_put(proxy, bucket, key)
    pieces = [b"first piece, ", b"second piece, ", b"x" * 5000]
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        conn.request("PUT", f"{url.path}?{url.query}", body=iter(pieces), encode_chunked=True)
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 200
    assert direct.get_object(Bucket=bucket, Key=key)["Body"].read() == b"".join(pieces)
    assert proxy.log[-1].bytes_up == sum(map(len, pieces))


def test_concurrent_connections(proxy: FaultProxy, s3_remote: S3Remote) -> None:
    client = make_client(proxy.endpoint_url)
    client.meta.config.max_pool_connections = 10
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(5):
                key = f"{s3_remote.prefix}/w{n}/{i}"
                client.put_object(Bucket=s3_remote.bucket, Key=key, Body=f"{n}:{i}".encode())
                body = client.get_object(Bucket=s3_remote.bucket, Key=key)["Body"].read()
                assert body == f"{n}:{i}".encode()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    assert errors == []
    assert len(proxy.log) == 80
    assert all(r.client_status == 200 for r in proxy.log)


# -- each fault kind -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "code", "status"),
    [("error_before", "SlowDown", 503), ("error_500_before", "InternalError", 500)],
)
def test_error_before_does_not_write(
    proxy: FaultProxy,
    client: Any,
    direct: Any,
    s3_remote: S3Remote,
    kind: str,
    code: str,
    status: int,
) -> None:
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/refused"
    proxy.script(kind, method="PUT")
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=bucket, Key=key, Body=b"data")
    assert code_of(exc.value) == (code, status)
    assert not exists(direct, bucket, key)
    (entry,) = proxy.log
    assert (entry.fault, entry.status, entry.client_status) == (kind, None, status)
    assert entry.expect_continue  # botocore sends every PutObject body with it
    assert entry.bytes_up == 0  # answered instead of 100 Continue: the body never came
    # the client recovers on the next request (on a new connection: the proxy closed it)
    client.put_object(Bucket=bucket, Key=key, Body=b"data")
    assert exists(direct, bucket, key)
    assert proxy.counts() == Counter({kind: 1})


def test_error_before_drains_a_body_sent_without_expect(
    proxy: FaultProxy, direct: Any, s3_remote: S3Remote
) -> None:
    """Without Expect, the refused body is read and the connection stays usable."""
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/kept-alive"
    url = presigned_put(proxy, bucket, key)
    proxy.script("error_before")
    conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    try:
        answers = []
        for body in (b"refused", b"accepted"):
            conn.request("PUT", f"{url.path}?{url.query}", body=body)
            response = conn.getresponse()
            answers.append((response.status, response.read()))
    finally:
        conn.close()
    assert [status for status, _ in answers] == [503, 200]
    assert b"<Error><Code>SlowDown</Code>" in answers[0][1]
    assert direct.get_object(Bucket=bucket, Key=key)["Body"].read() == b"accepted"
    assert [(r.fault, r.bytes_up, r.expect_continue) for r in proxy.log] == [
        ("error_before", 7, False),
        (None, 8, False),
    ]


def test_reset_before_does_not_write(
    proxy: FaultProxy, client: Any, direct: Any, s3_remote: S3Remote
) -> None:
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/reset-before"
    proxy.script("reset_before")
    with pytest.raises(ConnectionClosedError):
        client.put_object(Bucket=bucket, Key=key, Body=b"data")
    assert not exists(direct, bucket, key)
    assert proxy.log[-1].client_status is None and proxy.log[-1].status is None
    client.put_object(Bucket=bucket, Key=key, Body=b"data")
    assert exists(direct, bucket, key)


@pytest.mark.parametrize(
    ("kind", "raised"),
    [
        ("reset_after", ConnectionClosedError),
        ("error_after", ClientError),
        ("truncate", ConnectionClosedError),
    ],
)
def test_faults_after_forwarding_write(
    proxy: FaultProxy,
    client: Any,
    direct: Any,
    s3_remote: S3Remote,
    kind: str,
    raised: type[Exception],
) -> None:
    """The write lands, the client is told otherwise (or told nothing)."""
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/landed"
    proxy.script(kind, method="PUT", key_pattern="landed$")
    with pytest.raises(raised) as exc:
        client.put_object(Bucket=bucket, Key=key, Body=b"it landed")
    if kind == "error_after":
        assert code_of(exc.value) == ("InternalError", 500)
    assert direct.get_object(Bucket=bucket, Key=key)["Body"].read() == b"it landed"
    (entry,) = proxy.log
    assert entry.fault == kind and entry.status == 200
    assert entry.client_status == (500 if kind == "error_after" else None)


def test_truncate_cuts_the_body(
    proxy: FaultProxy, client: Any, direct: Any, s3_remote: S3Remote
) -> None:
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/long"
    direct.put_object(Bucket=bucket, Key=key, Body=b"z" * 10000)
    proxy.script("truncate", method="GET")
    response = client.get_object(Bucket=bucket, Key=key)
    assert response["ContentLength"] == 10000  # the real headers came through
    with pytest.raises((ResponseStreamingError, IncompleteReadError)):
        response["Body"].read()
    assert proxy.log[-1].bytes_down == 5000
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"z" * 10000


def test_delay_and_trickle_answer_intact(
    proxy: FaultProxy, client: Any, direct: Any, s3_remote: S3Remote
) -> None:
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/slow"
    data = os.urandom(20000)
    direct.put_object(Bucket=bucket, Key=key, Body=data)
    proxy.delay = 0.3
    proxy.trickle_duration = 0.3
    for kind in ("delay", "trickle"):
        proxy.script(kind)
        started = time.monotonic()
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
        assert time.monotonic() - started >= 0.3
    assert [(r.fault, r.client_status, r.bytes_down) for r in proxy.log] == [
        ("delay", 200, 20000),
        ("trickle", 200, 20000),
    ]


# -- latency, scripts, random faults -------------------------------------------------------


def test_latency_per_exchange_and_per_continue(
    proxy: FaultProxy, client: Any, s3_remote: S3Remote
) -> None:
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/lat"
    client.put_object(Bucket=bucket, Key=key, Body=b"x")
    proxy.latency = 0.05  # settable while running
    started = time.monotonic()
    for _ in range(6):
        client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert time.monotonic() - started >= 6 * 0.05
    started = time.monotonic()
    client.put_object(Bucket=bucket, Key=key, Body=io.BytesIO(b"y"))  # Expect: 100-continue
    assert time.monotonic() - started >= 2 * 0.05
    assert proxy.log[-1].expect_continue


def test_script_matches_head_entry_in_order(
    proxy: FaultProxy, client: Any, direct: Any, s3_remote: S3Remote
) -> None:
    bucket, p = s3_remote.bucket, s3_remote.prefix
    direct.put_object(Bucket=bucket, Key=f"{p}/a", Body=b"a")
    proxy.script("error_before", method="DELETE", key_pattern="/a$")
    proxy.script("error_after", method="PUT", key_pattern="/a$", count=2)
    client.put_object(Bucket=bucket, Key=f"{p}/a", Body=b"a2")  # head entry wants DELETE
    client.get_object(Bucket=bucket, Key=f"{p}/a")["Body"].read()
    with pytest.raises(ClientError):
        client.delete_object(Bucket=bucket, Key=f"{p}/a")
    client.put_object(Bucket=bucket, Key=f"{p}/b", Body=b"b")  # key does not match
    for _ in range(2):
        with pytest.raises(ClientError):
            client.put_object(Bucket=bucket, Key=f"{p}/a", Body=b"a3")
    client.put_object(Bucket=bucket, Key=f"{p}/a", Body=b"a4")
    assert proxy.pending == 0
    assert [r.fault for r in proxy.log] == [
        None,
        None,
        "error_before",
        None,
        "error_after",
        "error_after",
        None,
    ]
    assert proxy.counts() == Counter({"error_after": 2, "error_before": 1})
    proxy.script("reset_before", count=3)
    proxy.clear()
    assert proxy.pending == 0


def _random_faults(
    s3_remote: S3Remote, key: str, seed: int, *, scripted_first: bool = False
) -> list[FaultKind | None]:
    with FaultProxy(s3_remote.endpoint_url, seed=seed) as p:
        p.set_rates({"error_before": 0.3, "error_500_before": 0.2})
        client = make_client(p.endpoint_url)
        try:
            if scripted_first:
                p.script("error_before", key_pattern="other")
                with pytest.raises(ClientError):
                    client.get_object(Bucket=s3_remote.bucket, Key="other")
            for _ in range(16):
                with contextlib.suppress(ClientError):
                    client.get_object(Bucket=s3_remote.bucket, Key=key)["Body"].read()
        finally:
            client.close()
        log = p.log[1:] if scripted_first else p.log
        assert sum(p.counts().values()) == sum(r.fault is not None for r in p.log)
    return [r.fault for r in log]


def test_same_seed_same_faults(s3_remote: S3Remote, direct: Any) -> None:
    key = f"{s3_remote.prefix}/seeded"
    direct.put_object(Bucket=s3_remote.bucket, Key=key, Body=b"s")
    first = _random_faults(s3_remote, key, seed=7)
    assert first == _random_faults(s3_remote, key, seed=7)
    # a scripted fault does not consume a random draw
    assert first == _random_faults(s3_remote, key, seed=7, scripted_first=True)
    assert first != _random_faults(s3_remote, key, seed=8)
    assert {None, "error_before", "error_500_before"} == set(first)


def test_filter_limits_random_faults(
    proxy: FaultProxy, client: Any, direct: Any, s3_remote: S3Remote
) -> None:
    bucket, p = s3_remote.bucket, s3_remote.prefix
    proxy.set_rates({"error_before": 1.0}, methods={"PUT"}, key_pattern="manifest")
    with pytest.raises(ClientError) as exc:
        client.put_object(Bucket=bucket, Key=f"{p}/manifest", Body=b"m")
    assert code_of(exc.value) == ("SlowDown", 503)
    assert not exists(direct, bucket, f"{p}/manifest")
    client.put_object(Bucket=bucket, Key=f"{p}/delta-0001", Body=b"d")
    direct.put_object(Bucket=bucket, Key=f"{p}/manifest", Body=b"m")
    assert client.get_object(Bucket=bucket, Key=f"{p}/manifest")["Body"].read() == b"m"
    client.head_object(Bucket=bucket, Key=f"{p}/manifest")
    assert proxy.counts() == Counter({"error_before": 1})
    proxy.clear()
    client.put_object(Bucket=bucket, Key=f"{p}/manifest", Body=b"m2")
    assert proxy.counts() == Counter({"error_before": 1})


# -- the command line ----------------------------------------------------------------------


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        s3proxy.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--upstream" in out and "--rate" in out and "reset_after" in out
    with pytest.raises(SystemExit) as exc:
        s3proxy.main(["--upstream", "http://127.0.0.1:1", "--rate", "explode=0.1"])
    assert exc.value.code == 2
    assert "explode" in capsys.readouterr().err


def test_cli_serves_until_sigterm(s3_remote: S3Remote, direct: Any) -> None:
    bucket, key = s3_remote.bucket, f"{s3_remote.prefix}/cli"
    process = subprocess.Popen(
        [
            *PROXY_CLI,
            *("--upstream", s3_remote.endpoint_url, "--latency", "0.01", "--seed", "3"),
            *("--rate", "error_before=1", "--method", "PUT"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        endpoint = process.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:")
        client = make_client(endpoint)
        direct.put_object(Bucket=bucket, Key=key, Body=b"via cli")
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"via cli"
        with pytest.raises(ClientError) as exc:
            client.put_object(Bucket=bucket, Key=key, Body=b"refused")
        assert code_of(exc.value) == ("SlowDown", 503)
        client.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_lambdalite_sends_small_bodies_without_waiting_for_100_continue(
    proxy: FaultProxy, s3_remote: S3Remote, tmp_path: Path
) -> None:
    """A manifest or a delta is one round trip; a body over a MiB still asks first (a refused
    conditional write then costs no upload)."""
    storage = S3Storage(s3_remote.bucket, f"{s3_remote.prefix}/db", endpoint_url=proxy.endpoint_url)
    try:
        storage.put("manifest", b"m" * 4096, if_none_match=True)
        storage.put("delta", b"d" * 100_000)
        big = tmp_path / "big"
        big.write_bytes(b"b" * (SMALL_BODY + 1))
        storage.put_file("snapshot", str(big))
    finally:
        storage.close()
    puts = {r.key.rsplit("/", 1)[-1]: r for r in proxy.log if r.method == "PUT"}
    assert not puts["manifest"].expect_continue
    assert not puts["delta"].expect_continue
    assert puts["snapshot"].expect_continue
    assert all(r.status == 200 for r in puts.values())
