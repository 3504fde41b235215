"""``lambdalite lock``: create the DynamoDB lock table, show or break a lock.

TARGET is what the database is opened with (a remote URL such as ``s3://bucket/prefix`` or
``file:///abs/folder``, or the absolute path of a shared-file database); the lock and its
key come from the same settings the database uses (``--lock``/``--key``, the URL query,
``LAMBDALITE_*`` and ``SQLITE_LOCK_*`` variables), so ``lock show`` looks at exactly the
lock the application takes. TARGET may also be ``dynamodb://TABLE`` with ``--key``.

User errors exit with status 2, failures to reach the lock with status 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from lambdalite.errors import ConfigurationError, LambdaliteError
from lambdalite.locks import default_lock_key, open_lock
from lambdalite.locks.base import Lease, Lock, format_time

__all__ = ["lock_group", "main"]

_STORAGE_LOCKS = ("s3", "object", "manifest")


@contextmanager
def _errors() -> Iterator[None]:
    """Configuration mistakes are usage errors (exit 2); lock failures exit 1."""
    try:
        yield
    except ConfigurationError as exc:
        raise click.UsageError(str(exc)) from exc
    except LambdaliteError as exc:
        raise click.ClickException(str(exc)) from exc


def _dynamodb_table(target: str) -> str | None:
    scheme, sep, table = target.partition("://")
    return table if sep and scheme.lower() == "dynamodb" else None


def _resolve(
    target: str, spec: str | None, key: str | None, endpoint_url: str | None, region: str | None
) -> tuple[Lock, str]:
    """(the lock TARGET and the options name, a description of it)."""
    if _dynamodb_table(target) is not None:
        if spec:
            raise click.UsageError("give the lock either as a dynamodb:// TARGET or with --lock")
        if not key:
            raise click.UsageError(
                "a dynamodb:// TARGET needs --key (the item's pk), e.g. "
                "--key 'database#/mnt/efs/app.db'"
            )
        lock = open_lock(target, key=key, endpoint_url=endpoint_url, region=region)
        return lock, target
    from lambdalite.config import Settings

    given = spec.strip() if spec else None
    options: dict[str, object] = {"lock": given, "lock_key": key, "region": region}
    if given is None or given.lower() in _STORAGE_LOCKS:
        options["endpoint_url"] = endpoint_url  # the S3 endpoint
    settings = Settings.build(target, options)
    kind = settings.lock
    storage = None
    if kind in _STORAGE_LOCKS:
        from lambdalite.storage import open_storage

        storage = open_storage(
            settings.remote, endpoint_url=settings.endpoint_url, region=settings.region
        )
    lock = open_lock(
        kind,
        key=settings.lock_key or default_lock_key(settings),
        storage=storage,
        endpoint_url=None if kind in _STORAGE_LOCKS else endpoint_url,
        region=settings.region,
        expiration=settings.lock_expiration,
        max_attempts=settings.lock_max_attempts,
    )
    return lock, kind if kind != "s3" else f"s3 ({settings.remote})"


def _describe(lease: Lease | None, now: float) -> dict[str, Any]:
    if lease is None:
        return {"state": "free"}
    remaining = lease.remaining(now)
    return {
        "state": "held" if remaining >= 0 else "expired",
        "owner": lease.owner,
        "generation": lease.generation,
        "expires_at": lease.expires_at,
        "expires_at_iso": format_time(lease.expires_at),
        "remaining": round(remaining, 3),
    }


def _human(info: dict[str, Any]) -> str:
    if info["state"] == "free":
        return "free"
    remaining = info["remaining"]
    when = (
        f"{remaining:.1f}s from now" if remaining >= 0
        else f"{-remaining:.1f}s ago: expired, free to take"
    )
    return (
        f"held by {info['owner']}\n"
        f"generation {info['generation']}\n"
        f"expires at {info['expires_at_iso']} ({when})"
    )


_target = click.argument("target")
_lock_option = click.option(
    "--lock", "spec", metavar="SPEC",
    help="none, file, s3, object, memory or dynamodb://TABLE (default: from the settings).",
)
_key_option = click.option(
    "--key", metavar="K", help="The lock key (default: derived from TARGET, as the engine does)."
)
_endpoint_option = click.option(
    "--endpoint-url", metavar="URL",
    help="Endpoint of the lock's service: S3 for s3/object, DynamoDB for dynamodb:// "
         "(default: boto3's chain, e.g. AWS_ENDPOINT_URL_DYNAMODB).",
)
_region_option = click.option("--region", metavar="REGION", help="AWS region.")


# On every command: click caches a command's help option on first use (see admin/cli.py).
_CONTEXT = {"help_option_names": ["-h", "--help"]}


@click.group("lock", context_settings=_CONTEXT)
def lock_group() -> None:
    """Show, break or set up the lock that decides who writes."""


@lock_group.command("init-table", context_settings=_CONTEXT)
@click.argument("target", metavar="dynamodb://TABLE")
@_endpoint_option
@_region_option
def init_table_command(target: str, endpoint_url: str | None, region: str | None) -> None:
    """Create the DynamoDB lock table (on-demand, TTL on expires_at); safe to repeat."""
    from lambdalite.locks.dynamodb import init_table

    table = _dynamodb_table(target)
    if not table:
        raise click.UsageError(f"expected dynamodb://TABLE, not {target!r}")
    with _errors():
        created = init_table(table, endpoint_url=endpoint_url, region=region)
    if created:
        click.echo(f"created DynamoDB table {table} (partition key pk, TTL on expires_at)")
    else:
        click.echo(f"DynamoDB table {table} already exists with the right key schema")


@lock_group.command("show", context_settings=_CONTEXT)
@_target
@_lock_option
@_key_option
@_endpoint_option
@_region_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_command(
    target: str, spec: str | None, key: str | None, endpoint_url: str | None,
    region: str | None, as_json: bool,
) -> None:
    """Show who holds the lock of TARGET: owner, generation, expiry; or "free"."""
    with _errors():
        lock, what = _resolve(target, spec, key, endpoint_url, region)
        try:
            info = _describe(lock.inspect(), _now(lock))
        finally:
            lock.close()
    if as_json:
        click.echo(json.dumps({"lock": what, "key": lock.key, **info}, sort_keys=True))
    else:
        click.echo(f"lock {what}, key {lock.key}: {_human(info)}")


def _now(lock: Lock) -> float:
    clock: Callable[[], float] | None = getattr(lock, "clock", None)
    if clock is None:
        import time

        return time.time()
    return clock()


def _interactive() -> bool:
    """Can we ask the user? (A function so that tests can say yes.)"""
    return sys.stdin.isatty()


@lock_group.command("break", context_settings=_CONTEXT)
@_target
@_lock_option
@_key_option
@_endpoint_option
@_region_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def break_command(
    target: str, spec: str | None, key: str | None, endpoint_url: str | None,
    region: str | None, yes: bool,
) -> None:
    """Force-release the lock of TARGET (asks first unless --yes).

    The holder is not stopped: its next renew, or its commit's lease check, fails with
    LockLostError. Break a lock only when its holder is known to be gone.
    """
    with _errors():
        lock, what = _resolve(target, spec, key, endpoint_url, region)
        try:
            current = lock.inspect()
            if current is None:
                click.echo(f"lock {what}, key {lock.key}: free, nothing to break")
                return
            info = _describe(current, _now(lock))
            if not yes:
                if not _interactive():
                    raise click.UsageError(
                        "refusing to break a lock without confirmation: no terminal to ask on; "
                        "add --yes to break it anyway"
                    )
                click.confirm(
                    f"lock {what}, key {lock.key}: {_human(info)}\nBreak it?", abort=True
                )
            broken = lock.break_()
        finally:
            lock.close()
    if broken is None:
        click.echo(f"lock {what}, key {lock.key}: already free")
    else:
        click.echo(
            f"broke lock {what}, key {lock.key}, held by {broken.owner} "
            f"(generation {broken.generation})"
        )


main = lock_group

if __name__ == "__main__":  # pragma: no cover
    lock_group()
