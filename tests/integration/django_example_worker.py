"""One simulated Lambda instance of the guestbook example, driven by Django's test client:
``python -m tests.integration.django_example_worker COMMAND ...``; prints one JSON line.

``GUESTBOOK_DB`` and ``GUESTBOOK_CACHE_DIR`` choose the remote and this instance's cache dir.
Commands: ``migrate``; ``sign NAME MESSAGE``; ``visit COUNT`` (COUNT GETs of /); ``stats``.
With ``LL_DJANGO_GO`` set, waits for that file before working (instances start together).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

APP = Path(__file__).resolve().parents[2] / "examples" / "django_app"


def main(argv: list[str]) -> dict[str, Any]:
    sys.path.insert(0, str(APP))
    os.environ["DJANGO_SETTINGS_MODULE"] = "guestbook_site.settings"
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    go = os.environ.get("LL_DJANGO_GO")
    deadline = time.monotonic() + 60
    while go and not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    client = Client(raise_request_exception=False)  # as deployed: a 500 is a response
    command = argv[0]
    if command == "migrate":
        call_command("migrate", verbosity=0)
        return {"ok": True}
    if command == "sign":
        response = client.post("/", {"name": argv[1], "message": argv[2]})
        return {"ok": response.status_code == 302, "status": response.status_code}
    if command == "visit":
        statuses = {client.get("/").status_code for _ in range(int(argv[1]))}
        return {"ok": statuses == {200}, "statuses": sorted(statuses)}
    if command == "stats":
        page = client.get("/").content.decode()
        return {"ok": True, **client.get("/stats").json(), "page": page}
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
