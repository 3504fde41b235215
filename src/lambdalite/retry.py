"""Re-running a transaction that lost to another instance.

A :class:`~lambdalite.errors.ConflictError` means the transaction left no
trace, so running the same code again is always safe. As a decorator::

    @lambdalite.retry_on_conflict(attempts=10)
    def add_visit(conn):
        with conn:
            conn.execute("BEGIN")
            (n,) = conn.execute("SELECT n FROM counter").fetchone()
            conn.execute("UPDATE counter SET n = ?", (n + 1,))

or around a block, when a function would be awkward::

    for attempt in lambdalite.retrying(attempts=10):
        with attempt:
            conn.execute("BEGIN")
            ...
            conn.commit()

A conflict inside ``with attempt`` is swallowed and the loop goes round again
(after a jittered pause); any other exception, or the conflict of the last
attempt, propagates. A block that ends without error ends the loop.

The second and later attempts run their transactions as ``BEGIN IMMEDIATE``
(:func:`lambdalite.scope.immediate_transactions`): they wait their turn for
the write lease before reading, so a retry cannot conflict again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar, overload

from lambdalite.errors import ConflictError
from lambdalite.scope import immediate_transactions

__all__ = ["Attempt", "retry_on_conflict", "retrying"]

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
                    if attempt == 1:
                        return fn(*args, **kwargs)
                    with immediate_transactions():  # waits its turn before it reads
                        return fn(*args, **kwargs)
                except ConflictError:
                    if attempt == attempts:
                        raise
                    log.debug("conflict on attempt %d of %s; retrying", attempt, fn.__qualname__)
                    _pause(attempt, base_delay, max_delay)
            raise AssertionError("unreachable")

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate


def _pause(attempt: int, base_delay: float, max_delay: float) -> None:
    time.sleep(random.uniform(0, min(max_delay, base_delay * 2**attempt)))


class Attempt:
    """One try of a :func:`retrying` loop: a context manager that absorbs a conflict."""

    def __init__(self, number: int, last: bool) -> None:
        self.number = number
        self.last = last
        self.succeeded = False
        self._immediate: contextlib.ExitStack | None = None

    def __enter__(self) -> Attempt:
        if self.number > 1:  # a retry waits its turn before it reads
            self._immediate = contextlib.ExitStack()
            self._immediate.enter_context(immediate_transactions())
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> bool:
        if self._immediate is not None:
            self._immediate.close()
        if exc_type is None:
            self.succeeded = True
            return False
        if issubclass(exc_type, ConflictError) and not self.last:
            log.debug("conflict on attempt %d; retrying", self.number)
            return True  # swallowed: the loop runs the block again
        return False


def retrying(
    *, attempts: int = 10, base_delay: float = 0.01, max_delay: float = 1.0
) -> Iterator[Attempt]:
    """Yield up to ``attempts`` :class:`Attempt` context managers until one block succeeds."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for number in range(1, attempts + 1):
        attempt = Attempt(number, last=number == attempts)
        yield attempt
        if attempt.succeeded:
            return
        _pause(number, base_delay, max_delay)
