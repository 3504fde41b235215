"""Request-scoped consistency and bookmarks (DESIGN §8), the model being Cloudflare D1's sessions.

Outside a scope every transaction checks the remote for a newer version (one
conditional GET; ``max_staleness`` relaxes it). Inside a :func:`request_scope`
the check happens once, at the first statement of the request that reads the
database, and the rest of the request trusts it:

* every read in the request sees a version at least as new as the request's
  start, and the request's own writes (a commit advances the local copy);
* versions never go backwards within the request; a process that serves one
  request at a time (AWS Lambda) reads one version per request, plus its own
  writes; with several threads, another request's pull may move the local
  copy forward between two of this request's transactions;
* a **bookmark** (the version a client last wrote, carried in a cookie or a
  header by the middleware) makes the request read at least that version,
  whichever instance serves it: read-your-writes across instances;
* a write transaction is always checked against the newest version (the write
  lease or the conditional write of the manifest), whatever the scope says.

The framework integrations open the scope for you: the Django middleware, the
WSGI middleware (:mod:`lambdalite.contrib.wsgi`), and, without a middleware,
Django's ``request_started``/``request_finished`` signals.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "Bookmark",
    "ContendedRoutes",
    "RequestScope",
    "current_scope",
    "immediate_transactions",
    "no_retry",
    "request_scope",
    "wants_immediate",
]

_MAX_BOOKMARKS = 8
_ITEM = re.compile(r"([0-9a-f]{8})\.([0-9a-f]{1,64})\.([0-9]{1,19})")


def remote_key(remote: str) -> str:
    """Eight hex digits naming a remote in a bookmark (the URL itself stays private)."""
    return hashlib.sha256(remote.encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Bookmark:
    """The newest version a client wrote to one remote: ``lineage`` and ``version``."""

    remote: str  # remote_key() of the remote's URL
    lineage: str
    version: int

    def __str__(self) -> str:
        return f"{self.remote}.{self.lineage}.{self.version}"


def parse_bookmarks(text: str | None) -> dict[str, Bookmark]:
    """Bookmarks from a cookie or header value; anything malformed is ignored, never an error."""
    out: dict[str, Bookmark] = {}
    for item in (text or "").replace(" ", "").split(",")[:_MAX_BOOKMARKS]:
        m = _ITEM.fullmatch(item)
        if m:
            out[m.group(1)] = Bookmark(m.group(1), m.group(2), int(m.group(3)))
    return out


def format_bookmarks(bookmarks: dict[str, Bookmark]) -> str:
    return ",".join(str(b) for b in list(bookmarks.values())[:_MAX_BOOKMARKS])


@dataclass(slots=True)
class RequestScope:
    """One request (see the module docstring)."""

    started: float = field(default_factory=time.monotonic)
    bookmarks: dict[str, Bookmark] = field(default_factory=dict)
    written: dict[str, Bookmark] = field(default_factory=dict)  # what this request committed
    conflicts: int = 0  # ConflictErrors raised in this request (the retry middlewares read it)
    retry: bool = True  # False: the request has effects outside the database (see no_retry)
    immediate: bool = False  # every transaction waits its turn to write at BEGIN (a re-run)

    def at_least(self, remote: str, lineage: str | None) -> int:
        """The version this request must read at least, by its bookmark (0: none)."""
        b = self.bookmarks.get(remote_key(remote))
        return b.version if b is not None and b.lineage == lineage else 0

    def wrote(self, remote: str, lineage: str, version: int) -> None:
        key = remote_key(remote)
        self.written[key] = Bookmark(key, lineage, version)

    def bookmark_after(self) -> str | None:
        """The bookmark to give the client: its old ones, updated with this request's writes."""
        if not self.written:
            return None
        return format_bookmarks({**self.bookmarks, **self.written})


_ID_SEGMENT = re.compile(r"[^/]*[0-9][^/]*")


class ContendedRoutes:
    """Routes whose requests conflicted lately on this instance (the middlewares' memory).

    A request that read and then wrote conflicts when another instance wrote in between;
    the middleware re-runs it with every transaction taking the write lease at ``BEGIN``.
    On a busy route that is the common case, and the first run is wasted: its round trips,
    and a conflict. So the middleware remembers the route (method and path shape, ids
    folded: ``POST /notes/#``) for ``memory`` seconds, and runs its next requests that way
    from the start: they wait their turn instead of conflicting. A route that stops
    conflicting is forgotten, and its requests take the lease at their first write again
    (which holds it for less time).
    """

    def __init__(self, memory: float = 60.0, size: int = 512) -> None:
        if memory < 0:
            raise ValueError("memory must be >= 0 seconds")
        self.memory = memory
        self.size = size
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def key(method: str, path: str) -> str:
        """``METHOD /path/shape``: path segments with a digit in them become ``#``."""
        return f"{method.upper()} {_ID_SEGMENT.sub('#', path)[:200]}"

    def contended(self, key: str) -> bool:
        with self._lock:
            until = self._until.get(key)
            if until is None:
                return False
            if until < time.monotonic():
                del self._until[key]
                return False
            return True

    def conflicted(self, key: str) -> None:
        if self.memory <= 0:
            return
        with self._lock:
            self._until.pop(key, None)
            self._until[key] = time.monotonic() + self.memory
            while len(self._until) > self.size:
                del self._until[next(iter(self._until))]


_scope: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "lambdalite_request_scope", default=None
)


def current_scope() -> RequestScope | None:
    """The request being served in this context, if a scope is open."""
    return _scope.get()


_immediate: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lambdalite_immediate", default=False
)


@contextlib.contextmanager
def immediate_transactions() -> Iterator[None]:
    """Every transaction begun inside takes the write lease at ``BEGIN`` (``BEGIN IMMEDIATE``).

    The retry helpers run their second and later attempts inside it: the attempt
    waits its turn before it reads, so it cannot conflict again.
    """
    token = _immediate.set(True)
    try:
        yield
    finally:
        _immediate.reset(token)


def wants_immediate() -> bool:
    """Whether a transaction begun now should take the write lease at ``BEGIN``."""
    if _immediate.get():
        return True
    scope = _scope.get()
    return scope is not None and scope.immediate


def no_retry() -> None:
    """Never re-run the request being served: it has effects outside the database (an email
    sent, a payment made). Call it from a view before such an effect; outside a request it
    does nothing."""
    scope = _scope.get()
    if scope is not None:
        scope.retry = False


@contextlib.contextmanager
def request_scope(
    bookmarks: str | None = None, *, immediate: bool = False
) -> Iterator[RequestScope]:
    """Serve one request with request-scoped consistency (``bookmarks``: the client's).

    ``immediate``: the request's transactions take the write lease at ``BEGIN`` (as ``BEGIN
    IMMEDIATE``), so they cannot conflict: a re-run after a conflict, or a request on a route
    that conflicted lately (:class:`ContendedRoutes`).
    """
    scope = RequestScope(bookmarks=parse_bookmarks(bookmarks), immediate=immediate)
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


def open_scope(bookmarks: str | None = None) -> contextvars.Token[RequestScope | None]:
    """Open a scope without a ``with`` block (signal handlers); :func:`close_scope` ends it."""
    return _scope.set(RequestScope(bookmarks=parse_bookmarks(bookmarks)))


def close_scope(token: contextvars.Token[RequestScope | None]) -> None:
    with contextlib.suppress(ValueError):  # opened in another context: nothing to undo here
        _scope.reset(token)
