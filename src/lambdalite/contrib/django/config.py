"""From a Django ``DATABASES`` entry to lambdalite's target and options (no I/O, no mutation).

:func:`resolve` reads one entry and returns a :class:`Resolved`: the target (the remote URL, or
the path of the database file in shared-file mode), the lambdalite options, the ``sqlite3``-level
connect arguments, and the validated :class:`~lambdalite.config.Settings`. Every mistake raises
Django's :class:`~django.core.exceptions.ImproperlyConfigured` naming the exact settings path,
such as ``settings.DATABASES['default']['OPTIONS']['max_stalenes']``.

Where each value comes from, first match wins: ``OPTIONS``; the Django settings of
django-sqlite-efs (``SQLITE_LOCK_DYNAMODB_TABLE``, ``SQLITE_LOCK_EXPIRATION``,
``SQLITE_LOCK_MAX_ATTEMPTS``); the environment (``LAMBDALITE_*`` and the same ``SQLITE_LOCK_*``
names); the defaults. The target comes from ``NAME``:

* a URL (``s3://bucket/prefix``, ``file:///abs/folder``, ``memory://name``): replica mode;
* an absolute path (``str`` or ``Path``): shared-file mode, the database file itself (EFS);
* a relative name with a top-level ``BUCKET`` (django-s3-sqlite, Zappa's s3sqlite): replica
  mode on ``s3://BUCKET/NAME``.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from django.core.exceptions import ImproperlyConfigured

from lambdalite.config import OPTIONS, Settings
from lambdalite.errors import ConfigurationError

__all__ = [
    "COMPAT_SETTINGS",
    "CONNECT_ARGS",
    "LAMBDALITE_OPTIONS",
    "Flavor",
    "Resolved",
    "resolve",
]

log = logging.getLogger("lambdalite.contrib.django")

Flavor = Literal["lambdalite", "s3sqlite", "efs"]

#: lambdalite's own ``OPTIONS`` keys (the rows of :data:`lambdalite.config.OPTIONS`).
LAMBDALITE_OPTIONS: tuple[str, ...] = tuple(option.name for option in OPTIONS)
#: ``OPTIONS`` keys passed to the ``sqlite3``-level connection as they are.
CONNECT_ARGS: tuple[str, ...] = ("cached_statements", "check_same_thread", "detect_types", "vfs")
#: ``OPTIONS`` keys Django's own sqlite3 backend handles (popped by it before we see them).
DJANGO_OPTIONS: tuple[str, ...] = ("init_command", "transaction_mode")
#: django-sqlite-efs settings read from ``django.conf.settings``: setting -> lambdalite option.
COMPAT_SETTINGS: dict[str, str] = {
    "SQLITE_LOCK_DYNAMODB_TABLE": "lock",
    "SQLITE_LOCK_EXPIRATION": "lock_expiration",
    "SQLITE_LOCK_MAX_ATTEMPTS": "lock_max_attempts",
}
#: Top-level keys of a django-s3-sqlite / Zappa entry that hold credentials: refused.
_CREDENTIAL_KEYS = ("AWS_S3_ACCESS_KEY", "AWS_S3_ACCESS_SECRET")
#: django-sqlite-efs: "default and minimum value is 3".
EFS_DEFAULT_TIMEOUT = 3.0


@dataclass(frozen=True)
class Resolved:
    """One ``DATABASES`` entry, translated; ``connect_params()`` is for ``lambdalite.connect``."""

    target: str
    options: dict[str, object]
    connect_args: dict[str, object]
    settings: Settings
    sources: dict[str, str] = field(default_factory=dict)  # option -> where it was set

    def connect_params(self) -> dict[str, Any]:
        return {"target": self.target, **self.options, **self.connect_args}


def _path(alias: str, *keys: str) -> str:
    return f"settings.DATABASES[{alias!r}]" + "".join(f"[{key!r}]" for key in keys)


def _suggest(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word.lower(), choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _target(alias: str, entry: Mapping[str, Any], flavor: Flavor) -> str:
    name = entry.get("NAME")
    bucket = entry.get("BUCKET")
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise ImproperlyConfigured(
            f"{_path(alias, 'NAME')} is improperly configured: give the remote URL "
            "(s3://bucket/prefix, file:///abs/folder), the absolute path of the database file "
            "on a shared filesystem, or with BUCKET the object key (django-s3-sqlite style)."
        )
    if "://" in name:
        if flavor == "efs":
            raise ImproperlyConfigured(
                f"{_path(alias, 'NAME')} = {name!r}: the efs engine needs the absolute path of "
                "the database file on the shared filesystem (use ENGINE "
                "'lambdalite.contrib.django' for a remote URL)"
            )
        return name  # a URL wins over BUCKET (the test database is a folder remote)
    if bucket:
        if not isinstance(bucket, str):
            raise ImproperlyConfigured(f"{_path(alias, 'BUCKET')} must be a bucket name (str)")
        if os.path.isabs(name):
            raise ImproperlyConfigured(
                f"{_path(alias, 'NAME')} = {name!r}: with BUCKET, NAME is the object key, a "
                "relative name such as 'db.sqlite3' (an absolute path means shared-file mode, "
                "which takes no BUCKET)"
            )
        key = name.replace(os.sep, "/").strip("/")
        return f"s3://{bucket.strip()}/{key}"
    if flavor == "s3sqlite":
        raise ImproperlyConfigured(
            f"{_path(alias, 'BUCKET')} is required by the s3sqlite engine (NAME is the object "
            "key in that bucket)"
        )
    if not os.path.isabs(name):
        raise ImproperlyConfigured(
            f"{_path(alias, 'NAME')} = {name!r} is relative: give a remote URL "
            "(s3://bucket/prefix, file:///abs/folder), an absolute path (shared-file mode), "
            "or add BUCKET to make NAME an object key (django-s3-sqlite style)"
        )
    return name


def _check_legacy(alias: str, entry: Mapping[str, Any]) -> None:
    given = [key for key in _CREDENTIAL_KEYS if entry.get(key)]
    if given:
        raise ImproperlyConfigured(
            f"{_path(alias, given[0])} is set: lambdalite never takes credentials from "
            "settings. Remove " + " and ".join(_path(alias, key) for key in given)
            + " and let boto3's default credential chain find them (the Lambda execution "
            "role in production; AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile, "
            "elsewhere)."
        )
    signature = entry.get("SIGNATURE_VERSION")
    if signature is not None and str(signature).lower() != "s3v4":
        log.warning(
            "%s = %r is ignored: boto3 signs S3 requests with s3v4",
            _path(alias, "SIGNATURE_VERSION"),
            signature,
        )


def _compat_settings(django_settings: Any) -> dict[str, tuple[object, str]]:
    """django-sqlite-efs's settings that are set: option -> (value, the setting's name)."""
    found: dict[str, tuple[object, str]] = {}
    for name, option in COMPAT_SETTINGS.items():
        value = getattr(django_settings, name, None) if django_settings is not None else None
        if value is None or value == "":
            continue
        if name == "SQLITE_LOCK_DYNAMODB_TABLE":
            value = f"dynamodb://{value}"
        found[option] = (value, f"settings.{name}")
    return found


def resolve(
    alias: str,
    entry: Mapping[str, Any],
    options: Mapping[str, Any] | None = None,
    *,
    flavor: Flavor = "lambdalite",
    django_settings: Any = None,
    env: Mapping[str, str] | None = None,
) -> Resolved:
    """Translate the ``DATABASES`` entry ``entry`` of ``alias``.

    ``options`` is the entry's ``OPTIONS`` (default: ``entry["OPTIONS"]``), possibly with Django's
    own keys already taken out; it is copied, never changed. ``django_settings`` is
    ``django.conf.settings`` (for the django-sqlite-efs settings) and ``env`` the environment
    (default: ``os.environ``).
    """
    raw_options = dict((entry.get("OPTIONS") or {}) if options is None else options)
    if "remote" in raw_options:
        raise ImproperlyConfigured(
            f"{_path(alias, 'OPTIONS', 'remote')}: put the remote URL in "
            f"{_path(alias, 'NAME')} (NAME is where the database lives, for the test database "
            "too)"
        )
    _check_legacy(alias, entry)
    target = _target(alias, entry, flavor)

    ours: dict[str, object] = {}
    connect_args: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key, value in raw_options.items():
        if key in LAMBDALITE_OPTIONS:
            ours[key] = value
            sources[key] = _path(alias, "OPTIONS", key)
        elif key in CONNECT_ARGS:
            if value is not None:
                connect_args[key] = value
        elif key in ("uri", "isolation_level"):
            continue  # Django sets these itself (uri=True; isolation_level through autocommit)
        else:
            accepted = (*LAMBDALITE_OPTIONS, *CONNECT_ARGS, *DJANGO_OPTIONS)
            raise ImproperlyConfigured(
                f"{_path(alias, 'OPTIONS', str(key))}: unknown option {key!r}"
                + _suggest(str(key), accepted)
                + f" (accepted: {', '.join(sorted(accepted))})"
            )
    for option, (value, where) in _compat_settings(django_settings).items():
        if ours.get(option) is None:
            ours[option] = value
            sources[option] = where
    if flavor == "efs" and ours.get("timeout") is None:
        environ = os.environ if env is None else env
        if not environ.get("LAMBDALITE_TIMEOUT"):
            ours["timeout"] = EFS_DEFAULT_TIMEOUT
            sources["timeout"] = "the efs engine's default"
    ours = {key: value for key, value in ours.items() if value is not None}

    try:
        settings = Settings.build(target, ours, env=env)
    except ConfigurationError as exc:
        raise _improper(alias, exc, sources) from exc
    if flavor == "efs" and not settings.lock.startswith("dynamodb://"):
        raise ImproperlyConfigured(
            "settings.SQLITE_LOCK_DYNAMODB_TABLE (or "
            f"{_path(alias, 'OPTIONS', 'lock')} = 'dynamodb://TABLE') is required by the efs "
            f"engine; the lock is now {settings.lock!r}"
        )
    if connect_args.get("vfs") is not None and settings.mode != "shared-file":
        raise ImproperlyConfigured(
            f"{_path(alias, 'OPTIONS', 'vfs')}: vfs applies to shared-file mode only (NAME an "
            "absolute path)"
        )
    return Resolved(target, ours, connect_args, settings, sources)


def _improper(alias: str, exc: ConfigurationError, sources: Mapping[str, str]) -> Exception:
    """``exc`` as ImproperlyConfigured, naming where its key was set."""
    key = exc.key or ""
    if key in sources:
        where = sources[key]
    elif key in ("remote", "mode"):  # "mode" not in sources: inferred from NAME
        where = _path(alias, "NAME")
    elif key.startswith(("LAMBDALITE_", "SQLITE_LOCK_")):
        where = f"environment variable {key}"
    else:
        where = _path(alias)
    error: Exception = ImproperlyConfigured(f"{where}: {exc}")
    return error
