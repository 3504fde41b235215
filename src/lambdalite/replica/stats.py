"""Counting what crosses the wire: requests and bytes per storage operation."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, fields

from lambdalite.storage.base import Blob, ObjectInfo, ProgressCallback, Storage

__all__ = ["CountingStorage", "StorageStats"]


@dataclass(slots=True)
class StorageStats:
    """Cumulative counters; subtract two copies to measure one operation."""

    gets: int = 0
    not_modified: int = 0
    puts: int = 0
    deletes: int = 0
    lists: int = 0
    bytes_down: int = 0
    bytes_up: int = 0

    @property
    def requests(self) -> int:
        return self.gets + self.puts + self.deletes + self.lists

    def copy(self) -> StorageStats:
        return StorageStats(**{f.name: getattr(self, f.name) for f in fields(self)})

    def __sub__(self, other: StorageStats) -> StorageStats:
        return StorageStats(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, int]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["requests"] = self.requests
        return d


class CountingStorage:
    """A transparent :class:`Storage` wrapper that counts requests and bytes."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.stats = StorageStats()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.inner.url

    def _add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def get(self, key: str, *, if_none_match: str | None = None) -> Blob | None:
        try:
            blob = self.inner.get(key, if_none_match=if_none_match)
        except Exception:
            self._add(gets=1)
            raise
        if blob is None:
            self._add(gets=1, not_modified=1)
        else:
            self._add(gets=1, bytes_down=len(blob.data))
        return blob

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        self._add(puts=1, bytes_up=len(data))
        return self.inner.put(key, data, if_match=if_match, if_none_match=if_none_match)

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self._add(deletes=1)
        self.inner.delete(key, if_match=if_match)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._add(lists=1)
        return self.inner.list(prefix)

    def put_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        self._add(puts=1, bytes_up=os.path.getsize(path))
        return self.inner.put_file(key, path, progress=progress)

    def get_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        try:
            return self.inner.get_file(key, path, progress=progress)
        finally:
            size = os.path.getsize(path) if os.path.exists(path) else 0
            self._add(gets=1, bytes_down=size)

    def close(self) -> None:
        self.inner.close()
