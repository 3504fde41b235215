"""``memory://name[/prefix]``: an in-process fake remote that ships with the library.

Like httpx's ``MockTransport``, this backend lets applications and tests use
lambdalite without any server or folder. Stores live in a process-global
registry keyed by name, so two ``open_storage("memory://x")`` calls (two
simulated instances in one process) share the same objects, and nothing leaks
to other processes. Every operation holds the store's lock, so conditional
writes are atomic across threads. ETags are the hex MD5 of the bytes, exactly
like a single-part S3 upload (identical bytes give identical ETags).

Call :func:`reset` (or :meth:`MemoryStorage.reset`) between tests.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from lambdalite.errors import ConfigurationError, NotFoundError, PreconditionFailedError
from lambdalite.storage._common import check_key, md5_etag, url_error
from lambdalite.storage.base import Blob, ObjectInfo, ProgressCallback

__all__ = ["MemoryStorage", "reset"]

_FORM = "memory://name[/prefix]"
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class _Object:
    data: bytes
    etag: str
    modified: float


@dataclass(slots=True)
class _Store:
    lock: threading.Lock = field(default_factory=threading.Lock)
    objects: dict[str, _Object] = field(default_factory=dict)


_stores_lock = threading.Lock()
_stores: dict[str, _Store] = {}


def _store(name: str) -> _Store:
    with _stores_lock:
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = _Store()
        return store


def reset(name: str | None = None) -> None:
    """Delete every object of the store ``name``, or of every store when ``name`` is None."""
    with _stores_lock:
        stores = list(_stores.values()) if name is None else [_stores.get(name)]
    for store in stores:
        if store is not None:
            with store.lock:
                store.objects.clear()


class MemoryStorage:
    """A remote held in this process's memory (see the module docstring)."""

    def __init__(self, name: str, prefix: str = "") -> None:
        if not name or "/" in name:
            raise url_error(f"memory://{name}", "needs a store name", _FORM)
        self._name = name
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        if self._prefix:
            try:
                check_key(self._prefix.rstrip("/"))
            except ConfigurationError as exc:
                raise url_error(self.url, f"has an invalid prefix: {exc}", _FORM) from exc
        self._store = _store(name)

    @classmethod
    def from_url(
        cls, url: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> MemoryStorage:
        """Parse ``memory://name[/prefix]``; ``endpoint_url`` and ``region`` are ignored."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "memory":
            raise url_error(url, "is not a memory:// URL", _FORM)
        if not parts.netloc or "@" in parts.netloc or ":" in parts.netloc:
            raise url_error(url, "needs a store name (and no user or port)", _FORM)
        if parts.query or parts.fragment:
            raise url_error(url, "has a query or fragment", _FORM)
        return cls(unquote(parts.netloc), unquote(parts.path))

    @property
    def url(self) -> str:
        return f"memory://{self._name}/{self._prefix}".rstrip("/")

    def reset(self) -> None:
        """Delete every object of this store (all prefixes)."""
        reset(self._name)

    def _full(self, key: str) -> str:
        return self._prefix + check_key(key)

    def get(self, key: str, *, if_none_match: str | None = None) -> Blob | None:
        with self._store.lock:
            obj = self._store.objects.get(self._full(key))
        if obj is None:
            raise NotFoundError(f"no object {key!r} in {self.url}", remote=self.url, key=key)
        if if_none_match is not None and obj.etag == if_none_match:
            return None
        return Blob(obj.data, obj.etag)

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        full = self._full(key)
        new = _Object(bytes(data), md5_etag(data), time.time())
        with self._store.lock:
            current = self._store.objects.get(full)
            if if_none_match and current is not None:
                raise PreconditionFailedError(
                    f"{key!r} already exists in {self.url}", remote=self.url, key=key
                )
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailedError(
                    f"{key!r} in {self.url} is not at ETag {if_match!r}", remote=self.url, key=key
                )
            self._store.objects[full] = new
        return new.etag

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        full = self._full(key)
        with self._store.lock:
            current = self._store.objects.get(full)
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailedError(
                    f"{key!r} in {self.url} is not at ETag {if_match!r}", remote=self.url, key=key
                )
            self._store.objects.pop(full, None)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        full_prefix = self._prefix + prefix
        with self._store.lock:
            items = sorted(
                (k, o) for k, o in self._store.objects.items() if k.startswith(full_prefix)
            )
        for k, o in items:
            yield ObjectInfo(k[len(self._prefix) :], len(o.data), o.etag, o.modified)

    def put_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        chunks = []
        with open(path, "rb") as src:
            while chunk := src.read(_CHUNK):
                chunks.append(chunk)
                if progress is not None:
                    progress(len(chunk))
        return self.put(key, b"".join(chunks))

    def get_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        blob = self.get(key)
        assert blob is not None
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".lambdalite-", suffix=".partial", dir=directory)
        try:
            with os.fdopen(fd, "wb") as dst:
                for start in range(0, len(blob.data), _CHUNK):
                    chunk = blob.data[start : start + _CHUNK]
                    dst.write(chunk)
                    if progress is not None:
                        progress(len(chunk))
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return blob.etag

    def close(self) -> None:
        """Nothing to release: the objects stay in the registry until :func:`reset`."""


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
