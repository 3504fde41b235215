"""The remote administration commands of the ``lambdalite`` command line.

The main group lives in :mod:`lambdalite.cli`, which calls :func:`register`. Every command
takes the remote URL first and ``--endpoint-url`` / ``--region`` for S3-compatible stores.
Exit codes: 0 success; 1 a failure of the remote (corruption, a conflict, a storage error)
or, for ``verify``, a broken object; 2 a usage error (a bad URL or option, no database at
the remote, a version not retained, a file that would be overwritten), with a hint.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import click

from lambdalite.admin import operations as ops
from lambdalite.admin.history import (
    NoDatabaseError,
    ProgressFactory,
    VersionNotAvailableError,
    no_progress,
)
from lambdalite.admin.sqlitefile import NotADatabaseError
from lambdalite.config import Settings
from lambdalite.errors import ConfigurationError, LambdaliteError
from lambdalite.storage.base import ProgressCallback

__all__ = ["COMMANDS", "register"]

# Set on every command, not only inherited from the group: click caches a command's help
# option the first time it is used, so a command first used under a group without "-h"
# (a test's throwaway group) would otherwise lose "-h" everywhere.
_CONTEXT = {"help_option_names": ["-h", "--help"]}

P = ParamSpec("P")
R = TypeVar("R")

_USER_ERRORS = (
    ConfigurationError,
    NoDatabaseError,
    VersionNotAvailableError,
    ops.DatabaseExistsError,
    NotADatabaseError,
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
)


class UserError(click.ClickException):
    """A mistake in the command (exit code 2), printed with a hint."""

    exit_code = 2


def _hint(exc: BaseException) -> str:
    if isinstance(exc, VersionNotAvailableError):
        return "list the restorable versions with `lambdalite history REMOTE`"
    if isinstance(exc, ConfigurationError) and exc.key == "remote":
        return "a remote is file:///absolute/folder or s3://bucket/prefix"
    return ""


def _errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn lambdalite's errors into click exits: 2 for user errors, 1 for the rest."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except _USER_ERRORS as exc:
            hint = _hint(exc)
            raise UserError(f"{exc}\nHint: {hint}" if hint else str(exc)) from exc
        except LambdaliteError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc

    return wrapper


def _remote_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--region", default=None, metavar="REGION", help="AWS region of the bucket."
    )(func)
    func = click.option(
        "--endpoint-url",
        default=None,
        metavar="URL",
        help="S3 endpoint, for S3-compatible stores (default: AWS, or AWS_ENDPOINT_URL_S3).",
    )(func)
    return func


def _progress_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Show progress bars on stderr (default: when stderr is a terminal, or the "
        "`progress` setting).",
    )(func)


def _settings(
    remote: str, endpoint_url: str | None, region: str | None, **options: Any
) -> Settings:
    return Settings.build(remote, {"endpoint_url": endpoint_url, "region": region, **options})


def _progress(settings: Settings, flag: bool | None) -> ProgressFactory:
    show = flag if flag is not None else (settings.progress or sys.stderr.isatty())
    if not show:
        return no_progress

    @contextlib.contextmanager
    def bar(label: str, total: int) -> Iterator[ProgressCallback]:
        with click.progressbar(
            length=max(total, 1), label=label, file=sys.stderr, show_pos=False
        ) as b:
            yield b.update

    return bar


def _time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _parse_time(text: str) -> float:
    """POSIX time of an ISO 8601 date-time; a time without an offset is UTC."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"{text!r} is not an ISO 8601 time such as 2025-03-01T12:00:00Z", param_hint="--to-time"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- commands


@click.command("status", context_settings=_CONTEXT)
@click.argument("remote")
@_remote_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def status_command(
    remote: str, endpoint_url: str | None, region: str | None, as_json: bool
) -> None:
    """Show the remote's current version, size, snapshot, deltas (in the manifest and since
    the snapshot) and lock."""
    info = ops.status(_settings(remote, endpoint_url, region))
    if as_json:
        _json(info)
        return
    deltas = info["deltas"]
    since = info["since_snapshot"]
    snap = info["snapshot"]
    base = info["base"]
    segments = (
        f", {since['segments']} rolled-over segments before version {base['version']}"
        if base is not None
        else ""
    )
    lines = [
        f"remote:       {info['remote']}",
        f"version:      {info['version']} (lineage {info['lineage']})",
        f"committed at: {_time(info['committed_at'])} by {info['writer']}",
        f"size:         {_size(info['size'])} ({info['page_count']} pages of {info['page_size']})",
        "snapshot:     "
        + (f"version {snap['version']}, {_size(snap['size'])} ({snap['key']})" if snap else "none"),
        f"deltas:       {deltas['count']} in the manifest ({_size(deltas['bytes'])}): "
        f"{deltas['inline']} inline, {deltas['objects']} objects",
        f"since snap.:  {since['deltas']} deltas ({_size(since['bytes'])}){segments}",
        f"manifest:     etag {info['manifest_etag']}, {info['archived_manifests']} archived",
        f"restorable:   from version {info['oldest_restorable_version']} "
        f"({_time(info['oldest_restorable_at'])})",
    ]
    lock = info["lock"]
    if lock is not None:
        if "error" in lock:
            lines.append(f"lock:         {lock['kind']}: cannot inspect ({lock['error']})")
        elif lock["held"]:
            waiting = f", {lock['waiting']} waiting" if lock.get("waiting") else ""
            lines.append(
                f"lock:         {lock['kind']}: held by {lock['owner']} until "
                f"{_time(lock['expires_at'])}{waiting}"
            )
        else:
            lines.append(f"lock:         {lock['kind']}, free")
    click.echo("\n".join(lines))


@click.command("history", context_settings=_CONTEXT)
@click.argument("remote")
@_remote_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def history_command(
    remote: str, endpoint_url: str | None, region: str | None, as_json: bool
) -> None:
    """List every restorable version: when it was committed and what builds it."""
    versions = ops.list_versions(_settings(remote, endpoint_url, region))
    if as_json:
        _json([v.to_dict() for v in versions])
        return
    for v in versions:
        at = _time(v.committed_at) + ("" if v.committed_at_exact else " (at latest)")
        start = f"snapshot {v.snapshot_version}" if v.snapshot_key else "empty database"
        spread = f" from {len(v.manifest_keys)} manifests" if len(v.manifest_keys) > 1 else ""
        click.echo(f"{v.version:>8}  {at:<36}  {start} + {len(v.delta_keys)} deltas{spread}")


@click.command("pull", context_settings=_CONTEXT)
@click.argument("remote")
@click.argument("file", type=click.Path(dir_okay=False))
@_remote_options
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@_progress_option
@_errors
def pull_command(
    remote: str,
    file: str,
    endpoint_url: str | None,
    region: str | None,
    force: bool,
    progress: bool | None,
) -> None:
    """Write the newest version into FILE, a plain SQLite database (rollback journal)."""
    settings = _settings(remote, endpoint_url, region)
    result = ops.pull(settings, file, overwrite=force, progress=_progress(settings, progress))
    click.echo(f"version {result.version} ({_size(result.size)}) written to {result.path}")


@click.command("import", context_settings=_CONTEXT)
@click.argument("file", type=click.Path(dir_okay=False))
@click.argument("remote")
@_remote_options
@click.option(
    "--force",
    is_flag=True,
    help="Replace the database at REMOTE (its history is "
    "archived and kept for the retention window).",
)
@_progress_option
@_errors
def import_command(
    file: str,
    remote: str,
    endpoint_url: str | None,
    region: str | None,
    force: bool,
    progress: bool | None,
) -> None:
    """Upload the SQLite database FILE to REMOTE as version 1 of a new lineage."""
    settings = _settings(remote, endpoint_url, region)
    result = ops.import_database(
        settings, file, force=force, progress=_progress(settings, progress)
    )
    replaced = (
        f"; replaced version {result.replaced_version} (archived as {result.archive})"
        if result.replaced_version is not None
        else ""
    )
    click.echo(
        f"imported {result.source} ({result.page_count} pages) into {result.remote} as "
        f"version 1 of lineage {result.lineage}{replaced}"
    )


@click.command("restore", context_settings=_CONTEXT)
@click.argument("remote")
@click.option(
    "--to-version",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="The version to bring back.",
)
@click.option(
    "--to-time",
    default=None,
    metavar="ISO8601",
    help="Bring back the newest version committed at or before this time "
    "(UTC unless it has an offset).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Write the old version into FILE, a plain SQLite database.",
)
@click.option(
    "--in-place",
    is_flag=True,
    help="Publish the old version as a new version of REMOTE (history is kept).",
)
@click.option("--yes", is_flag=True, help="Do not ask before publishing in place.")
@click.option("--force", is_flag=True, help="Replace the --output FILE if it exists.")
@_remote_options
@_progress_option
@_errors
def restore_command(
    remote: str,
    to_version: int | None,
    to_time: str | None,
    output: str | None,
    in_place: bool,
    yes: bool,
    force: bool,
    endpoint_url: str | None,
    region: str | None,
    progress: bool | None,
) -> None:
    """Bring back an old version of REMOTE, into a file or as its newest version."""
    if (to_version is None) == (to_time is None):
        raise click.UsageError("give exactly one of --to-version and --to-time")
    if (output is None) == (not in_place):
        raise click.UsageError("give exactly one of --output FILE and --in-place")
    settings = _settings(remote, endpoint_url, region)
    when = _parse_time(to_time) if to_time is not None else None
    bars = _progress(settings, progress)
    if output is not None:
        result = ops.restore(
            settings,
            to_version=to_version,
            to_time=when,
            output=output,
            overwrite=force,
            progress=bars,
        )
        click.echo(
            f"version {result.restored_version} (committed "
            f"{_time(result.committed_at)}) written to {result.output}"
        )
        return
    target, current = ops.resolve_version(settings, to_version=to_version, to_time=when)
    if not yes:
        click.confirm(
            f"Publish the state of version {target.version} (committed "
            f"{_time(target.committed_at)}) as version {current + 1} of {remote}? "
            f"Versions up to {current} stay restorable.",
            abort=True,
            err=True,
        )
    result = ops.restore(settings, to_version=target.version, in_place=True, progress=bars)
    click.echo(
        f"version {result.restored_version} restored in place: {remote} is now at "
        f"version {result.published_version}"
    )


@click.command("verify", context_settings=_CONTEXT)
@click.argument("remote")
@_remote_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_progress_option
@_errors
def verify_command(
    remote: str,
    endpoint_url: str | None,
    region: str | None,
    as_json: bool,
    progress: bool | None,
) -> None:
    """Check every object the manifest chain reaches; exit 1 if any is broken."""
    settings = _settings(remote, endpoint_url, region)
    report = ops.verify(settings, progress=_progress(settings, progress))
    if as_json:
        _json(report.to_dict())
    else:
        for problem in report.problems:
            click.echo(f"BROKEN {problem.kind} {problem.key}: {problem.message}")
        for note in report.notes:
            click.echo(f"note: {note}")
        if report.unreferenced:
            click.echo(
                f"note: {len(report.unreferenced)} unreferenced objects "
                "(in flight, or garbage for lambdalite gc)"
            )
        integrity = "; ".join(report.integrity) if report.integrity is not None else "not run"
        verdict = "ok" if report.ok else "FAILED"
        click.echo(
            f"{verdict}: {len(report.objects)} objects checked, version {report.version}, "
            f"integrity_check: {integrity}"
        )
    if not report.ok:
        sys.exit(1)


@click.command("compact", context_settings=_CONTEXT)
@click.argument("remote")
@_remote_options
@_progress_option
@_errors
def compact_command(
    remote: str, endpoint_url: str | None, region: str | None, progress: bool | None
) -> None:
    """Fold the current deltas into a new snapshot now (as writers do past the thresholds)."""
    settings = _settings(remote, endpoint_url, region)
    result = ops.compact(settings, progress=_progress(settings, progress))
    if result.compacted:
        assert result.snapshot_size is not None
        click.echo(
            f"compacted version {result.version}: {result.folded_deltas} deltas folded "
            f"into {result.snapshot} ({_size(result.snapshot_size)})"
        )
    else:
        click.echo(f"not compacted: {result.reason}")


@click.command("gc", context_settings=_CONTEXT)
@click.argument("remote")
@_remote_options
@click.option(
    "--dry-run/--delete",
    default=True,
    help="List what would be deleted (the default), or delete it.",
)
@click.option(
    "--retention",
    default=None,
    metavar="DURATION",
    help="Keep what restores to any time within this window (default: the "
    "`retention` setting, 7d).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_errors
def gc_command(
    remote: str,
    endpoint_url: str | None,
    region: str | None,
    dry_run: bool,
    retention: str | None,
    as_json: bool,
) -> None:
    """Delete what no version within the retention window (nor the current one) needs."""
    settings = _settings(remote, endpoint_url, region, retention=retention)
    report = ops.gc(settings, dry_run=dry_run)
    if as_json:
        _json(report.to_dict())
        return
    verb = "would delete" if dry_run else "deleted"
    for item in report.deleted:
        click.echo(f"{verb} {item.key} ({_size(item.size)}): {item.reason}")
    click.echo(
        f"{verb} {len(report.deleted)} objects ({_size(report.deleted_bytes)}); kept the "
        f"manifest and {len(report.kept) - 1} archives (restorable back to "
        f"{_time(report.cutoff)} at least, from version {report.oldest_version})"
    )
    if dry_run and report.deleted:
        click.echo("run again with --delete to delete them")


COMMANDS: tuple[click.Command, ...] = (
    status_command,
    history_command,
    pull_command,
    import_command,
    restore_command,
    verify_command,
    compact_command,
    gc_command,
)


def register(group: click.Group) -> None:
    """Add the remote administration commands to ``group`` (the ``lambdalite`` main group)."""
    for command in COMMANDS:
        group.add_command(command)
