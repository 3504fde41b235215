"""Re-running a transaction that lost to another instance.

A :class:`~lambdalite.errors.ConflictError` means the transaction left no
trace, so running the same function again is always safe::

    @lambdalite.retry_on_conflict(attempts=10)
    def add_visit(conn):
        with conn:
            conn.execute("BEGIN")
            (n,) = conn.execute("SELECT n FROM counter").fetchone()
            conn.execute("UPDATE counter SET n = ?", (n + 1,))
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar, overload

from lambdalite.errors import ConflictError

__all__ = ["retry_on_conflict"]

log = logging.getLogger("lambdalite.retry")

P = ParamSpec("P")
R = TypeVar("R")


@overload
def retry_on_conflict(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def retry_on_conflict(
    *, attempts: int = 10, base_delay: float = 0.01, max_delay: float = 1.0
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def retry_on_conflict(
    func: Callable[P, R] | None = None,
    /,
    *,
    attempts: int = 10,
    base_delay: float = 0.01,
    max_delay: float = 1.0,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Re-run the decorated function on ``ConflictError``, with jittered exponential backoff.

    After ``attempts`` tries the last ``ConflictError`` is raised. Use it bare
    (``@retry_on_conflict``) or with options (``@retry_on_conflict(attempts=5)``).
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            for attempt in range(1, attempts + 1):
                try:
                    return fn(*args, **kwargs)
                except ConflictError:
                    if attempt == attempts:
                        raise
                    delay = random.uniform(0, min(max_delay, base_delay * 2**attempt))
                    log.debug("conflict on attempt %d of %s; retrying", attempt, fn.__qualname__)
                    time.sleep(delay)
            raise AssertionError("unreachable")

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate
