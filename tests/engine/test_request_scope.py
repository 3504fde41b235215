"""Request-scoped consistency, bookmarks and the WSGI middleware (issue 9 items 3 to 5)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest

import lambdalite
from lambdalite.contrib.wsgi import BOOKMARK_HEADER, LambdaliteMiddleware, no_retry_view
from lambdalite.scope import no_retry, parse_bookmarks, request_scope
from tests.engine.conftest import Instance


def _table(instance: Instance) -> lambdalite.Connection:
    setup = instance("setup", isolation_level=None)
    setup.execute("CREATE TABLE t(x INTEGER)")
    setup.execute("INSERT INTO t VALUES (0)")
    return setup


def test_one_freshness_check_per_request(instance: Instance) -> None:
    _table(instance)
    a = instance("a", isolation_level=None)
    stats = a.replica.stats
    with request_scope():
        before = stats.requests
        for _ in range(5):  # five transactions, one round trip
            assert a.execute("SELECT count(*) FROM t").fetchone() == (1,)
        assert stats.requests == before + 1
    with request_scope():  # the next request checks again
        before = stats.requests
        a.execute("SELECT count(*) FROM t")
        a.execute("SELECT count(*) FROM t")
        assert stats.requests == before + 1
    before = stats.requests  # outside a request: one check per transaction
    a.execute("SELECT count(*) FROM t")
    a.execute("SELECT count(*) FROM t")
    assert stats.requests == before + 2


def test_a_request_reads_its_own_writes_and_nothing_older(instance: Instance) -> None:
    _table(instance)
    a, b = instance("a", isolation_level=None), instance("b", isolation_level=None)
    with request_scope() as scope:
        assert a.execute("SELECT max(x) FROM t").fetchone() == (0,)
        b.execute("INSERT INTO t VALUES (1)")  # another instance, mid-request
        assert a.execute("SELECT max(x) FROM t").fetchone() == (0,)  # one version per request
        a.execute("INSERT INTO t VALUES (2)")  # a write is checked against the newest version
        assert sorted(x for (x,) in a.execute("SELECT x FROM t")) == [0, 1, 2]
        assert scope.written  # and it leaves a bookmark
    assert parse_bookmarks(scope.bookmark_after())


def test_a_bookmark_reads_what_the_client_wrote_on_any_instance(instance: Instance) -> None:
    _table(instance)
    writer = instance("writer", isolation_level=None)
    reader = instance("reader", isolation_level=None, max_staleness=3600)
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)  # confirmed: stale ok
    with request_scope() as scope:
        writer.execute("INSERT INTO t VALUES (1)")
    bookmark = scope.bookmark_after()
    assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)  # no bookmark: stale
    with request_scope(bookmark):
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (2,)
    with request_scope("garbage,,x.y.z"):  # a bad bookmark is ignored, never an error
        reader.execute("SELECT count(*) FROM t")


# ---------------------------------------------------------------------------- the WSGI middleware


def _call(
    app: Any, path: str = "/", body: bytes = b"", cookie: str = ""
) -> tuple[str, dict[str, str], bytes]:
    environ = {
        "REQUEST_METHOD": "POST" if body else "GET",
        "PATH_INFO": path,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "HTTP_COOKIE": cookie,
    }
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, headers
        return lambda data: None

    out = b"".join(app(environ, start_response))
    headers: dict[str, str] = {}
    for name, value in got["headers"]:
        headers[name] = value
    return got["status"], headers, out


def _counter_app(
    conn: lambdalite.Connection, meanwhile: Callable[[], None] | None, runs: list[int]
) -> Callable[..., Iterable[bytes]]:
    """A read-modify-write view; ``meanwhile`` runs between its read and its write, once."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        runs.append(1)
        amount = json.loads(environ["wsgi.input"].read() or b"1")
        try:
            conn.execute("BEGIN")
            (x,) = conn.execute("SELECT max(x) FROM t").fetchone()
            if meanwhile is not None and len(runs) == 1:
                meanwhile()
            if environ["PATH_INFO"] == "/side-effect":
                no_retry()
            conn.execute("INSERT INTO t VALUES (?)", (x + amount,))
            conn.commit()
        except lambdalite.ConflictError:
            if conn.in_transaction:
                conn.rollback()
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"conflict"]
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(x + amount).encode()]

    return app


def test_a_request_that_conflicted_is_run_again(instance: Instance) -> None:
    _table(instance)
    a, b = instance("a", isolation_level=None), instance("b", isolation_level=None)
    runs: list[int] = []
    app = LambdaliteMiddleware(
        _counter_app(a, lambda: b.execute("INSERT INTO t VALUES (10)"), runs)
    )
    status, headers, body = _call(app, body=b"5")
    assert (status, body) == ("200 OK", b"15")  # the re-run read b's row and used the body again
    assert len(runs) == 2
    assert BOOKMARK_HEADER in headers and "lambdalite_bookmark=" in headers["Set-Cookie"]
    assert sorted(x for (x,) in b.execute("SELECT x FROM t")) == [0, 10, 15]


def test_a_request_with_side_effects_is_never_run_again(instance: Instance) -> None:
    _table(instance)
    a, b = instance("a", isolation_level=None), instance("b", isolation_level=None)
    runs: list[int] = []
    app = LambdaliteMiddleware(
        _counter_app(a, lambda: b.execute("INSERT INTO t VALUES (10)"), runs)
    )
    status, _headers, _body = _call(app, path="/side-effect", body=b"5")
    assert status.startswith("500") and len(runs) == 1


def test_the_bookmark_cookie_makes_the_next_request_read_the_write(instance: Instance) -> None:
    _table(instance)
    writer = instance("writer", isolation_level=None)
    reader = instance("reader", isolation_level=None, max_staleness=3600)
    reader.execute("SELECT 0 FROM t")

    def read_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        (n,) = reader.execute("SELECT count(*) FROM t").fetchone()
        start_response("200 OK", [])
        return [str(n).encode()]

    runs: list[int] = []
    _status, headers, _body = _call(LambdaliteMiddleware(_counter_app(writer, None, runs)))
    cookie = headers["Set-Cookie"].split(";")[0]
    assert _call(LambdaliteMiddleware(read_app))[2] == b"1"  # another client: stale is fine
    assert _call(LambdaliteMiddleware(read_app), cookie=cookie)[2] == b"2"


def test_no_retry_view_decorator(instance: Instance) -> None:
    seen: list[bool | None] = []

    @no_retry_view
    def view() -> None:
        from lambdalite.scope import current_scope

        scope = current_scope()
        seen.append(scope.retry if scope is not None else None)

    with request_scope():
        view()
    view()  # outside a request: nothing to do
    assert seen == [False, None]


def test_middleware_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        LambdaliteMiddleware(lambda e, s: [], attempts=0)


def test_a_route_that_conflicted_waits_its_turn_from_the_start(instance: Instance) -> None:
    """After a conflict on ``POST /items/<id>``, the next request of that route (any id) takes
    the write lease at BEGIN: another instance's commit between its read and its write no
    longer makes it conflict and run twice. Other routes keep the deferred path."""
    _table(instance)
    a, b = instance("a", isolation_level=None), instance("b", isolation_level=None)
    runs: list[int] = []
    app = LambdaliteMiddleware(
        _counter_app(a, lambda: b.execute("INSERT INTO t VALUES (10)"), runs)
    )
    assert _call(app, path="/items/1", body=b"5")[0] == "200 OK"
    assert len(runs) == 2  # conflicted, re-run
    assert app.routes.contended(app.routes.key("POST", "/items/2"))
    assert not app.routes.contended(app.routes.key("POST", "/other"))

    def meanwhile() -> None:  # another instance tries to write while we hold the lease
        with pytest.raises(lambdalite.LockTimeoutError):
            b.execute("INSERT INTO t VALUES (20)")

    b.close()
    b = instance("b2", isolation_level=None, timeout=0.2)
    runs.clear()
    app.app = _counter_app(a, meanwhile, runs)
    assert _call(app, path="/items/2", body=b"1")[0] == "200 OK"
    assert len(runs) == 1  # it held the lease from BEGIN: no conflict, one run
    assert sorted(x for (x,) in a.execute("SELECT x FROM t")) == [0, 10, 15, 16]

    forgetful = LambdaliteMiddleware(_counter_app(a, None, runs), contended_memory=0)
    forgetful.routes.conflicted(forgetful.routes.key("POST", "/items/1"))
    assert not forgetful.routes.contended(forgetful.routes.key("POST", "/items/1"))


def test_a_transaction_that_starts_by_writing_needs_no_freshness_check(
    instance: Instance,
) -> None:
    """With the write lease, the claim (a conditional write of the manifest) is the freshness
    check: an uncontended BEGIN IMMEDIATE ... COMMIT on a fresh local copy is two requests,
    and a read after it in the same request costs nothing."""
    _table(instance)
    a = instance("a", isolation_level=None)
    a.execute("SELECT 1 FROM t")  # warm
    stats = a.replica.stats
    with request_scope():
        before = stats.requests
        a.execute("BEGIN IMMEDIATE")
        a.execute("INSERT INTO t VALUES (1)")
        a.commit()
        assert a.execute("SELECT count(*) FROM t").fetchone() == (2,)
        assert stats.requests - before == 2  # claim, publish
    other = instance("other", isolation_level=None)
    other.execute("INSERT INTO t VALUES (2)")  # a's copy is now behind
    with request_scope():
        a.execute("BEGIN IMMEDIATE")  # the claim is refused (412), then read and made again
        assert a.execute("SELECT count(*) FROM t").fetchone() == (3,)  # and it caught up
        a.execute("INSERT INTO t VALUES (3)")
        a.commit()
    assert other.execute("SELECT count(*) FROM t").fetchone() == (4,)
