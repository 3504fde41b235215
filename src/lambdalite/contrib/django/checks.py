"""``manage.py check``: every lambdalite database's settings, read without connecting."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db.utils import load_backend

__all__ = ["check_databases", "lambdalite_aliases"]

ENGINE_PREFIX = "lambdalite.contrib.django"


def lambdalite_aliases() -> list[str]:
    """The aliases of ``settings.DATABASES`` whose ENGINE is one of lambdalite's."""
    return [
        alias
        for alias, entry in settings.DATABASES.items()
        if str(entry.get("ENGINE", "")).startswith(ENGINE_PREFIX)
    ]


def check_databases(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """One ``lambdalite.E001`` error per lambdalite database whose settings are wrong."""
    errors: list[Any] = []
    for alias in lambdalite_aliases():
        entry = dict(settings.DATABASES[alias])  # a copy: the wrapper never changes it anyway
        entry.setdefault("OPTIONS", {})
        entry.setdefault("TEST", {})
        try:
            backend = load_backend(entry["ENGINE"])
            backend.DatabaseWrapper(entry, alias).lambdalite_resolve()
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), id="lambdalite.E001"))
    return errors
