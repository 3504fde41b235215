"""Re-running an ``atomic()`` block that lost to another instance.

Django wraps lambdalite's :class:`~lambdalite.errors.ConflictError` into
``django.db.utils.OperationalError`` (the original is its ``__cause__``). A conflict means the
transaction left no trace, so running the whole block again, on the newest version, is safe::

    from lambdalite.contrib.django import retrying_atomic

    @retrying_atomic                       # or @retrying_atomic(using="other", attempts=5)
    def add_visit(page: str) -> int:
        counter, _ = Counter.objects.get_or_create(page=page)
        counter.hits = F("hits") + 1       # or a read-modify-write in Python: both are safe
        counter.save()
        ...

Only the outermost block retries: nested inside another ``atomic()`` (retrying or not) it is a
plain ``atomic()``, because only the outer transaction can be run again. Savepoints inside the
block work as usual.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, overload

from django.db import DEFAULT_DB_ALIAS, transaction

from lambdalite.errors import ConflictError

__all__ = ["is_conflict", "retrying_atomic"]

log = logging.getLogger("lambdalite.contrib.django")

P = ParamSpec("P")
R = TypeVar("R")


def is_conflict(exc: BaseException) -> bool:
    """True if ``exc`` is a :class:`ConflictError` or was caused by one (as Django wraps it)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ConflictError):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


@overload
def retrying_atomic(func: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def retrying_atomic(
    using: str | None = None,
    /,
    *,
    savepoint: bool = True,
    durable: bool = False,
    attempts: int = 10,
    base_delay: float = 0.01,
    max_delay: float = 1.0,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


@overload
def retrying_atomic(
    *,
    using: str | None = None,
    savepoint: bool = True,
    durable: bool = False,
    attempts: int = 10,
    base_delay: float = 0.01,
    max_delay: float = 1.0,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def retrying_atomic(
    func: Any = None,
    /,
    *,
    using: str | None = None,
    savepoint: bool = True,
    durable: bool = False,
    attempts: int = 10,
    base_delay: float = 0.01,
    max_delay: float = 1.0,
) -> Any:
    """Like ``transaction.atomic`` as a decorator, re-running the function on a conflict.

    ``using``, ``savepoint`` and ``durable`` are ``atomic()``'s. After ``attempts`` tries the
    last error is raised; between tries it sleeps a random time up to
    ``min(max_delay, base_delay * 2**attempt)`` seconds. A function cannot be re-run halfway,
    so this is a decorator, not a context manager: wrap the block in a function.
    """
    if isinstance(func, str):
        using, func = func, None
    if attempts < 1:
        raise ValueError("attempts must be at least 1")

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            alias = using or DEFAULT_DB_ALIAS
            if transaction.get_connection(alias).in_atomic_block:
                with transaction.atomic(using=alias, savepoint=savepoint, durable=durable):
                    return fn(*args, **kwargs)
            for attempt in range(1, attempts + 1):
                try:
                    with transaction.atomic(using=alias, savepoint=savepoint, durable=durable):
                        return fn(*args, **kwargs)
                except Exception as exc:
                    if attempt == attempts or not is_conflict(exc):
                        raise
                    log.debug(
                        "conflict on attempt %d of %s (database %r); retrying",
                        attempt, fn.__qualname__, alias,
                    )
                    time.sleep(random.uniform(0, min(max_delay, base_delay * 2**attempt)))
            raise AssertionError("unreachable")

        return wrapper

    if func is not None:
        return decorate(func)
    return decorate
