"""Django support: ``ENGINE = "lambdalite.contrib.django"``.

::

    DATABASES = {
        "default": {
            "ENGINE": "lambdalite.contrib.django",
            "NAME": "s3://my-bucket/app",          # or file:///abs/folder, or /mnt/efs/app.db
            "OPTIONS": {"max_staleness": "1s", "transaction_mode": "IMMEDIATE"},
        }
    }

``NAME`` is where the database lives: a remote URL (replica mode), the absolute path of the
database file on a shared filesystem (shared-file mode), or, with a top-level ``BUCKET``, an
object key as django-s3-sqlite and Zappa's s3sqlite had it. ``OPTIONS`` takes every lambdalite
option plus Django's own ``init_command``, ``transaction_mode`` and ``timeout``. The
django-sqlite-efs settings ``SQLITE_LOCK_DYNAMODB_TABLE``, ``SQLITE_LOCK_EXPIRATION`` and
``SQLITE_LOCK_MAX_ATTEMPTS`` are read from Django's settings. Drop-in engines with the old
tools' stricter rules: ``lambdalite.contrib.django.s3sqlite`` and ``lambdalite.contrib.django.efs``.

:func:`retrying_atomic` re-runs an ``atomic()`` block that lost to another instance. Adding
``"lambdalite.contrib.django"`` to ``INSTALLED_APPS`` gives ``manage.py lambdalite_status``,
``lambdalite_vacuum`` (alias ``s3_sqlite_vacuum``) and a system check of the settings.

The whole guide: ``docs/django.md``.
"""

from __future__ import annotations

from lambdalite.contrib.django.retry import is_conflict, retrying_atomic

__all__ = ["is_conflict", "retrying_atomic"]
