"""The ``lambdalite`` command line (also ``python -m lambdalite``).

::

    lambdalite --version
    lambdalite demo --instances 4 --requests 50 --write-ratio 0.5
    lambdalite -v demo --remote s3://bucket/demo --endpoint-url http://127.0.0.1:8333 --json

The main group is defined here with ``demo`` (the simulated Lambda fleet of
:mod:`lambdalite.fleet`). The lock commands (:mod:`lambdalite.locks.cli`) and the
remote administration commands (:mod:`lambdalite.admin.cli`) are mounted when
those modules are installed. Exit codes: 0 success, 1 a failure (for ``demo``: a
lost update, a missing row or a failed integrity check), 2 a usage error, with a
hint. Every command is documented in ``docs/cli.md`` (a test checks it).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from types import ModuleType

import click

from lambdalite import __version__
from lambdalite.errors import ConfigurationError, LambdaliteError

__all__ = ["cli", "main"]

_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
_LOG_LEVELS = (logging.WARNING, logging.INFO, logging.DEBUG)


@click.group(context_settings=_CONTEXT)
@click.version_option(__version__, "--version", prog_name="lambdalite")
@click.option(
    "-v", "--verbose", count=True, help="Log to stderr: -v for progress, -vv for every request."
)
def cli(verbose: int) -> None:
    """SQLite for AWS Lambda and other stateless hosts: inspect, run and check databases."""
    level = _LOG_LEVELS[min(verbose, len(_LOG_LEVELS) - 1)]
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    logging.getLogger("lambdalite").setLevel(level)


@cli.command()
@click.option(
    "--instances",
    type=click.IntRange(min=1, max=256),
    default=4,
    show_default=True,
    help="Simulated Lambda instances (processes), each with its own cache dir.",
)
@click.option(
    "--requests",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Requests per instance.",
)
@click.option(
    "--write-ratio",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Share of requests that are write transactions (the rest read).",
)
@click.option(
    "--remote",
    metavar="URL",
    default=None,
    help="Run against this remote (file:///abs/folder or s3://bucket/prefix) instead of a "
    "fresh folder in a temporary directory. Its counter and guestbook tables are created "
    "if missing.",
)
@click.option(
    "--endpoint-url", metavar="URL", default=None, help="S3-compatible endpoint for s3:// remotes."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table."
)
@click.option(
    "--think-time",
    type=click.FloatRange(min=0.0),
    default=0.0,
    show_default=True,
    metavar="MS",
    help="Mean pause before each request, in milliseconds (exponentially distributed).",
)
@click.option("--seed", type=int, default=None, help="Seed of the workload (default: random).")
def demo(
    instances: int,
    requests: int,
    write_ratio: float,
    remote: str | None,
    endpoint_url: str | None,
    as_json: bool,
    think_time: float,
    seed: int | None,
) -> None:
    """Run a fleet of simulated Lambda instances against one database and check the outcome.

    Each instance serves a guestbook app: a write request inserts a row and
    increments a counter in one read-modify-write transaction (retried on
    conflict); a read request reads the counter and the last 10 rows. At the
    end a fresh instance checks that no acknowledged write was lost and that
    the database passes PRAGMA integrity_check. Exits with status 1 if not.
    No AWS account is needed: by default the remote is a temporary folder.
    """
    from lambdalite.fleet import FleetConfig, FleetError, run_fleet

    if remote is not None:
        _check_remote(remote, endpoint_url)
    config = FleetConfig(
        instances=instances,
        requests=requests,
        write_ratio=write_ratio,
        remote=remote,
        endpoint_url=endpoint_url,
        seed=seed,
        think_time=think_time / 1000,
    )
    try:
        with click.progressbar(
            length=instances * requests,
            label="requests",
            file=sys.stderr,
            hidden=not sys.stderr.isatty(),
        ) as bar:
            result = run_fleet(config, progress=lambda done, _total: bar.update(done - bar.pos))
    except ConfigurationError as exc:
        raise click.UsageError(
            f"{exc} (check --{(exc.key or 'remote').replace('_', '-')})"
        ) from exc
    except (FleetError, LambdaliteError) as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        rows = result.summary_rows()
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            click.echo(f"{label:<{width}}  {value}")
    if not result.ok:
        raise click.ClickException("verification failed: " + "; ".join(result.problems()))


def _check_remote(remote: str, endpoint_url: str | None) -> None:
    from lambdalite.storage import open_storage

    try:
        open_storage(remote, endpoint_url=endpoint_url).close()
    except ConfigurationError as exc:
        raise click.BadParameter(
            f"{exc}. Hint: use file:///absolute/folder or s3://bucket/prefix, or leave "
            "--remote out to use a temporary folder.",
            param_hint="--remote",
        ) from exc


def _optional(module: str) -> ModuleType | None:
    """Import ``module``, or None if it (not something it imports) is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            return None
        raise


def _mount(group: click.Group) -> None:
    """Add the command groups of other modules, when they are installed."""
    locks_cli = _optional("lambdalite.locks.cli")
    if locks_cli is not None:
        lock: click.Command = getattr(locks_cli, "lock_group", None) or locks_cli.lock
        group.add_command(lock)
    admin_cli = _optional("lambdalite.admin.cli")
    if admin_cli is not None:
        admin_cli.register(group)


_mount(cli)


def main() -> None:
    """The console script ``lambdalite``."""
    cli(prog_name="lambdalite")
