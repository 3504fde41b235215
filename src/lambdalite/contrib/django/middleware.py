"""The Django middleware: request-scoped consistency, bookmarks and request-level retry.

One line, first in ``MIDDLEWARE`` (so a retried request runs every middleware again)::

    MIDDLEWARE = ["lambdalite.contrib.django.middleware.LambdaliteMiddleware", ...]

For each request it opens a request scope (:mod:`lambdalite.scope`: one freshness
check for the whole request, its own writes always visible), honours and updates
the client's bookmark (the ``lambdalite_bookmark`` cookie or the
``X-Lambdalite-Bookmark`` header: the client reads at least what it last wrote,
on any instance), and re-runs the request when it failed after a
:class:`~lambdalite.errors.ConflictError` (another instance committed between
what a transaction read and what it wrote; the transaction left no trace).
Attempts are bounded (``LAMBDALITE_REQUEST_ATTEMPTS``, default 5) with jittered
backoff. A view with effects outside the database opts out with the
:func:`no_retry` decorator (or by calling :func:`lambdalite.scope.no_retry`).
Routes that conflicted lately (``LAMBDALITE_CONTENDED_MEMORY`` seconds, default 60; 0
turns it off) have their next requests run with every transaction waiting its turn to
write at ``BEGIN``, as a re-run does (:class:`lambdalite.scope.ContendedRoutes`).

Without the middleware, the backend still opens a request scope from Django's
``request_started`` and ``request_finished`` signals (no bookmarks, no retry).
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.core.signals import request_finished, request_started

from lambdalite.contrib.wsgi import BOOKMARK_COOKIE, BOOKMARK_HEADER
from lambdalite.scope import (
    ContendedRoutes,
    close_scope,
    current_scope,
    open_scope,
    request_scope,
)
from lambdalite.scope import no_retry as _no_retry

__all__ = ["LambdaliteMiddleware", "connect_request_signals", "no_retry"]

log = logging.getLogger("lambdalite.contrib.django")

_F = TypeVar("_F", bound=Callable[..., Any])


def no_retry(view: _F) -> _F:
    """Decorate a view whose request must never be re-run (side effects outside the DB)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _no_retry()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class LambdaliteMiddleware:
    """See the module docstring."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.attempts = int(getattr(settings, "LAMBDALITE_REQUEST_ATTEMPTS", 5))
        if self.attempts < 1:
            raise ValueError("settings.LAMBDALITE_REQUEST_ATTEMPTS must be at least 1")
        memory = float(getattr(settings, "LAMBDALITE_CONTENDED_MEMORY", 60.0))
        if memory < 0:
            raise ValueError("settings.LAMBDALITE_CONTENDED_MEMORY must be >= 0 seconds")
        self.routes = ContendedRoutes(memory)

    def __call__(self, request: Any) -> Any:
        client = request.headers.get(BOOKMARK_HEADER) or request.COOKIES.get(BOOKMARK_COOKIE)
        try:
            request.body  # noqa: B018 - read now, so a re-run request finds it again
        except Exception:  # too large, or already streamed: such a request is never re-run
            replayable = False
        else:
            replayable = True
        route = self.routes.key(request.method or "GET", request.path_info)
        contended = self.routes.contended(route)
        for attempt in range(1, self.attempts + 1):
            with request_scope(client, immediate=attempt > 1 or contended) as scope:
                response = self.get_response(request)
            if scope.conflicts:
                self.routes.conflicted(route)
            failed = getattr(response, "status_code", 200) >= 500
            retry = failed and scope.conflicts > 0 and scope.retry and replayable
            if retry and attempt < self.attempts:
                log.info("request re-run after a conflict (attempt %d)", attempt)
                response.close()
                time.sleep(random.uniform(0, 0.02 * 2**attempt))
                continue
            after = scope.bookmark_after()
            if after is not None:
                response.set_cookie(BOOKMARK_COOKIE, after, httponly=True, samesite="Lax")
                response[BOOKMARK_HEADER] = after
            return response
        raise AssertionError("unreachable")


_signal_scopes = threading.local()
_connected = False
_connect_lock = threading.Lock()


def _request_started(sender: Any, **kwargs: Any) -> None:
    if current_scope() is None:  # the middleware's, if any, is opened later and wins
        _signal_scopes.token = open_scope()


def _request_finished(sender: Any, **kwargs: Any) -> None:
    token = getattr(_signal_scopes, "token", None)
    if token is not None:
        _signal_scopes.token = None
        close_scope(token)


def connect_request_signals() -> None:
    """Open a request scope for every request, middleware or not (done by the backend)."""
    global _connected
    with _connect_lock:
        if _connected:
            return
        request_started.connect(_request_started, dispatch_uid="lambdalite-request-scope")
        request_finished.connect(_request_finished, dispatch_uid="lambdalite-request-scope")
        _connected = True
