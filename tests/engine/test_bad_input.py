"""Bad input through ``lambdalite.connect``: a clear error naming what is wrong; nothing written."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

import lambdalite
from lambdalite.errors import ConfigurationError, StorageError


@pytest.mark.parametrize(
    ("target", "options", "key"),
    [
        ("ftp://example/db", {}, "remote"),
        ("s3://", {}, "remote"),
        ("s3://Bad_Bucket!/x", {}, "remote"),
        ("relative/path.db", {}, "remote"),
        ("memory://x", {"max_stalenes": 1}, "max_stalenes"),
        ("memory://x", {"max_staleness": -1}, "max_staleness"),
        ("memory://x", {"transaction_mode": "SOMETIMES"}, "transaction_mode"),
        ("memory://x", {"lock": "zookeeper://x"}, "lock"),
        ("memory://x?region=eu-west-1&bogus=1", {}, "bogus"),
    ],
)
def test_bad_configuration_names_the_key(target: str, options: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        lambdalite.connect(target, **options)
    assert info.value.key == key
    assert key in str(info.value)


def test_options_dict_is_not_mutated(tmp_path: Path) -> None:
    options: dict[str, Any] = {"max_staleness": 2, "cache_dir": str(tmp_path)}
    frozen = dict(options)
    lambdalite.connect((tmp_path / "r").as_uri(), **options).close()
    assert options == frozen


def test_connect_does_no_io(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    cache = tmp_path / "cache"
    conn = lambdalite.connect(remote.as_uri(), cache_dir=str(cache))
    assert not remote.exists() and not cache.exists()
    conn.close()


@pytest.mark.s3
def test_missing_bucket_is_a_storage_error(
    seaweedfs: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    conn = lambdalite.connect(
        "s3://no-such-bucket-lambdalite/db",
        endpoint_url=seaweedfs.endpoint_url,
        cache_dir=str(tmp_path / "c"),
    )
    with pytest.raises(StorageError, match="no-such-bucket-lambdalite"):
        conn.execute("CREATE TABLE t(x)")
    conn.close()


def test_wrong_endpoint_is_a_storage_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = lambdalite.connect(
        "s3://some-bucket/db",
        endpoint_url=f"http://127.0.0.1:{port}",
        cache_dir=str(tmp_path / "c"),
    )
    with pytest.raises(StorageError, match=f"127.0.0.1:{port}"):
        conn.execute("SELECT count(*) FROM sqlite_master")  # reads the database: a pull
    conn.close()
