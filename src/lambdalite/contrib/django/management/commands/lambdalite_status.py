"""``manage.py lambdalite_status [--database ALIAS] [--json]``: where a database lives, its mode
and options, and (after one refresh) the version this instance sees."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, connections

from lambdalite.contrib.django.checks import lambdalite_aliases


class Command(BaseCommand):  # type: ignore[misc]
    help = "Show where a lambdalite database lives, its settings and the version it is at."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="database alias")
        parser.add_argument("--json", action="store_true", help="print JSON")
        parser.add_argument(
            "--offline", action="store_true", help="only the settings: do not contact the remote"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options["database"]
        if alias not in lambdalite_aliases():
            raise CommandError(f"database {alias!r} does not use a lambdalite ENGINE")
        connection = connections[alias]
        info: dict[str, Any] = {"alias": alias, "engine": connection.settings_dict["ENGINE"]}
        info.update(connection.lambdalite_resolve().settings.describe())
        if not options["offline"]:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
                info["tables"] = cursor.fetchone()[0]
            engine = connection.connection.replica
            info["version"] = getattr(engine, "version", None)
        if options["json"]:
            self.stdout.write(json.dumps(info, indent=2, sort_keys=True, default=str))
            return
        width = max(len(key) for key in info)
        for key, value in info.items():
            self.stdout.write(f"{key:<{width}}  {value}")
