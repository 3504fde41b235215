"""DynamoDB Local on a free loopback port, for the whole test session.

* ``dynamodb`` (session): the running server (``.endpoint_url``, ``.env``, ``.client()``),
  started from the npm package ``scripts/setup`` installs, stopped by PID at the end.
* ``dynamodb_table`` (function): a fresh lock table (made by ``init_table``), with the
  environment pointed at the server (``AWS_ENDPOINT_URL_DYNAMODB`` and credentials
  DynamoDB Local accepts), so boto3's default chain reaches it, also from subprocesses.

Tests that use either fixture are marked ``dynamodb`` automatically. A missing Java or
DynamoDB Local package fails the test with the way to install it; it never skips.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from lambdalite.testing.dynamodb import (
    DynamoDBLocal,
    DynamoDBLocalUnavailable,
    start_dynamodb_local,
)


@pytest.fixture(scope="session")
def dynamodb() -> Iterator[DynamoDBLocal]:
    try:
        manager = start_dynamodb_local()
        server = manager.__enter__()
    except DynamoDBLocalUnavailable as exc:
        pytest.fail(f"DynamoDB Local is needed: {exc}", pytrace=False)
    try:
        yield server
    finally:
        manager.__exit__(None, None, None)


@pytest.fixture
def dynamodb_table(dynamodb: DynamoDBLocal, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from lambdalite.locks.dynamodb import init_table

    for name, value in dynamodb.env.items():
        monkeypatch.setenv(name, value)
    table = f"locks-{uuid.uuid4().hex[:12]}"
    init_table(table, endpoint_url=dynamodb.endpoint_url, region="us-east-1")
    yield table
    dynamodb.client().delete_table(TableName=table)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use DynamoDB Local are marked ``dynamodb`` (``-m "not dynamodb"`` skips them)."""
    for item in items:
        if {"dynamodb", "dynamodb_table"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.dynamodb)
