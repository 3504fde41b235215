"""Where the truth lives: open a remote by URL.

::

    from lambdalite.storage import open_storage

    remote = open_storage("s3://my-bucket/prod/app.db")      # Amazon S3 (or compatible)
    remote = open_storage("file:///var/lib/app/remote")      # a local folder (the embedded default)
    remote = open_storage("memory://test")                   # the in-process fake

Each scheme is served by one backend module (``s3``, ``folder``, ``memory``) that
owns the parsing of its URL form. The registry maps a scheme to a factory and
imports the backend only when a URL of that scheme is opened, so a process that
never talks to S3 never imports boto3. ``open_storage`` does no I/O.

The contract every backend keeps is in :mod:`lambdalite.storage.base`.
"""

from __future__ import annotations

import importlib
import re
import threading
from typing import Protocol
from urllib.parse import urlsplit

from lambdalite.errors import ConfigurationError
from lambdalite.storage._common import url_error
from lambdalite.storage.base import Blob, ObjectInfo, ProgressCallback, Storage

__all__ = [
    "Blob",
    "ObjectInfo",
    "ProgressCallback",
    "Storage",
    "StorageFactory",
    "open_storage",
    "register_storage",
]

ACCEPTED_FORMS = "file:///absolute/path/to/folder, s3://bucket[/prefix] or memory://name[/prefix]"
"""The URL forms of the built-in backends, quoted in error messages."""


class StorageFactory(Protocol):
    """Builds a :class:`Storage` from a URL of its scheme (no I/O)."""

    def __call__(
        self, url: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> Storage: ...


class _LazyFactory:
    """A factory that imports ``module`` and calls ``module.attr.from_url`` on first use."""

    def __init__(self, module: str, attr: str) -> None:
        self._module = module
        self._attr = attr

    def __call__(
        self, url: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> Storage:
        cls = getattr(importlib.import_module(self._module), self._attr)
        storage: Storage = cls.from_url(url, endpoint_url=endpoint_url, region=region)
        return storage


_registry_lock = threading.Lock()
_registry: dict[str, StorageFactory] = {
    "file": _LazyFactory("lambdalite.storage.folder", "FolderStorage"),
    "memory": _LazyFactory("lambdalite.storage.memory", "MemoryStorage"),
    "s3": _LazyFactory("lambdalite.storage.s3", "S3Storage"),
}


def register_storage(scheme: str, factory: StorageFactory) -> None:
    """Serve URLs of ``scheme`` (no ``://``) with ``factory``, replacing any previous one."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise ConfigurationError(f"invalid URL scheme {scheme!r}", key="scheme")
    with _registry_lock:
        _registry[scheme.lower()] = factory


def open_storage(
    url: str, *, endpoint_url: str | None = None, region: str | None = None
) -> Storage:
    """Return the :class:`Storage` for ``url``, without doing any I/O.

    ``endpoint_url`` and ``region`` are used by ``s3://`` remotes (``None`` leaves
    them to boto3's own resolution, including ``AWS_ENDPOINT_URL_S3``); the other
    backends ignore them. An unknown scheme or a malformed URL raises
    :class:`~lambdalite.errors.ConfigurationError` with ``key="remote"``.
    """
    if not isinstance(url, str) or "://" not in url:
        raise url_error(str(url), "is not a URL", ACCEPTED_FORMS)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as exc:
        raise url_error(url, f"is not a valid URL ({exc})", ACCEPTED_FORMS) from exc
    with _registry_lock:
        factory = _registry.get(scheme)
        known = ", ".join(sorted(_registry))
    if factory is None:
        raise url_error(url, f"has an unknown scheme {scheme!r} (known: {known})", ACCEPTED_FORMS)
    return factory(url, endpoint_url=endpoint_url, region=region)
