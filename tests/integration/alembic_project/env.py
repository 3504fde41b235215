"""Alembic environment for a lambdalite database (the pattern docs/sqlalchemy.md recommends).

The whole upgrade runs as ONE transaction (``transactional_ddl=True``): it reads
``alembic_version``, applies every pending migration and stamps the new head, then commits.
When another instance ran the same upgrade first, the commit raises ``ConflictError`` and left
no trace; :func:`lambdalite.retry_on_conflict` runs the upgrade again, which now finds the
database at head and does nothing. So concurrent ``alembic upgrade head`` runs are safe.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

import lambdalite

config = context.config


def _record_attempt() -> None:
    log = os.environ.get("ALEMBIC_ATTEMPTS_LOG")  # the tests count attempts per process
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")


@lambdalite.retry_on_conflict(attempts=20)
def run_migrations_online() -> None:
    _record_attempt()
    url = os.environ.get("ALEMBIC_TEST_URL") or config.get_main_option("sqlalchemy.url")
    assert url is not None
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection, transactional_ddl=True, transaction_per_migration=False
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode needs no database: run it without lambdalite")
run_migrations_online()
