"""The storage protocol: where the truth lives.

A remote is a flat namespace of objects under one prefix. Keys passed to a
backend are *relative* to that prefix (``"manifest"``, ``"snapshots/..."``).

The contract every backend keeps (and ``tests/contract`` checks against each):

* ``get(key)`` returns the whole object and its ETag, or raises
  :class:`~lambdalite.errors.NotFoundError`.
* ``get(key, if_none_match=etag)`` returns ``None`` when the object's ETag still
  equals ``etag`` (no body is transferred: HTTP 304), else the object.
* ``put(key, data)`` writes unconditionally and returns the new ETag.
* ``put(key, data, if_none_match=True)`` creates the object only if the key is
  absent; if it exists it raises :class:`~lambdalite.errors.PreconditionFailedError`.
* ``put(key, data, if_match=etag)`` replaces the object only if its current ETag
  is ``etag``; a different ETag *or a missing object* raises
  :class:`~lambdalite.errors.PreconditionFailedError`.
* Conditional writes are atomic: of N concurrent writers with the same
  condition, exactly one wins, from any number of processes or hosts.
* ``delete(key, if_match=None)`` removes the object (missing is not an error
  unless ``if_match`` is given, then it is ``PreconditionFailedError``).
* ``list(prefix)`` yields :class:`ObjectInfo` for every key starting with
  ``prefix``, in key order.
* ``put_file`` / ``get_file`` move large objects through a local file,
  streaming, with an optional progress callback receiving byte counts.
* ETags are opaque strings; identical bytes may yield identical ETags (as on
  S3), so callers that compare-and-swap must make every version's bytes unique.
* A backend never lets an SDK exception escape: it translates to the
  :mod:`lambdalite.errors` tree in one place, chaining the original as
  ``__cause__``. Transient failures (5xx, throttling, timeouts, 409) are
  :class:`~lambdalite.errors.TransientStorageError`.
* Constructors do no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Blob", "ObjectInfo", "ProgressCallback", "Storage"]

ProgressCallback = Callable[[int], None]
"""Called with the number of bytes moved since the previous call."""


@dataclass(frozen=True, slots=True)
class Blob:
    """An object's bytes and the ETag they were read at."""

    data: bytes
    etag: str


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One listed object. ``modified`` is a POSIX timestamp."""

    key: str
    size: int
    etag: str
    modified: float


@runtime_checkable
class Storage(Protocol):
    """A remote object store (see the module docstring for the contract)."""

    @property
    def url(self) -> str:
        """The remote URL this storage was opened from (no credentials in it)."""
        ...

    def get(self, key: str, *, if_none_match: str | None = None) -> Blob | None: ...

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str: ...

    def delete(self, key: str, *, if_match: str | None = None) -> None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def put_file(
        self, key: str, path: str, *, progress: ProgressCallback | None = None
    ) -> str: ...

    def get_file(
        self, key: str, path: str, *, progress: ProgressCallback | None = None
    ) -> str: ...

    def close(self) -> None: ...
