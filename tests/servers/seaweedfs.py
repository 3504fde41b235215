"""SeaweedFS (a real S3-compatible server) on free loopback ports, for the whole test session.

* ``seaweedfs`` (session): the running server (``.endpoint_url``, ``.env``, ``.client()``,
  ``.create_bucket()``), started by :func:`lambdalite.testing.seaweedfs.start_seaweedfs`
  with its data under pytest's temporary folder and stopped by PID at the end. A missing
  ``weed`` binary fails the test with the install command; it never skips.
* ``s3_remote`` (function): a fresh bucket, deleted afterwards, with the environment
  pointed at the server (``AWS_ENDPOINT_URL_S3`` and the keys it accepts) so that boto3's
  default chain reaches it, also from subprocesses.

Tests that use either fixture are marked ``s3`` automatically (``-m "not s3"`` skips them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lambdalite.testing.seaweedfs import SeaweedFSError, Server, find_weed, start_seaweedfs


@dataclass(frozen=True)
class S3Remote:
    """A fresh bucket on the test server: ``url`` is ``s3://<bucket>/<prefix>``."""

    url: str
    endpoint_url: str
    bucket: str
    prefix: str
    server: Server


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    try:
        weed = find_weed()
    except SeaweedFSError as exc:
        pytest.fail(f"SeaweedFS is needed for the S3 tests: {exc}", pytrace=False)
    try:
        manager = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"), weed=weed)
        server = manager.__enter__()
    except SeaweedFSError as exc:
        pytest.fail(f"SeaweedFS did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture
def s3_remote(seaweedfs: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Remote]:
    for name, value in seaweedfs.env.items():
        monkeypatch.setenv(name, value)
    bucket = f"lltest-{uuid.uuid4().hex[:16]}"
    seaweedfs.create_bucket(bucket)
    yield S3Remote(f"s3://{bucket}/db", seaweedfs.endpoint_url, bucket, "db", seaweedfs)
    seaweedfs.delete_bucket(bucket)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if {"seaweedfs", "s3_remote"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.s3)
