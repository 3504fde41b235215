"""A WSGI middleware: request-scoped consistency, bookmarks and request-level retry.

Wrap any WSGI application (Flask, Bottle, Falcon, Pyramid…), one line::

    from lambdalite.contrib.wsgi import LambdaliteMiddleware
    app.wsgi_app = LambdaliteMiddleware(app.wsgi_app)        # Flask
    application = LambdaliteMiddleware(application)         # anything else

For each request it

* opens a request scope (:mod:`lambdalite.scope`): one freshness check for the
  whole request instead of one per transaction, the request's own writes
  always visible;
* reads the client's bookmark (the ``lambdalite_bookmark`` cookie, or the
  ``X-Lambdalite-Bookmark`` header) so the request reads at least the version
  that client last wrote, on whichever instance serves it, and sends the
  updated bookmark back when the request wrote;
* re-runs the whole request when it failed (status 5xx, or an exception) after
  a :class:`~lambdalite.errors.ConflictError`: another instance committed
  between what a transaction read and what it wrote. The request body is
  buffered for that; attempts are bounded, with jittered backoff. A view with
  side effects outside the database (an email, a payment) opts out by calling
  :func:`lambdalite.scope.no_retry` (or decorating it with :func:`no_retry_view`);
* remembers the routes that conflicted lately (``contended_memory`` seconds, 60 by
  default; 0 turns it off) and runs their next requests with every transaction waiting
  its turn to write at ``BEGIN``, as a re-run does: on a busy route they no longer
  conflict first (:class:`lambdalite.scope.ContendedRoutes`).

The response is buffered (as on AWS Lambda behind API Gateway, where it is
anyway), because a retried request must not have sent anything yet.
"""

from __future__ import annotations

import functools
import io
import logging
import random
import time
from collections.abc import Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any, TypeVar

from lambdalite.errors import ConflictError
from lambdalite.scope import ContendedRoutes, no_retry, request_scope

__all__ = ["BOOKMARK_COOKIE", "BOOKMARK_HEADER", "LambdaliteMiddleware", "no_retry_view"]

log = logging.getLogger("lambdalite.contrib.wsgi")

BOOKMARK_COOKIE = "lambdalite_bookmark"
BOOKMARK_HEADER = "X-Lambdalite-Bookmark"
_ENVIRON_HEADER = "HTTP_" + BOOKMARK_HEADER.upper().replace("-", "_")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_F = TypeVar("_F", bound=Callable[..., Any])


def no_retry_view(view: _F) -> _F:
    """Decorate a view whose request must never be re-run (side effects outside the DB)."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        no_retry()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class LambdaliteMiddleware:
    """See the module docstring. ``attempts``: runs of one request at most."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        attempts: int = 5,
        bookmarks: bool = True,
        max_body: int = 10 * 1024 * 1024,
        base_delay: float = 0.02,
        contended_memory: float = 60.0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.routes = ContendedRoutes(contended_memory)
        self.app = app
        self.attempts = attempts
        self.bookmarks = bookmarks
        self.max_body = max_body
        self.base_delay = base_delay

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body = self._buffer_body(environ)
        client = _bookmark_of(environ) if self.bookmarks else None
        route = self.routes.key(
            str(environ.get("REQUEST_METHOD", "GET")), str(environ.get("PATH_INFO", ""))
        )
        contended = self.routes.contended(route)
        for attempt in range(1, self.attempts + 1):
            run = dict(environ)
            if body is not None:
                run["wsgi.input"] = io.BytesIO(body)
            status: list[Any] = []
            out: list[bytes] = []
            capture = _capturer(status, out)
            failed: BaseException | None = None
            with request_scope(client, immediate=attempt > 1 or contended) as scope:
                try:
                    result = self.app(run, capture)
                    try:
                        out.extend(result)  # run the application inside the scope
                    finally:
                        close = getattr(result, "close", None)
                        if close is not None:
                            close()
                except ConflictError as exc:
                    failed = exc
            if scope.conflicts:
                self.routes.conflicted(route)
            errored = failed is not None or (bool(status) and str(status[0])[:1] == "5")
            retry = errored and scope.conflicts > 0 and scope.retry and body is not None
            if retry and attempt < self.attempts:
                log.info("request re-run after a conflict (attempt %d)", attempt)
                time.sleep(random.uniform(0, self.base_delay * 2**attempt))
                continue
            if failed is not None:
                raise failed
            headers = status[1]
            after = scope.bookmark_after() if self.bookmarks else None
            if after is not None:
                cookie = SimpleCookie()
                cookie[BOOKMARK_COOKIE] = after
                cookie[BOOKMARK_COOKIE]["path"] = "/"
                cookie[BOOKMARK_COOKIE]["httponly"] = True
                cookie[BOOKMARK_COOKIE]["samesite"] = "Lax"
                headers.append(("Set-Cookie", cookie[BOOKMARK_COOKIE].OutputString()))
                headers.append((BOOKMARK_HEADER, after))
            start_response(status[0], headers, status[2])
            return out
        raise AssertionError("unreachable")

    def _buffer_body(self, environ: dict[str, Any]) -> bytes | None:
        """The request body (None when too large to buffer: such a request is never re-run)."""
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > self.max_body:
            return None
        stream = environ.get("wsgi.input")
        data: bytes = stream.read(length) if stream is not None and length > 0 else b""
        return data


def _capturer(status: list[Any], out: list[bytes]) -> StartResponse:
    """A start_response that keeps what the application says, for later."""

    def capture(s: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status[:] = [s, list(headers), exc_info]
        return out.append  # the legacy write() callable writes into the buffer

    return capture


def _bookmark_of(environ: dict[str, Any]) -> str | None:
    header = environ.get(_ENVIRON_HEADER)
    if header:
        return str(header)
    cookies = SimpleCookie()
    try:
        cookies.load(environ.get("HTTP_COOKIE", ""))
    except Exception:  # a malformed Cookie header is the client's problem, not an error here
        return None
    morsel = cookies.get(BOOKMARK_COOKIE)
    return morsel.value if morsel is not None else None
