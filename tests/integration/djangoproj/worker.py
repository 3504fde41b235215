"""One simulated Lambda instance running Django: ``python -m tests.integration.djangoproj.worker
COMMAND ...`` with the ``LL_DJANGO_*`` variables of :mod:`.settings`; prints one JSON line.

Commands: ``migrate``; ``increment NAME COUNT`` (read-modify-write in ``retrying_atomic``);
``read NAME``. With ``LL_DJANGO_GO`` set, waits for that file to exist before working, so
that several instances start together.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def _wait_for_go() -> None:
    go = os.environ.get("LL_DJANGO_GO")
    deadline = time.monotonic() + 60
    while go and not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit("no go signal")
        time.sleep(0.01)


def main(argv: list[str]) -> dict[str, Any]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integration.djangoproj.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import OperationalError
    from django.db.migrations.exceptions import MigrationSchemaMissing

    from lambdalite.contrib.django import is_conflict, retrying_atomic
    from tests.integration.djangoproj.testapp.models import Counter

    command = argv[0]
    _wait_for_go()
    if command == "migrate":
        try:
            call_command("migrate", verbosity=0)
        except (OperationalError, MigrationSchemaMissing) as exc:
            # MigrationSchemaMissing: two instances created django_migrations at once; Django
            # raises it while handling the loser's OperationalError (its __context__).
            context = exc.__context__
            conflict = is_conflict(exc) or (context is not None and is_conflict(context))
            return {"ok": False, "conflict": conflict, "error": str(exc)}
        return {"ok": True}
    if command == "increment":
        name, count = argv[1], int(argv[2])
        attempts = 0

        @retrying_atomic(attempts=200, max_delay=0.2)
        def increment() -> None:
            nonlocal attempts
            attempts += 1
            counter, _ = Counter.objects.get_or_create(name=name)
            counter.value = counter.value + 1  # a read-modify-write in Python, on purpose
            counter.save(update_fields=["value"])

        for _ in range(count):
            increment()
        return {"ok": True, "attempts": attempts}
    if command == "read":
        counter = Counter.objects.filter(name=argv[1]).first()
        return {"ok": True, "value": counter.value if counter else None}
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
