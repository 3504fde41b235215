"""``manage.py s3sqlite_vacuum``: Zappa (zappa-django-utils)'s name for ``lambdalite_vacuum``."""

from __future__ import annotations

from lambdalite.contrib.django.management.commands.lambdalite_vacuum import Command as _Vacuum

__all__ = ["Command"]


class Command(_Vacuum):
    pass
