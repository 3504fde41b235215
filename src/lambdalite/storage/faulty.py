"""A seeded fault-injecting wrapper around any storage, for fault tests of the engine.

In the style of Litestream's chaos client: :class:`FaultyStorage` passes every
call to the storage it wraps, but for the operations named in ``ops`` it draws
from a ``random.Random(seed)`` and

* with probability ``fail_rate`` raises :class:`InjectedFaultError` *before* the
  operation (nothing happened, like a refused connection), or
* with probability ``fail_after_rate`` performs the operation and *then* raises
  (the outcome is ambiguous, like a timeout after the server wrote).

The same seed and the same sequence of calls give the same faults. ``fail_next``
forces the next N calls of one operation to fail, for tests that need a fault
at an exact point. :class:`InjectedFaultError` is a
:class:`~lambdalite.errors.TransientStorageError`, so the engine sees exactly
what a real transient failure looks like; tests can tell the two apart by type.
"""

from __future__ import annotations

import random
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from lambdalite.errors import ConfigurationError, TransientStorageError
from lambdalite.storage.base import Blob, ObjectInfo, ProgressCallback, Storage

__all__ = ["OPS", "FaultyStorage", "InjectedFault", "InjectedFaultError"]

OPS: frozenset[str] = frozenset({"get", "put", "delete", "list", "put_file", "get_file"})
"""The operations a fault can be injected into."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """A record of one injected fault: which call, and whether it was performed first."""

    op: str
    key: str
    performed: bool


class InjectedFaultError(TransientStorageError):
    """A fault injected by :class:`FaultyStorage`. ``performed`` tells if the call took effect."""

    def __init__(self, fault: InjectedFault, *, remote: str) -> None:
        when = "after performing it" if fault.performed else "before performing it"
        super().__init__(
            f"injected fault in {fault.op} of {fault.key!r} ({when})",
            remote=remote,
            key=fault.key,
            request_sent=fault.performed,
        )
        self.op = fault.op
        self.performed = fault.performed


class FaultyStorage:
    """Wraps ``inner`` and injects faults deterministically from ``seed``."""

    def __init__(
        self,
        inner: Storage,
        *,
        seed: int,
        fail_rate: float = 0.0,
        fail_after_rate: float = 0.0,
        ops: Iterable[str] = OPS,
    ) -> None:
        ops = frozenset(ops)
        if not ops <= OPS:
            raise ConfigurationError(
                f"unknown operations {sorted(ops - OPS)}; known: {sorted(OPS)}", key="ops"
            )
        if min(fail_rate, fail_after_rate) < 0 or fail_rate + fail_after_rate > 1:
            raise ConfigurationError(
                "fail_rate and fail_after_rate must be >= 0 and sum to at most 1", key="fail_rate"
            )
        self.inner = inner
        self.fail_rate = fail_rate
        self.fail_after_rate = fail_after_rate
        self.ops = ops
        self.calls: Counter[str] = Counter()
        """How many calls of each operation were made (faulty or not)."""
        self.injected: list[InjectedFault] = []
        """Every fault injected so far, in order."""
        self._rng = random.Random(seed)
        self._forced: dict[str, deque[bool]] = {op: deque() for op in OPS}
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.inner.url

    def fail_next(self, op: str, count: int = 1, *, after: bool = False) -> None:
        """Make the next ``count`` calls of ``op`` fail (after performing them if ``after``).

        Forced faults apply even when ``op`` is not in ``ops`` and do not consume
        random draws.
        """
        if op not in OPS:
            raise ConfigurationError(f"unknown operation {op!r}; known: {sorted(OPS)}", key="op")
        with self._lock:
            self._forced[op].extend([after] * count)

    def _plan(self, op: str) -> bool | None:
        """None: no fault; False: fail before; True: fail after performing."""
        with self._lock:
            self.calls[op] += 1
            if self._forced[op]:
                return self._forced[op].popleft()
            if op not in self.ops:
                return None
            draw = self._rng.random()
        if draw < self.fail_rate:
            return False
        if draw < self.fail_rate + self.fail_after_rate:
            return True
        return None

    def _call(self, op: str, key: str, run: Callable[[], _T]) -> _T:
        plan = self._plan(op)
        if plan is None:
            return run()
        fault = InjectedFault(op, key, plan)
        if plan:
            run()
        with self._lock:
            self.injected.append(fault)
        raise InjectedFaultError(fault, remote=self.url)

    def get(self, key: str, *, if_none_match: str | None = None) -> Blob | None:
        return self._call("get", key, lambda: self.inner.get(key, if_none_match=if_none_match))

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        return self._call(
            "put",
            key,
            lambda: self.inner.put(key, data, if_match=if_match, if_none_match=if_none_match),
        )

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self._call("delete", key, lambda: self.inner.delete(key, if_match=if_match))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Lists eagerly (the fault, if any, is raised by this call, not during iteration)."""
        return iter(self._call("list", prefix, lambda: list(self.inner.list(prefix))))

    def put_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        return self._call(
            "put_file", key, lambda: self.inner.put_file(key, path, progress=progress)
        )

    def get_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        return self._call(
            "get_file", key, lambda: self.inner.get_file(key, path, progress=progress)
        )

    def close(self) -> None:
        self.inner.close()
