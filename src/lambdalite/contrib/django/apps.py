"""The optional app: ``INSTALLED_APPS += ["lambdalite.contrib.django"]``.

It adds ``manage.py lambdalite_status``, ``lambdalite_vacuum`` (and ``s3_sqlite_vacuum`` /
``s3sqlite_vacuum``, the names django-s3-sqlite and Zappa used) and a system check that reads
the settings of every lambdalite database (``manage.py check``), without connecting.
"""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

from lambdalite.contrib.django.checks import check_databases

__all__ = ["LambdaliteConfig"]


class LambdaliteConfig(AppConfig):  # type: ignore[misc]
    name = "lambdalite.contrib.django"
    label = "lambdalite"
    verbose_name = "lambdalite"

    def ready(self) -> None:
        checks.register(check_databases)
