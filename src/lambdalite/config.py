"""Configuration: one frozen :class:`Settings`, built the same way by every front end.

Each setting is a row of :data:`OPTIONS`. Its value comes from the first source that gives it:

1. explicit options (keyword arguments, Django ``OPTIONS``); a value of ``None`` means "not given";
2. the query string of the target URL (``s3://bucket/prefix?region=eu-west-1&max_staleness=2``);
3. environment variables: ``LAMBDALITE_<NAME>`` for every option, plus django-sqlite-efs's
   ``SQLITE_LOCK_DYNAMODB_TABLE``, ``SQLITE_LOCK_EXPIRATION`` and ``SQLITE_LOCK_MAX_ATTEMPTS``;
4. the option's default.

Unknown keys (including unknown ``LAMBDALITE_*`` environment variables) and invalid values raise
:class:`~lambdalite.errors.ConfigurationError`, whose ``key`` names the option (or the variable)
and whose message gives the bad value, what is accepted and, for a typo, the closest valid name.

This module does no I/O and never mutates the caller's mappings. The one exception is the default
``cache_dir``: :func:`tempfile.gettempdir` probes the temporary directory once per process.
The user-facing reference is ``docs/configuration.md`` (a test keeps it complete).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from lambdalite.errors import ConfigurationError

__all__ = [
    "ENV_PREFIX",
    "IGNORED_ENV",
    "OPTIONS",
    "SHARED_FILE_MIN_TIMEOUT",
    "Option",
    "Settings",
    "parse_bool",
    "parse_duration",
]

Mode = Literal["replica", "shared-file"]
TransactionMode = Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"]
Parser = Callable[[object, str], object]

ENV_PREFIX = "LAMBDALITE_"
#: ``LAMBDALITE_*`` variables that belong to the project's scripts, not to settings: never typos.
IGNORED_ENV = frozenset({"LAMBDALITE_SKIP_DYNAMODB"})
#: Shared-file mode raises a smaller ``timeout`` to this (django-sqlite-efs: "minimum 3").
SHARED_FILE_MIN_TIMEOUT = 3.0

_MIB = 1024 * 1024
_DAY = 86400.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": _DAY}
_DURATION = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(ms|s|m|h|d)?")
_DURATION_HELP = "a duration: seconds (1.5), or a number with a unit: 500ms, 30s, 10m, 2h, 7d"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_DYNAMODB_TABLE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_REGION = re.compile(r"[a-z0-9-]+")
_LOCK_KINDS = ("manifest", "none", "file", "s3", "object", "memory")
# Characters left unencoded in the path of a normalized remote URL (beyond letters, digits, "_.-~").
_PATH_SAFE = "/:@!$&'()*+,;="


# -- errors and value parsers ---------------------------------------------------------------------


def _suggest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices`` (ignoring case), or ``""``."""
    by_fold = {choice.casefold(): choice for choice in choices}
    close = difflib.get_close_matches(word.strip().casefold(), list(by_fold), n=1)
    return f"; did you mean {by_fold[close[0]]!r}?" if close else ""


def _invalid(
    key: str, value: object, expected: str, choices: Iterable[str] = ()
) -> ConfigurationError:
    hint = _suggest(value, choices) if isinstance(value, str) else ""
    message = f"invalid value for {key}: {value!r}; expected {expected}{hint}"
    return ConfigurationError(message, key=key)


def _urlsplit(url: str) -> urllib.parse.SplitResult | None:
    try:
        return urllib.parse.urlsplit(url)
    except ValueError:  # such as an unclosed "[" of an IPv6 address
        return None


def _redact(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    parts = _urlsplit(url)
    if parts is None or "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def parse_duration(value: object, *, key: str) -> float:
    """Seconds (>= 0) from a number, a :class:`~datetime.timedelta`, or a string such as
    ``"1.5"``, ``"500ms"``, ``"30s"``, ``"10m"``, ``"2h"`` or ``"7d"``."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.fullmatch(value.strip())):
        number, unit = float(match[1]), match[2] or "s"
        seconds = number / 1000 if unit == "ms" else number * _UNITS[unit]
    else:
        raise _invalid(key, value, _DURATION_HELP)
    if not math.isfinite(seconds):
        raise _invalid(key, value, "a finite duration")
    if seconds < 0:
        raise _invalid(key, value, "a duration >= 0 (a negative duration is meaningless)")
    return seconds


def parse_bool(value: object, *, key: str) -> bool:
    """A boolean from a bool, ``0``/``1`` or a string: 1/0, true/false, yes/no, on/off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    raise _invalid(key, value, "a boolean: 1/0, true/false, yes/no, on/off", (*_TRUE, *_FALSE))


def _duration(*, positive: bool = False) -> Parser:
    def parse(value: object, key: str) -> float:
        seconds = parse_duration(value, key=key)
        if positive and seconds == 0:
            raise _invalid(key, value, "a duration > 0")
        return seconds

    return parse


def _integer(low: int, high: int | None = None) -> Parser:
    bounds = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(value: object, key: str) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+(_\d+)*\s*", value):
            number = int(value)
        if number is None or number < low or (high is not None and number > high):
            raise _invalid(key, value, bounds)
        return number

    return parse


def _choice(*choices: str) -> Parser:
    """One of ``choices``, matched case-insensitively, returned in the spelling of ``choices``."""
    by_fold = {choice.casefold(): choice for choice in choices}

    def parse(value: object, key: str) -> str:
        if isinstance(value, str) and value.strip().casefold() in by_fold:
            return by_fold[value.strip().casefold()]
        raise _invalid(key, value, "one of " + ", ".join(choices) + " (any case)", choices)

    return parse


def _parse_bool(value: object, key: str) -> bool:
    return parse_bool(value, key=key)


def _parse_text(value: object, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _invalid(key, value, "a non-empty string")
    return value.strip()


def _parse_abs_path(value: object, key: str) -> str:
    path = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(path, str) or not os.path.isabs(path):
        raise _invalid(key, value, "an absolute path (a relative one would depend on the cwd)")
    return os.path.normpath(path)


def _parse_endpoint(value: object, key: str) -> str:
    text = _parse_text(value, key)
    parts = _urlsplit(text)
    if (parts is None or parts.scheme not in ("http", "https") or not parts.netloc
            or parts.query or parts.fragment):
        raise _invalid(key, _redact(text), "an http:// or https:// URL such as http://127.0.0.1:8333")
    return parts.geturl().rstrip("/")


def _parse_region(value: object, key: str) -> str:
    region = _parse_text(value, key)
    if not _REGION.fullmatch(region):
        raise _invalid(key, value, "a region name such as eu-west-1 (lowercase letters, digits, -)")
    return region


def _parse_lock(value: object, key: str) -> str:
    text = _parse_text(value, key)
    if text.lower() in _LOCK_KINDS:
        return text.lower()
    scheme, sep, table = text.partition("://")
    if sep and scheme.lower() == "dynamodb":
        if _DYNAMODB_TABLE.fullmatch(table):
            return "dynamodb://" + table
        raise _invalid(key, value, "dynamodb://TABLE, a table name of 3-255 of A-Z a-z 0-9 _ . -")
    expected = "manifest, none, file, s3, object, memory or dynamodb://TABLE"
    raise _invalid(key, value, expected, (*_LOCK_KINDS, "dynamodb://"))


# -- the table of options -------------------------------------------------------------------------


def _default_lock(mode: str) -> str:
    return "file" if mode == "shared-file" else "manifest"


def _default_lock_expiration(mode: str) -> float:
    return 30.0 if mode == "shared-file" else 10.0


def _default_cache_dir(mode: str) -> str:
    return os.path.join(tempfile.gettempdir(), "lambdalite")


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its name, default, parser, one-line doc and environment variable(s).

    ``default`` is a value, or a callable taking the mode (``"replica"`` or ``"shared-file"``) for
    defaults that depend on it. ``parse(value, key)`` turns a string (URL query, environment) or a
    Python value (explicit options) into the validated value, or raises ``ConfigurationError``.
    """

    name: str
    default: object
    parse: Parser
    doc: str
    compat_env: tuple[str, ...] = ()

    @property
    def env(self) -> tuple[str, ...]:
        """Environment variables read for this option, the winning one first."""
        return (ENV_PREFIX + self.name.upper(), *self.compat_env)

    def default_for(self, mode: str) -> object:
        return self.default(mode) if callable(self.default) else self.default


OPTIONS: tuple[Option, ...] = (
    Option("mode", "replica", _choice("replica", "shared-file"),
           "replica (object-store remote) or shared-file (one database file on EFS/NFS); "
           "a plain path target defaults to shared-file"),
    Option("cache_dir", _default_cache_dir, _parse_abs_path,
           "directory of the local copy (default: lambdalite in the system temporary directory)"),
    Option("max_staleness", 0.0, _duration(),
           "seconds a read may trust a local copy confirmed fresh that recently (0: always check)"),
    Option("endpoint_url", None, _parse_endpoint, "S3 endpoint URL, for S3-compatible stores"),
    Option("region", None, _parse_region, "AWS region of the bucket and the DynamoDB lock table"),
    Option("lock", _default_lock, _parse_lock,
           "manifest, none, file, s3, object, memory or dynamodb://TABLE (default: manifest, the "
           "write lease kept in the manifest itself, in replica mode; file in shared-file mode)",
           ("SQLITE_LOCK_DYNAMODB_TABLE",)),
    Option("lock_key", None, _parse_text,
           "name of the lock item (default: derived from the remote)"),
    Option("lock_expiration", _default_lock_expiration, _duration(positive=True),
           "seconds a lease lasts unless renewed: how long a dead holder keeps writers waiting "
           "(default 10 in replica mode, 30 in shared-file mode)", ("SQLITE_LOCK_EXPIRATION",)),
    Option("lock_max_attempts", None, _integer(1),
           "attempts to take the lock before giving up (default: as many as `timeout` allows)",
           ("SQLITE_LOCK_MAX_ATTEMPTS",)),
    Option("timeout", 15.0, _duration(),
           "seconds a transaction waits for its turn to write (and for the process's other "
           "connections); sized for a web request; in shared-file mode at least 3"),
    Option("transaction_mode", "DEFERRED", _choice("DEFERRED", "IMMEDIATE", "EXCLUSIVE"),
           "BEGIN mode: DEFERRED takes the lock at the first write, IMMEDIATE/EXCLUSIVE at BEGIN"),
    Option("inline_delta_max", 64 * 1024, _integer(0, _MIB),
           "bytes: deltas up to this size (compressed) are inlined in the manifest"),
    Option("compact_after_deltas", 64, _integer(1),
           "deltas a manifest carries before it is archived and continued (a rollover: keeps "
           "every commit's manifest small)"),
    Option("compact_after_bytes", _MIB, _integer(1),
           "write a new snapshot once the deltas since the last one reach this many bytes, or a "
           "quarter of the snapshot's size if that is more (or after 16 rollovers)"),
    Option("retention", 7 * _DAY, _duration(),
           "seconds to keep old snapshots and deltas for point-in-time restore"),
    Option("progress", False, _parse_bool, "show progress bars on long transfers (CLI)"),
)

_BY_NAME = {option.name: option for option in OPTIONS}
_ENV_TO_OPTION = {name: option for option in OPTIONS for name in option.env}
# Compatibility variables whose value is not the option's value as is.
_ENV_FORMAT = {"SQLITE_LOCK_DYNAMODB_TABLE": "dynamodb://{}"}


# -- sources --------------------------------------------------------------------------------------

_Given = dict[str, tuple[object, str]]  # option name -> (raw value, where it came from)


def _check_known(key: object, where: str) -> str:
    if not isinstance(key, str) or key not in _BY_NAME:
        raise ConfigurationError(
            f"unknown option {key!r} {where} (accepted: {', '.join(_BY_NAME)})"
            + _suggest(str(key), _BY_NAME),
            key=str(key),
        )
    return key


def _from_env(env: Mapping[str, str]) -> _Given:
    for name in env:
        if name.startswith(ENV_PREFIX) and name not in _ENV_TO_OPTION and name not in IGNORED_ENV:
            known = [n for n in _ENV_TO_OPTION if n.startswith(ENV_PREFIX)]
            raise ConfigurationError(
                f"unknown environment variable {name} (accepted: {', '.join(known)})"
                + _suggest(name, known),
                key=name,
            )
    given: _Given = {}
    for option in OPTIONS:
        for name in option.env:
            if env.get(name, "") != "":  # an empty variable counts as unset
                given[option.name] = (_ENV_FORMAT.get(name, "{}").format(env[name]),
                                      f"environment variable {name}")
                break
    return given


def _from_query(query: str) -> _Given:
    given: _Given = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if _check_known(key, "in the URL query") in given:
            raise ConfigurationError(f"option {key!r} appears twice in the URL query", key=key)
        given[key] = (value, "URL query")
    return given


def _from_options(options: Mapping[str, object]) -> _Given:
    given: _Given = {}
    for key, value in options.items():
        if _check_known(key, "in the options") and value is not None:
            given[key] = (value, "options")
    return given


def _parse(option: Option, given: _Given, mode: str) -> object:
    if option.name not in given:
        return option.default_for(mode)
    raw, where = given[option.name]
    try:
        return option.parse(raw, option.name)
    except ConfigurationError as exc:
        if where == "options":
            raise
        raise ConfigurationError(f"{where}: {exc}", key=exc.key) from None


# -- the target -----------------------------------------------------------------------------------


def _remote_error(target: str, why: str) -> ConfigurationError:
    return ConfigurationError(
        f"invalid remote {_redact(target)!r}: {why}. Accepted: file:///abs/folder, "
        "s3://bucket/prefix, memory://name, or the absolute path of a database file "
        "(shared-file mode)",
        key="remote",
    )


def _split_target(target: object) -> tuple[str, urllib.parse.SplitResult | None, str]:
    """(target text, its URL parts without query or None for a plain path, the query)."""
    text = os.fspath(target) if isinstance(target, str | os.PathLike) else None
    if not isinstance(text, str) or not text.strip():
        raise _remote_error(str(target), "expected a non-empty URL or path")
    if "://" not in text:
        return text, None, ""  # a plain path is taken literally: "?" is a valid file name character
    parts = _urlsplit(text)
    if parts is None:
        raise _remote_error(text, "not a valid URL")
    if parts.fragment:
        raise _remote_error(text, "a URL fragment (#...) is not allowed")
    return text, parts._replace(query=""), parts.query


def _quote(path: str) -> str:
    return urllib.parse.quote(path, safe=_PATH_SAFE)


def _resolve_file(text: str, path: str, mode: str) -> tuple[str, str | None]:
    if not os.path.isabs(path):
        raise _remote_error(text, "a relative path; an absolute path is required "
                                  "(a relative one would depend on the working directory)")
    if mode == "shared-file" and path.endswith(("/", os.sep)):
        raise _remote_error(text, "shared-file mode needs the database file, not a directory")
    path = os.path.normpath(path)
    return "file://" + _quote(path), (path if mode == "shared-file" else None)


def _resolve_remote(
    text: str, parts: urllib.parse.SplitResult | None, mode: str
) -> tuple[str, str | None]:
    """(normalized remote, database path or None)."""
    if parts is None:
        return _resolve_file(text, text, mode)
    scheme, path = parts.scheme.lower(), urllib.parse.unquote(parts.path)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _remote_error(text, "a file URL needs an absolute path: file:///abs/path")
        return _resolve_file(text, path, mode)
    if mode == "shared-file":
        raise ConfigurationError(
            f"mode 'shared-file' needs a database file (file:///abs/path/app.db or a plain "
            f"absolute path), not {text!r}", key="mode")
    if scheme == "s3":
        if "@" in parts.netloc:
            raise _remote_error(text, "an s3:// URL takes no user or password (boto3 finds them)")
        if not _BUCKET.fullmatch(parts.netloc) or ".." in parts.netloc:
            raise _remote_error(text, f"bucket {parts.netloc!r} is not a valid S3 bucket name "
                                      "(3-63 of lowercase letters, digits, dots and hyphens)")
        prefix = path.strip("/")
        return f"s3://{parts.netloc}" + (f"/{_quote(prefix)}" if prefix else ""), None
    if scheme == "memory":
        name = (urllib.parse.unquote(parts.netloc) + path).strip("/")
        if not name:
            raise _remote_error(text, "a memory remote needs a name: memory://name")
        return "memory://" + _quote(name), None
    raise _remote_error(text, f"unknown scheme {parts.scheme!r}")


def _check_combination(settings: Settings) -> None:
    if settings.mode == "shared-file" and settings.lock == "manifest":
        raise ConfigurationError(
            "invalid value for lock: 'manifest'; shared-file mode has no manifest to keep the "
            "write lease in: use file or dynamodb://TABLE", key="lock")
    if settings.mode == "shared-file" and settings.lock == "none":
        raise ConfigurationError(
            "invalid value for lock: 'none'; shared-file mode writes the database in place and "
            "needs a lock: file, memory or dynamodb://TABLE", key="lock")
    if settings.lock == "s3" and not settings.remote.startswith("s3://"):
        raise ConfigurationError(
            f"invalid value for lock: 's3'; the S3 lock lives next to an s3:// remote, "
            f"not {settings.remote!r} (lock=object keeps a lock object on any remote)", key="lock")
    if settings.lock == "object" and settings.mode == "shared-file":
        raise ConfigurationError(
            "invalid value for lock: 'object'; shared-file mode has no remote to keep a lock "
            "object on: use file or dynamodb://TABLE", key="lock")


# -- the settings object --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings of one database: build with :meth:`build` (``docs/configuration.md``)."""

    remote: str
    mode: Mode
    database: str | None
    cache_dir: str
    max_staleness: float
    endpoint_url: str | None
    region: str | None
    lock: str
    lock_key: str | None
    lock_expiration: float
    lock_max_attempts: int | None
    timeout: float
    transaction_mode: TransactionMode
    inline_delta_max: int
    compact_after_deltas: int
    compact_after_bytes: int
    retention: float
    progress: bool

    @classmethod
    def build(
        cls,
        target: str | os.PathLike[str],
        options: Mapping[str, object] | None = None,
        *,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Settings for ``target`` (a remote URL or a database path), from ``options``, the target's
        query string, ``env`` (default: ``os.environ``) and the defaults, in that order."""
        text, parts, query = _split_target(target)
        given = _from_env(os.environ if env is None else env)
        given.update(_from_query(query))
        given.update(_from_options(options or {}))
        inferred = "shared-file" if parts is None else "replica"
        mode = str(_parse(_BY_NAME["mode"], given, inferred)) if "mode" in given else inferred
        remote, database = _resolve_remote(text, parts, mode)
        values: dict[str, Any] = {option.name: _parse(option, given, mode) for option in OPTIONS}
        values["mode"] = mode
        if mode == "shared-file":
            values["timeout"] = max(SHARED_FILE_MIN_TIMEOUT, values["timeout"])
        settings = cls(remote=remote, database=database, **values)
        _check_combination(settings)
        return settings

    def replace(self, **changes: object) -> Settings:
        """A validated copy with ``changes`` (option names, or ``remote``; ``None`` resets an option
        to its default). Without a new ``remote`` the mode is kept."""
        target = changes.pop("remote", None)
        if "database" in changes:
            raise ConfigurationError("database follows from remote: change remote", key="database")
        options = {name: getattr(self, name) for name in _BY_NAME}
        if target is None:
            target = self.database or self.remote
        else:
            del options["mode"]  # inferred again from the new remote unless given
        for key, value in changes.items():
            options[_check_known(key, "given to replace()")] = value
        if not isinstance(target, str | os.PathLike):
            raise _remote_error(repr(target), "expected a URL or path")
        return Settings.build(target, options, env={})

    def describe(self) -> dict[str, object]:
        """Every field as a JSON-able dict (``lambdalite status --json``); credentials in
        ``endpoint_url`` are masked."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.endpoint_url:
            out["endpoint_url"] = _redact(self.endpoint_url)
        return out
