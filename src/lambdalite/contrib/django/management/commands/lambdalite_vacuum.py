"""``manage.py lambdalite_vacuum [--database ALIAS]``: ``VACUUM`` the database and publish the
result as one new version (django-s3-sqlite's ``s3_sqlite_vacuum``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from lambdalite.contrib.django.checks import lambdalite_aliases


class Command(BaseCommand):  # type: ignore[misc]
    help = "VACUUM a lambdalite database (rewrites it compactly; one new version)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias")

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"]
        if alias not in lambdalite_aliases():
            raise CommandError(f"database {alias!r} does not use a lambdalite ENGINE")
        connection = connections[alias]
        if connection.in_atomic_block:
            raise CommandError("VACUUM cannot run inside a transaction")
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA page_count")
            before = cursor.fetchone()[0]
            cursor.execute("VACUUM")
            cursor.execute("PRAGMA page_count")
            after = cursor.fetchone()[0]
        self.stdout.write(f"VACUUM of {alias!r} done: {before} pages before, {after} after")
