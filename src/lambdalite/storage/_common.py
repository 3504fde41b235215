"""Helpers shared by the storage backends: key checks, URL redaction, ETags."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

from lambdalite.errors import ConfigurationError

__all__ = ["MAX_KEY_BYTES", "check_key", "md5_etag", "redact_url", "url_error"]

MAX_KEY_BYTES = 1024
"""S3's limit on a full object key, applied to relative keys by every backend."""


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid relative object key, else raise ConfigurationError.

    Every backend accepts the same keys, so that code tested on the folder or
    memory backend works on S3 and back: a non-empty string of at most 1024 UTF-8
    bytes, ``/``-separated, with no empty, ``.`` or ``..`` segment (so no leading,
    trailing or doubled ``/``), no NUL or backslash, and not inside the folder
    backend's reserved ``.lambdalite`` folder.
    """
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"object key {key!r} must be a non-empty string", key="key")
    problem = None
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        problem = f"is longer than {MAX_KEY_BYTES} bytes"
    elif "\x00" in key or "\\" in key:
        problem = "contains a NUL or a backslash"
    elif any(part in ("", ".", "..") for part in key.split("/")):
        problem = "has an empty, '.' or '..' segment (leading, trailing or doubled '/')"
    elif key.split("/", 1)[0] == ".lambdalite":
        problem = "is inside the reserved '.lambdalite' folder"
    if problem is not None:
        raise ConfigurationError(f"object key {key[:80]!r} {problem}", key="key")
    return key


def md5_etag(data: bytes) -> str:
    """The ETag S3 gives a single-part upload of ``data``: its hex MD5."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def redact_url(url: str) -> str:
    """``url`` with any ``user:password@`` part replaced by ``***@`` (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def url_error(url: str, problem: str, accepted: str) -> ConfigurationError:
    """A ConfigurationError for ``remote`` saying what is wrong and which forms are accepted."""
    return ConfigurationError(
        f"remote {redact_url(url)!r} {problem}: expected {accepted}", key="remote"
    )
