"""``lambdalite lock``: init-table, show, break (run standalone through click's CliRunner)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from lambdalite.config import Settings
from lambdalite.locks import cli as lock_cli
from lambdalite.locks import default_lock_key, lock_for_settings, open_lock
from lambdalite.locks.cli import lock_group
from lambdalite.storage import open_storage
from lambdalite.testing.dynamodb import DynamoDBLocal


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_help_on_every_command(runner: CliRunner) -> None:
    result = runner.invoke(lock_group, ["--help"])
    assert result.exit_code == 0
    for name in ("init-table", "show", "break"):
        assert name in result.output
        sub = runner.invoke(lock_group, [name, "--help"])
        assert sub.exit_code == 0, sub.output
        assert "Usage:" in sub.output


# -- init-table ------------------------------------------------------------------------------


@pytest.mark.dynamodb
def test_init_table_is_idempotent(runner: CliRunner, dynamodb: DynamoDBLocal,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in dynamodb.env.items():
        monkeypatch.setenv(name, value)
    table = f"cli-{uuid.uuid4().hex[:8]}"
    args = ["init-table", f"dynamodb://{table}", "--endpoint-url", dynamodb.endpoint_url,
            "--region", "us-east-1"]
    first = runner.invoke(lock_group, args)
    assert first.exit_code == 0, first.output
    assert f"created DynamoDB table {table}" in first.output
    client = dynamodb.client()
    assert client.describe_time_to_live(TableName=table)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    second = runner.invoke(lock_group, args)
    assert second.exit_code == 0, second.output
    assert "already exists with the right key schema" in second.output
    client.delete_table(TableName=table)


@pytest.mark.dynamodb
def test_init_table_refuses_another_schema(runner: CliRunner, dynamodb: DynamoDBLocal,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in dynamodb.env.items():
        monkeypatch.setenv(name, value)
    table = f"cli-{uuid.uuid4().hex[:8]}"
    client = dynamodb.client()
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    result = runner.invoke(lock_group, ["init-table", f"dynamodb://{table}"])
    assert result.exit_code == 1
    assert "exists with another key schema" in result.output
    assert "partition key `pk` of type string (S) and no sort key" in result.output
    client.delete_table(TableName=table)


def test_init_table_usage_errors(runner: CliRunner) -> None:
    result = runner.invoke(lock_group, ["init-table", "s3://bucket/x"])
    assert result.exit_code == 2 and "expected dynamodb://TABLE" in result.output
    result = runner.invoke(lock_group, ["init-table", "dynamodb://x"])
    assert result.exit_code == 2 and "table name" in result.output


# -- show ------------------------------------------------------------------------------------


def test_show_an_object_lock_on_a_folder_remote(runner: CliRunner, tmp_path: Path) -> None:
    remote = (tmp_path / "remote").as_uri()
    result = runner.invoke(lock_group, ["show", remote, "--lock", "object"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "lock object, key lock: free"

    lock = open_lock("object", key="lock", storage=open_storage(remote))
    lease = lock.acquire(1)
    result = runner.invoke(lock_group, ["show", remote, "--lock", "object", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["state"] == "held"
    assert shown["owner"] == lock.owner and shown["generation"] == lease.generation
    assert shown["key"] == "lock" and shown["lock"] == "object"
    assert shown["expires_at"] == pytest.approx(lease.expires_at, abs=0.002)
    assert 0 < shown["remaining"] <= 30 and shown["expires_at_iso"].endswith("+00:00")

    text = runner.invoke(lock_group, ["show", remote, "--lock", "object"]).output
    assert f"held by {lock.owner}" in text and f"generation {lease.generation}" in text
    assert "s from now" in text
    lock.release(lease)


def test_show_a_shared_file_database_uses_the_engines_key(
    runner: CliRunner, tmp_path: Path
) -> None:
    database = tmp_path / "app.db"
    settings = Settings.build(str(database))
    assert settings.lock == "file"
    assert default_lock_key(settings) == f"{database}.lock"
    lock = lock_for_settings(settings)
    lease = lock.acquire(1)
    result = runner.invoke(lock_group, ["show", str(database), "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["owner"], shown["generation"], shown["key"]) == (
        lock.owner, lease.generation, f"{database}.lock")
    lock.release(lease)
    result = runner.invoke(lock_group, ["show", str(database), "--json"])
    assert json.loads(result.output)["state"] == "free"


@pytest.mark.dynamodb
def test_show_a_dynamodb_lock(runner: CliRunner, dynamodb_table: str, tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    spec = f"dynamodb://{dynamodb_table}"
    settings = Settings.build(str(database), {"lock": spec})
    key = f"database#{database}"  # django-sqlite-efs's item key
    assert default_lock_key(settings) == key
    lock = lock_for_settings(settings)
    lease = lock.acquire(1)
    for args in (["show", str(database), "--lock", spec], ["show", spec, "--key", key]):
        result = runner.invoke(lock_group, [*args, "--json"])
        assert result.exit_code == 0, result.output
        shown = json.loads(result.output)
        assert (shown["owner"], shown["generation"]) == (lock.owner, lease.generation)
        assert shown["key"] == key and shown["lock"] == spec
    lock.release(lease)
    result = runner.invoke(lock_group, ["show", spec, "--key", key])
    assert result.exit_code == 0 and result.output.strip().endswith(": free")


def test_show_an_expired_lease(runner: CliRunner, tmp_path: Path) -> None:
    remote = (tmp_path / "remote").as_uri()
    lock = open_lock("object", key="lock", storage=open_storage(remote),
                     clock=lambda: time.time() - 100)
    lock.acquire(1)
    result = runner.invoke(lock_group, ["show", remote, "--lock", "object", "--json"])
    assert json.loads(result.output)["state"] == "expired"
    result = runner.invoke(lock_group, ["show", remote, "--lock", "object"])
    assert "expired, free to take" in result.output


def test_show_usage_errors(runner: CliRunner, tmp_path: Path) -> None:
    remote = (tmp_path / "remote").as_uri()
    for args, expected in (
        (["show", remote, "--lock", "redis"], "lock"),
        (["show", "dynamodb://locks"], "--key"),
        (["show", "dynamodb://locks", "--key", "k", "--lock", "file"], "either"),
        (["show", "relative/path.db"], "absolute"),
        (["show", remote, "--lock", "s3"], "s3://"),
    ):
        result = runner.invoke(lock_group, args)
        assert result.exit_code == 2, (args, result.output)
        assert expected in result.output, (args, result.output)


# -- break -----------------------------------------------------------------------------------


def _held(tmp_path: Path) -> tuple[str, object, object]:
    remote = (tmp_path / "remote").as_uri()
    lock = open_lock("object", key="lock", storage=open_storage(remote))
    return remote, lock, lock.acquire(1)


def test_break_refuses_without_a_terminal_or_yes(runner: CliRunner, tmp_path: Path) -> None:
    remote, lock, lease = _held(tmp_path)
    result = runner.invoke(lock_group, ["break", remote, "--lock", "object"])
    assert result.exit_code == 2
    assert "--yes" in result.output and "no terminal" in result.output
    assert lock.inspect() == lease  # type: ignore[attr-defined]


def test_break_asks_for_confirmation(runner: CliRunner, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock_cli, "_interactive", lambda: True)
    remote, lock, lease = _held(tmp_path)
    result = runner.invoke(lock_group, ["break", remote, "--lock", "object"], input="n\n")
    assert result.exit_code == 1 and "Break it?" in result.output
    assert lock.inspect() == lease  # type: ignore[attr-defined]
    result = runner.invoke(lock_group, ["break", remote, "--lock", "object"], input="y\n")
    assert result.exit_code == 0, result.output
    assert f"held by {lock.owner}" in result.output  # type: ignore[attr-defined]
    assert lock.inspect() is None  # type: ignore[attr-defined]


def test_break_with_yes(runner: CliRunner, tmp_path: Path) -> None:
    remote, lock, lease = _held(tmp_path)
    result = runner.invoke(lock_group, ["break", remote, "--lock", "object", "--yes"])
    assert result.exit_code == 0, result.output
    assert "broke lock object, key lock" in result.output
    assert lock.inspect() is None  # type: ignore[attr-defined]
    result = runner.invoke(lock_group, ["break", remote, "--lock", "object", "--yes"])
    assert result.exit_code == 0 and "free, nothing to break" in result.output
    again = lock.acquire(1)  # type: ignore[attr-defined]
    assert again.generation > lease.generation  # type: ignore[attr-defined]


@pytest.mark.dynamodb
def test_break_a_dynamodb_lock(runner: CliRunner, dynamodb_table: str) -> None:
    spec = f"dynamodb://{dynamodb_table}"
    lock = open_lock(spec, key="k")
    lease = lock.acquire(1)
    result = runner.invoke(lock_group, ["break", spec, "--key", "k", "--yes"])
    assert result.exit_code == 0, result.output
    assert f"held by {lock.owner} (generation {lease.generation})" in result.output
    assert lock.inspect() is None


@pytest.mark.dynamodb
def test_missing_table_exits_1_with_the_fix(runner: CliRunner, dynamodb: DynamoDBLocal,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in dynamodb.env.items():
        monkeypatch.setenv(name, value)
    result = runner.invoke(lock_group, ["show", "dynamodb://nope-nope", "--key", "k"])
    assert result.exit_code == 1
    assert "lambdalite lock init-table dynamodb://nope-nope" in result.output


# -- the default key (shared with the engine) ------------------------------------------------


def test_default_lock_keys(tmp_path: Path) -> None:
    s3 = "s3://bucket/prefix"
    assert default_lock_key(Settings.build(s3, {"lock": "s3"})) == "lock"
    assert default_lock_key(Settings.build(s3, {"lock": "dynamodb://locks"})) == f"{s3}#lock"
    assert default_lock_key(Settings.build(s3, {"lock": "memory"})) == f"{s3}#lock"
    folder = (tmp_path / "remote").as_uri()
    assert default_lock_key(Settings.build(folder), "object") == "lock"
    file_key = default_lock_key(Settings.build(folder, {"lock": "file"}))
    assert file_key.endswith(".lock") and "lambdalite-locks" in file_key
    assert file_key == default_lock_key(Settings.build(folder, {"lock": "file"}))  # stable
    assert file_key != default_lock_key(Settings.build(s3, {"lock": "file"}))
    database = tmp_path / "app.db"
    shared = Settings.build(str(database), {"lock": "dynamodb://locks"})
    assert default_lock_key(shared) == f"database#{database}"
    assert default_lock_key(Settings.build(str(database))) == f"{database}.lock"
    explicit = Settings.build(s3, {"lock": "memory", "lock_key": "mine"})
    assert lock_for_settings(explicit).key == "mine"
