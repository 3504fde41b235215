"""The example apps on a simulated Lambda fleet: failed requests, latency, storage requests.

Runs ``examples/flask_app`` (Flask, Flask-SQLAlchemy, Flask-Login) and ``examples/django_app``
(the Django guestbook) as N = 1, 2, 4, 8 instances against SeaweedFS behind
:class:`lambdalite.testing.s3proxy.FaultProxy`, which adds ``--latency`` seconds (default 20 ms)
to every S3 exchange, as a network between Lambda and S3 would. No fault is injected.

* **Instance**: a process (multiprocessing ``spawn``) with its own cache dir and the app's
  environment pointing it at the remote *through the proxy*. It imports the app's Lambda entry
  point (``examples.flask_app.lambda_handler.handler`` or
  ``lambda_function.lambda_handler``: apig-wsgi and the lambdalite middleware), a cold start,
  then serves one invocation at a time: an API Gateway HTTP API (v2) event in, the handler
  called exactly as Lambda calls it, the response out. No HTTP server.
* **Clients**: as many as instances, each a thread with its own cookie jar, one request in
  flight, each request sent to a random idle instance (a load balancer; Lambda never queues
  behind a busy instance). ``--requests`` requests per client.
* **Flask workload**: register a user (``POST /register``), log in (``POST /login``), then
  ``--actions`` requests each adding a note (``POST /notes``, with ``--write-ratio``) or
  listing them (``GET /notes``), then a new user (at once if the registration or the login
  failed). Register and log in hash the password (scrypt): CPU, not storage.
* **Django workload**: ``GET /`` (it counts the visit: a read-modify-write of a counter, so it
  is a *write* request), ``POST /`` (sign the guestbook) and ``GET /stats`` (the visit count
  and every entry as JSON: the read-only page). The first ``GET /`` gives the CSRF cookie.
  ``manage migrate`` runs once, through the handler of instance 0, before the clients start.

Measured in the instance, around the handler call: wall time, status, and the delta of the
engine's :class:`~lambdalite.replica.stats.StorageStats` (requests by kind). A request that
made a PUT is a **write request**; the others are **read-only**: classified by what the
engine did, not by the URL. *Failed* is a status >= 500 or an exception out of the handler
(the instance's traceback is kept in the JSON). *Re-runs* counts the middleware's "request
re-run after a conflict" log records, *retries* the transaction-level ones
(``retry_on_conflict``, ``retrying_atomic``). *Unexpected* counts answers that are neither a
failure nor what the app answers when everything works (a login that did not find the user
just registered on another instance, a CSRF refusal); *stale reads* counts lists that missed
one of the client's own acknowledged notes or signatures (read-your-writes across instances,
through the middleware's bookmark cookie). At the end the remote is read directly: every
acknowledged note, user and signature must be there once (*lost updates*), and the visit
counter must equal the acknowledged visits. Before the clients start, every instance serves
one read (not counted) so that cold-start pulls are not counted as read costs; cold starts
are in the JSON.

    .venv/bin/python benchmarks/apps.py                          # both apps, N = 1, 2, 4, 8
    .venv/bin/python benchmarks/apps.py --apps flask --instances 2,4 --requests 50
    .venv/bin/python benchmarks/apps.py --latency 0                # no added latency

Prints markdown tables (per app and N; per endpoint) and the issue's goal checked per run (0
failed requests, <= 1 storage request per read-only request, <= 3 per write request); writes
``benchmarks/results/apps.json`` (every request, the failures' tracebacks, the checks) and
``apps.png`` (latency percentiles, storage requests per request and failed requests against
N). ``--debug-log DIR`` writes each instance's ``lambdalite`` DEBUG log, with every storage
request it made (method, key, condition, answer), to ``DIR``. Needs the ``test`` extra
(SeaweedFS, Flask, Django) and the ``bench`` extra (apig-wsgi, matplotlib). Exits with
status 1 when a request failed or an update was lost.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import math
import multiprocessing
import os
import platform
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from http.cookies import CookieError, SimpleCookie
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import RESULTS, backend_remote, log, pyplot

REPO = Path(__file__).resolve().parent.parent
APPS = ("flask", "django")
BUCKET = "lambdalite-apps"
PASSWORD = "correct-horse-battery"
ANSWER_TIMEOUT = 300.0  # seconds an instance may take to answer one invocation
RERUN = "request re-run after a conflict"
RETRY = "conflict on attempt"


# ---------------------------------------------------------------------------- the instance


class _LogWatch(logging.Handler):
    """Counts the middleware's re-runs and the transaction retries; keeps error tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.reruns = 0
        self.retries = 0
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(RERUN):
            self.reruns += 1
        elif message.startswith(RETRY):
            self.retries += 1
        elif record.levelno >= logging.ERROR:
            text = f"{record.name}: {message}"
            if record.exc_info:
                text += "\n" + "".join(traceback.format_exception(*record.exc_info))
            self.errors.append(text)

    def take(self) -> tuple[int, int, list[str]]:
        out = (self.reruns, self.retries, self.errors)
        self.reruns, self.retries, self.errors = 0, 0, []
        return out


class _Context:
    """The fields of Lambda's context object that handlers commonly read."""

    function_name = "lambdalite-apps-benchmark"
    memory_limit_in_mb = 1024

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + 30

    def get_remaining_time_in_millis(self) -> int:
        return int((self._deadline - time.monotonic()) * 1000)


class _KeyLog:
    """``--debug-log``: logs each storage request (method, key, condition) of the engine."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.log = logging.getLogger("lambdalite.bench.storage")

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in ("get", "put", "delete", "list", "get_file", "put_file"):
            return attr

        def logged(*args: Any, **kwargs: Any) -> Any:
            conditions = {k: v for k, v in kwargs.items() if k.startswith("if_")}
            try:
                result = attr(*args, **kwargs)
            except Exception as exc:
                self.log.debug("%s %s %s -> %r", name, args[0], conditions, exc)
                raise
            if name == "get":
                answer = "304" if result is None else f"{len(result.data)} bytes"
            else:
                answer = "ok"
            if args[0] == "manifest" and name in ("get", "put"):
                data = args[1] if name == "put" else getattr(result, "data", None)
                answer += _manifest_summary(data)
            self.log.debug("%s %s %s -> %s", name, args[0], conditions, answer)
            return result

        return logged


def _manifest_summary(data: bytes | None) -> str:
    """`` [version, lease holder and queue]`` of a manifest's bytes, for the debug log."""
    if data is None:
        return ""
    from lambdalite.replica import format as fmt

    m = fmt.decode_manifest(data)
    if m.lease is None:
        return f" [v{m.version}, no lease]"
    left = m.lease.expires_at - time.time()
    queue = ",".join(f"{w.owner}/{w.ticket[:6]}" for w in m.lease.queue)
    return (
        f" [v{m.version}, lease {m.lease.owner}/{m.lease.ticket[:6]} for {left:.1f} s, "
        f"queue: {queue or '-'}]"
    )


def _load_flask() -> tuple[Callable[[dict[str, Any], Any], Any], Any]:
    """Cold start: import the Lambda entry point (creates the app and its tables)."""
    sys.path.insert(0, str(REPO))
    from examples.flask_app import lambda_handler
    from examples.flask_app.models import db

    with lambda_handler.app.app_context():
        raw = db.engine.raw_connection()  # a lambdalite.Connection underneath
        try:
            replica = raw.driver_connection.replica
        finally:
            raw.close()
    return lambda_handler.handler, replica


def _load_django() -> tuple[Callable[[dict[str, Any], Any], Any], Any]:
    """Cold start: import ``lambda_function`` (Django set up, no database access yet)."""
    sys.path.insert(0, str(REPO / "examples" / "django_app"))
    import lambda_function
    from django.db import connection

    connection.ensure_connection()
    return lambda_function.lambda_handler, connection.connection.replica


def instance_main(
    app: str, env: dict[str, str | None], pipe: Connection, debug_log: str | None = None
) -> None:
    """One simulated Lambda instance: cold start, then one invocation at a time from ``pipe``.

    ``debug_log``: a file for the ``lambdalite`` logger at DEBUG (``--debug-log``).
    """
    if debug_log is not None:
        to_file = logging.FileHandler(debug_log)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logging.getLogger("lambdalite").addHandler(to_file)
        logging.getLogger("lambdalite").setLevel(logging.DEBUG)
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    started = time.perf_counter()
    try:
        handler, replica = _load_flask() if app == "flask" else _load_django()
    except BaseException:
        pipe.send({"error": traceback.format_exc()})
        return
    stats = replica.stats
    if debug_log is not None:
        replica.storage.inner = _KeyLog(replica.storage.inner)
    pipe.send({"cold_start_ms": 1000 * (time.perf_counter() - started), "stats": stats.as_dict()})
    watch = _LogWatch()
    logging.getLogger().addHandler(watch)
    for name, level in (
        ("lambdalite.contrib.wsgi", logging.INFO),
        ("lambdalite.contrib.django", logging.DEBUG),
        ("lambdalite.retry", logging.DEBUG),
    ):
        logging.getLogger(name).setLevel(level)
    with contextlib.suppress(KeyboardInterrupt, EOFError):
        while (event := pipe.recv()) is not None:
            watch.take()
            if debug_log is not None:
                logging.getLogger("lambdalite.bench").debug("request %s", event.get("rawPath"))
            before = stats.copy()
            at = time.time()
            t0 = time.perf_counter()
            response: dict[str, Any] | None = None
            error: str | None = None
            try:
                response = handler(event, _Context())
            except Exception:
                error = traceback.format_exc()
            elapsed = time.perf_counter() - t0
            delta = stats.copy() - before
            reruns, retries, errors = watch.take()
            pipe.send(
                {
                    "response": response,
                    "error": error,
                    "errors": errors,
                    "at": at,
                    "latency_ms": 1000 * elapsed,
                    "stats": delta.as_dict(),
                    "reruns": reruns,
                    "retries": retries,
                }
            )


# ---------------------------------------------------------------------------- the fleet


class InstanceDied(Exception):
    """An instance process exited or stopped answering."""


class Instance:
    """The parent's end of one instance process."""

    def __init__(
        self,
        ctx: Any,
        app: str,
        index: int,
        env: dict[str, str | None],
        debug_log: Path | None = None,
    ) -> None:
        self.index = index
        self.pipe, child = ctx.Pipe()
        self.process = ctx.Process(
            target=instance_main,
            args=(app, env, child, str(debug_log) if debug_log else None),
            name=f"{app}-{index}",
            daemon=True,
        )
        self.process.start()
        child.close()
        self.cold: dict[str, Any] = {}

    def receive(self, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        try:
            if not self.pipe.poll(timeout):
                raise InstanceDied(f"instance {self.index} did not answer within {timeout:.0f} s")
            answer: dict[str, Any] = self.pipe.recv()
        except (EOFError, OSError) as exc:
            raise InstanceDied(f"instance {self.index} exited ({exc!r})") from exc
        return answer

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        try:
            self.pipe.send(event)
        except OSError as exc:
            raise InstanceDied(f"instance {self.index} exited ({exc!r})") from exc
        return self.receive()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.pipe.send(None)
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()  # our own child, by its PID
            self.process.join(timeout=5)
        self.pipe.close()


class Fleet:
    """N instances behind a load balancer that sends each request to a random idle one."""

    def __init__(self, instances: list[Instance], seed: int) -> None:
        self.instances = instances
        self.idle = list(instances)
        self.cond = threading.Condition()
        self.rng = random.Random(seed)

    @contextlib.contextmanager
    def pick(self) -> Iterator[Instance]:
        with self.cond:
            while not self.idle:
                if not self.instances:
                    raise InstanceDied("every instance died")
                self.cond.wait()
            instance = self.idle.pop(self.rng.randrange(len(self.idle)))
        try:
            yield instance
        finally:
            with self.cond:
                if instance.process.is_alive():
                    self.idle.append(instance)
                else:  # Lambda would start a new one; here the fleet shrinks (and it shows)
                    self.instances.remove(instance)
                self.cond.notify_all()


# ---------------------------------------------------------------------------- the clients


@dataclass
class Sample:
    """One request as the instance served it."""

    endpoint: str
    instance: int
    at: float  # when the handler was called (epoch seconds)
    status: int | None
    latency_ms: float
    gets: int
    not_modified: int  # GETs answered 304 (no body)
    puts: int
    requests: int
    bytes_down: int
    bytes_up: int
    reruns: int
    retries: int
    expected: bool
    stale: bool = False
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None or self.status is None or self.status >= 500

    @property
    def write(self) -> bool:
        return self.puts > 0


@dataclass
class Answer:
    status: int | None
    location: str
    body: str


@dataclass
class Ledger:
    """What the clients were told succeeded, to check against the remote at the end."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)
    visits: int = 0

    def add(self, what: str, value: str) -> None:
        with self.lock:
            getattr(self, what).append(value)

    def visit(self) -> None:
        with self.lock:
            self.visits += 1


class Client:
    """One browser: a cookie jar, one request at a time, each to a random idle instance."""

    def __init__(self, fleet: Fleet, samples: list[Sample], budget: int) -> None:
        self.fleet = fleet
        self.samples = samples
        self.budget = budget
        self.cookies: dict[str, str] = {}

    def request(
        self,
        endpoint: str,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        *,
        expect: Callable[[Answer], bool],
        headers: dict[str, str] | None = None,
    ) -> tuple[Answer, Sample]:
        self.budget -= 1
        event = _event(method, path, self.cookies, form, headers or {})
        with self.fleet.pick() as instance:
            index = instance.index
            try:
                reply = instance.invoke(event)
            except InstanceDied as exc:
                log(f"    {exc}")
                reply = {"error": str(exc), "latency_ms": math.nan}
        response = reply.get("response") or {}
        status = response.get("statusCode")
        for line in response.get("cookies", ()):
            self._set_cookie(line)
        body = response.get("body") or ""
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        answer = Answer(status, (response.get("headers") or {}).get("location", ""), body)
        counts = reply.get("stats") or {}
        error = reply.get("error")
        if error is None and status is not None and status >= 500:
            error = "\n".join(reply.get("errors") or []) or f"status {status}"
        sample = Sample(
            endpoint=endpoint,
            instance=index,
            at=reply.get("at", time.time()),
            status=status,
            latency_ms=reply["latency_ms"],
            gets=counts.get("gets", 0),
            not_modified=counts.get("not_modified", 0),
            puts=counts.get("puts", 0),
            requests=counts.get("requests", 0),
            bytes_down=counts.get("bytes_down", 0),
            bytes_up=counts.get("bytes_up", 0),
            reruns=reply.get("reruns", 0),
            retries=reply.get("retries", 0),
            expected=error is None and expect(answer),
            error=error,
        )
        self.samples.append(sample)
        return answer, sample

    def _set_cookie(self, line: str) -> None:
        jar = SimpleCookie()
        try:
            jar.load(line)
        except CookieError:
            return
        for name, morsel in jar.items():
            if morsel.value == "" or morsel["max-age"] in ("0", 0):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value


def _event(
    method: str,
    path: str,
    cookies: dict[str, str],
    form: dict[str, str] | None,
    headers: dict[str, str],
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event, as Lambda receives it."""
    now = time.time()
    body = urllib.parse.urlencode(form) if form is not None else ""
    all_headers = {"host": "localhost", "user-agent": "lambdalite-apps-benchmark", **headers}
    if form is not None:
        all_headers["content-type"] = "application/x-www-form-urlencoded"
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": all_headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "localhost",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": all_headers["user-agent"],
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "body": body,
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = [f"{k}={v}" for k, v in cookies.items()]
    return event


def _redirects_to(path: str) -> Callable[[Answer], bool]:
    return lambda a: a.status == 302 and urllib.parse.urlsplit(a.location).path == path


def _ok(a: Answer) -> bool:
    return a.status == 200


def flask_client(
    client: Client, name: str, rng: random.Random, args: argparse.Namespace, ledger: Ledger
) -> None:
    """Users one after the other: register, log in, add and list notes."""
    for user_number in range(1_000_000):
        if client.budget <= 0:
            return
        client.cookies.clear()
        username = f"{name}-u{user_number}"
        form = {"username": username, "password": PASSWORD}
        _, sample = client.request(
            "register", "POST", "/register", form, expect=_redirects_to("/login")
        )
        if not sample.expected:
            continue  # a failed registration: the next user (no cascade of failed logins)
        ledger.add("users", username)
        if client.budget <= 0:
            return
        _, sample = client.request("login", "POST", "/login", form, expect=_redirects_to("/notes"))
        if not sample.expected:
            continue
        mine: list[str] = []
        for i in range(args.actions):
            if client.budget <= 0:
                return
            if rng.random() < args.write_ratio:
                text = f"{username} note {i}"
                _, sample = client.request(
                    "add note", "POST", "/notes", {"text": text}, expect=_redirects_to("/notes")
                )
                if sample.expected:
                    mine.append(text)
                    ledger.add("notes", text)
            else:
                answer, sample = client.request("list notes", "GET", "/notes", expect=_ok)
                sample.stale = sample.expected and any(t not in answer.body for t in mine)


def django_client(
    client: Client, name: str, rng: random.Random, args: argparse.Namespace, ledger: Ledger
) -> None:
    """A visitor: the guestbook page (a counted visit), signatures, and the stats page."""
    mine: list[str] = []
    signed = 0
    while client.budget > 0:
        token = client.cookies.get("csrftoken")
        draw = rng.random()
        if token is None or args.write_ratio / 2 <= draw < args.write_ratio:
            _, sample = client.request("GET / (visit)", "GET", "/", expect=_ok)
            if sample.expected:
                ledger.visit()
        elif draw < args.write_ratio / 2:
            message = f"{name} signature {signed}"
            signed += 1
            _, sample = client.request(
                "POST / (sign)",
                "POST",
                "/",
                {"name": name, "message": message},
                headers={"x-csrftoken": token},
                expect=_redirects_to("/"),
            )
            if sample.expected:
                mine.append(message)
                ledger.add("entries", message)
        else:
            answer, sample = client.request("GET /stats", "GET", "/stats", expect=_ok)
            if sample.expected:
                try:
                    seen = set(json.loads(answer.body)["entries"])
                except (ValueError, KeyError, TypeError):
                    sample.expected = False
                else:
                    sample.stale = any(m not in seen for m in mine)


# ---------------------------------------------------------------------------- one run


def _instance_env(
    app: str, remote: str, proxy: str, cache: Path, index: int
) -> dict[str, str | None]:
    env: dict[str, str | None] = {
        "AWS_ENDPOINT_URL_S3": proxy,  # anything not told otherwise goes through the proxy too
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_PROFILE": None,
        "AWS_SESSION_TOKEN": None,
    }
    cache_dir = cache / f"instance-{index}"
    if app == "flask":
        query = {"remote": remote, "endpoint_url": proxy, "cache_dir": str(cache_dir)}
        env["DATABASE_URL"] = "sqlite+lambdalite:///?" + urllib.parse.urlencode(query)
        env["SECRET_KEY"] = "lambdalite-apps-benchmark"
    else:
        env.update(
            GUESTBOOK_DB=remote,
            GUESTBOOK_CACHE_DIR=str(cache_dir),
            LAMBDALITE_ENDPOINT_URL=proxy,
            DJANGO_SETTINGS_MODULE="guestbook_site.settings",
            DJANGO_DEBUG="0",
            DJANGO_ALLOWED_HOSTS="localhost",
            DJANGO_SECRET_KEY="lambdalite-apps-benchmark",
        )
    return env


def _warm_up(instance: Instance, app: str) -> dict[str, Any]:
    """One read per instance before the clients start (pulls what cold starts missed)."""
    if app == "django":
        event = _event("GET", "/stats", {}, None, {})
    else:  # a failed login: reads the users table
        event = _event("POST", "/login", {}, {"username": "nobody", "password": PASSWORD}, {})
    reply = instance.invoke(event)
    if reply.get("error"):
        raise RuntimeError(f"warm-up of instance {instance.index} failed:\n{reply['error']}")
    return {"latency_ms": reply["latency_ms"], "stats": reply["stats"]}


def run_one(
    app: str, n: int, prefix: str, proxy: str, endpoint: str, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    remote = f"{prefix}/{app}-n{n}"
    cache = work / "cache" / f"{app}-n{n}"
    ctx = multiprocessing.get_context("spawn")
    instances: list[Instance] = []
    samples: list[Sample] = []
    ledger = Ledger()
    row: dict[str, Any] = {"app": app, "instances": n}
    try:
        for i in range(n):
            env = _instance_env(app, remote, proxy, cache, i)
            debug = args.debug_log / f"{app}-n{n}-i{i}.log" if args.debug_log else None
            instances.append(Instance(ctx, app, i, env, debug))
        for instance in instances:  # all cold starts run at once, as after a deploy
            instance.cold = instance.receive()
            if "error" in instance.cold:
                raise RuntimeError(f"cold start failed:\n{instance.cold['error']}")
        if app == "django":
            reply = instances[0].invoke({"manage": ["migrate", "--no-input"]})
            if reply.get("error") or not reply.get("response"):
                raise RuntimeError(f"migrate failed:\n{reply.get('error')}")
        warm = [_warm_up(instance, app) for instance in instances]
        fleet = Fleet(list(instances), args.seed)
        workload = flask_client if app == "flask" else django_client
        threads = []
        started = time.perf_counter()
        for c in range(n):
            client = Client(fleet, samples, args.requests)
            rng = random.Random(f"{args.seed}-{app}-{n}-{c}")
            threads.append(
                threading.Thread(
                    target=_client_thread,
                    args=(workload, client, f"c{c}", rng, args, ledger),
                    name=f"client-{c}",
                    daemon=True,
                )
            )
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        duration = time.perf_counter() - started
    except Exception as exc:
        last = str(exc).strip().splitlines()[-1]
        log(f"  {app}, {n} instances: FAILED: {last}")
        return {**row, "error": str(exc)}
    finally:
        for instance in instances:
            instance.stop()
    check = verify(app, remote, endpoint, work / "verify" / f"{app}-n{n}", ledger)
    row.update(summarize(samples))
    row.update(
        duration_s=round(duration, 2),
        requests_per_second=len(samples) / duration if duration else 0.0,
        check=check,
        lost_updates=check["lost"],
        cold_starts=[i.cold for i in instances],
        warm_up=warm,
        samples=[asdict(s) for s in samples],
    )
    log(
        f"  {app}, {n} instances: {row['requests']} requests, {row['failed']} failed, "
        f"{row['unexpected']} unexpected, {check['lost']} lost, read p50 "
        f"{row['read']['p50_ms']:.0f} ms, write p50 {row['write']['p50_ms']:.0f} ms, storage "
        f"requests {row['read']['storage_requests']:.2f} / read, "
        f"{row['write']['storage_requests']:.2f} / write ({duration:.0f} s)"
    )
    for kind, count in row["failures"].items():
        log(f"    {count} failed: {kind}")
    return row


def _client_thread(
    workload: Callable[..., None],
    client: Client,
    name: str,
    rng: random.Random,
    args: argparse.Namespace,
    ledger: Ledger,
) -> None:
    try:
        workload(client, name, rng, args, ledger)
    except InstanceDied as exc:  # every instance died: the samples so far still count
        log(f"    client {name} stopped: {exc}")


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def _group(samples: list[Sample]) -> dict[str, Any]:
    ok = [s for s in samples if not s.failed]
    latencies = [s.latency_ms for s in ok]
    count = max(len(ok), 1)
    return {
        "requests": len(samples),
        "failed": sum(s.failed for s in samples),
        "p50_ms": _percentile(latencies, 50),
        "p95_ms": _percentile(latencies, 95),
        "p99_ms": _percentile(latencies, 99),
        "max_ms": max(latencies, default=math.nan),
        "storage_requests": sum(s.requests for s in ok) / count if ok else math.nan,
        "gets": sum(s.gets for s in ok) / count if ok else math.nan,
        "puts": sum(s.puts for s in ok) / count if ok else math.nan,
        "max_storage_requests": max((s.requests for s in ok), default=0),
    }


def summarize(samples: list[Sample]) -> dict[str, Any]:
    """Counts, latency percentiles and storage requests, for reads, writes and each endpoint."""
    done = [s for s in samples if not s.failed]
    errors = Counter(s.error for s in samples if s.error)  # whole tracebacks, for the JSON
    return {
        "requests": len(samples),
        "reads": sum(not s.write for s in done),
        "writes": sum(s.write for s in done),
        "failed": sum(s.failed for s in samples),
        "unexpected": sum(not s.expected and not s.failed for s in samples),
        "stale_reads": sum(s.stale for s in samples),
        "reruns": sum(s.reruns for s in samples),
        "rerun_requests": sum(s.reruns > 0 for s in samples),
        "retries": sum(s.retries for s in samples),
        "read": _group([s for s in done if not s.write]),
        "write": _group([s for s in done if s.write]),
        "endpoints": {
            e: {
                **_group([s for s in samples if s.endpoint == e]),
                "writes": sum(s.write for s in samples if s.endpoint == e and not s.failed),
                "unexpected": sum(
                    not s.expected and not s.failed for s in samples if s.endpoint == e
                ),
                "statuses": dict(Counter(str(s.status) for s in samples if s.endpoint == e)),
            }
            for e in sorted({s.endpoint for s in samples})
        },
        "failures": dict(Counter(_failure_kind(s) for s in samples if s.failed).most_common()),
        "errors": [f"{count}x {error}" for error, count in errors.most_common(5)],
    }


def _failure_kind(sample: Sample) -> str:
    """The endpoint and the error's last exception line, numbers left out: failures grouped."""
    lines = [line.strip() for line in (sample.error or "").splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("(Background on this error")]
    raised = [line for line in lines if re.match(r"[\w.]+(Error|Exception)\b.*:", line)]
    last = (raised or lines or [f"status {sample.status}"])[-1]
    return f"{sample.endpoint}: {re.sub(r'[0-9]+', 'N', last)[:300]}"


def verify(app: str, remote: str, endpoint: str, cache: Path, ledger: Ledger) -> dict[str, Any]:
    """Read the remote directly (no proxy): is everything acknowledged there, once?"""
    import lambdalite

    conn = lambdalite.connect(remote, endpoint_url=endpoint, cache_dir=str(cache))
    try:
        if app == "flask":
            notes = Counter(r[0] for r in conn.execute("SELECT text FROM notes"))
            users = Counter(r[0] for r in conn.execute("SELECT username FROM users"))
            lost = [t for t in ledger.notes if t not in notes] + [
                u for u in ledger.users if u not in users
            ]
            out: dict[str, Any] = {
                "notes_acknowledged": len(ledger.notes),
                "notes_in_remote": sum(notes.values()),
                "users_acknowledged": len(ledger.users),
                "users_in_remote": sum(users.values()),
                "duplicates": sum(c - 1 for c in (notes + users).values() if c > 1),
            }
        else:
            entries = Counter(r[0] for r in conn.execute("SELECT message FROM guestbook_entry"))
            row = conn.execute("SELECT count FROM guestbook_visits WHERE page = 'index'")
            visits = (row.fetchone() or (0,))[0]
            lost = [m for m in ledger.entries if m not in entries]
            lost += ["visit"] * max(0, ledger.visits - visits)
            out = {
                "entries_acknowledged": len(ledger.entries),
                "entries_in_remote": sum(entries.values()),
                "visits_acknowledged": ledger.visits,
                "visits_in_remote": visits,
                "duplicates": sum(c - 1 for c in entries.values() if c > 1),
            }
        (integrity,) = conn.execute("PRAGMA integrity_check").fetchone()
    finally:
        conn.close()
    return {**out, "lost": len(lost), "lost_examples": lost[:5], "integrity": integrity}


# ---------------------------------------------------------------------------- output


def _ms(group: dict[str, Any]) -> str:
    if not group["requests"]:
        return "-"
    return f"{group['p50_ms']:.0f} / {group['p95_ms']:.0f} / {group['p99_ms']:.0f}"


def _per(group: dict[str, Any]) -> str:
    if not group["requests"]:
        return "-"
    return f"{group['storage_requests']:.2f} ({group['gets']:.2f} GET, {group['puts']:.2f} PUT)"


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| app | N | requests (read-only / write) | failed | read-only p50 / p95 / p99 ms "
        "| write p50 / p95 / p99 ms | storage requests per read-only request "
        "| per write request | re-runs (retries) | lost updates | unexpected, stale |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            last = r["error"].strip().splitlines()[-1]
            out.append(f"| {r['app']} | {r['instances']} | run failed: {last} ||||||||")
            continue
        out.append(
            f"| {r['app']} | {r['instances']} | {r['requests']} ({r['reads']} / {r['writes']}) "
            f"| {r['failed']} | {_ms(r['read'])} | {_ms(r['write'])} | {_per(r['read'])} "
            f"| {_per(r['write'])} | {r['rerun_requests']} ({r['retries']}) | {r['lost_updates']} "
            f"| {r['unexpected']}, {r['stale_reads']} |"
        )
    return "\n".join(out)


def endpoint_table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| app | N | endpoint | requests | writes | failed | p50 / p95 / p99 ms "
        "| storage requests (max) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for name, e in r.get("endpoints", {}).items():
            out.append(
                f"| {r['app']} | {r['instances']} | {name} | {e['requests']} | {e['writes']} "
                f"| {e['failed']} | {_ms(e)} | {e['storage_requests']:.2f} "
                f"({e['max_storage_requests']}) |"
            )
    return "\n".join(out)


def goals(rows: list[dict[str, Any]]) -> str:
    """The issue's goal, checked: 0 failed at N >= 2, <= 1 request per read, <= 3 per write."""
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"{r['app']} N={r['instances']}: the run failed")
            continue
        misses = []
        if r["failed"]:
            misses.append(f"{r['failed']} failed requests")
        if r["lost_updates"]:
            misses.append(f"{r['lost_updates']} lost updates")
        if r["read"]["requests"] and r["read"]["storage_requests"] > 1:
            misses.append(f"{r['read']['storage_requests']:.3f} storage requests per read")
        if r["write"]["requests"] and r["write"]["storage_requests"] > 3:
            misses.append(f"{r['write']['storage_requests']:.3f} storage requests per write")
        verdict = "met" if not misses else "missed: " + ", ".join(misses)
        lines.append(f"{r['app']} N={r['instances']}: {verdict}")
    return "\n".join(lines)


def _finite(value: Any) -> Any:
    """``value`` with NaN (a percentile of nothing) as None, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Latency percentiles, storage requests per request and failed requests against N."""
    plt = pyplot()
    if plt is None:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    (reads, writes), (storage, failed) = axes
    colors = {"flask": "tab:blue", "django": "tab:green"}
    styles = {"p50_ms": "o-", "p95_ms": "s--", "p99_ms": "^:"}
    good = [r for r in rows if "error" not in r]
    for app in APPS:
        mine = [r for r in good if r["app"] == app]
        if not mine:
            continue
        xs = [r["instances"] for r in mine]
        for ax, kind in ((reads, "read"), (writes, "write")):
            for key, style in styles.items():
                ys = [r[kind][key] for r in mine]
                ax.plot(xs, ys, style, color=colors[app], label=f"{app} {key[:3]}")
        for kind, style in (("read", "o-"), ("write", "s--")):
            ys = [r[kind]["storage_requests"] for r in mine]
            storage.plot(xs, ys, style, color=colors[app], label=f"{app}, per {kind}")
        failed.plot(xs, [r["failed"] for r in mine], "o-", color=colors[app], label=app)
    for goal in (1, 3):
        storage.axhline(goal, color="grey", linewidth=0.8, linestyle=":")
    panels = (
        (reads, "read-only requests", "latency (ms)"),
        (writes, "write requests", "latency (ms)"),
        (storage, "storage requests per request (goal: 1 per read, 3 per write)", "requests"),
        (failed, "failed requests", "requests"),
    )
    counts = sorted({r["instances"] for r in rows})
    for ax, title, unit in panels:
        ax.set_xscale("log", base=2)
        ax.set_xticks(counts, [str(n) for n in counts])
        ax.set_xlabel("instances")
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize="medium")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    writes.set_yscale("log")
    storage.set_yscale("log")
    failed.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _git_commit() -> str | None:
    """The checkout's commit, with ``+dirty`` when src/ has uncommitted changes (or None)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", default="flask,django", help="flask, django (default: both)")
    parser.add_argument("--instances", default="1,2,4,8", help="instance counts (default: 1,2,4,8)")
    parser.add_argument(
        "--requests", type=int, default=200, help="requests per client; clients = instances"
    )
    parser.add_argument(
        "--latency", type=float, default=0.02, help="seconds added per S3 exchange (0.02)"
    )
    parser.add_argument(
        "--write-ratio", type=float, default=0.3, help="share of write actions (0.3)"
    )
    parser.add_argument("--actions", type=int, default=10, help="Flask: requests per user login")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--debug-log", type=Path, help="folder for each instance's lambdalite DEBUG log"
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "apps.json", help="JSON output")
    parser.add_argument("--plot", type=Path, default=RESULTS / "apps.png", help="PNG output")
    args = parser.parse_args()
    apps = [a.strip() for a in args.apps.split(",") if a.strip()]
    try:
        counts = [int(n) for n in args.instances.split(",") if n.strip()]
    except ValueError:
        parser.error("--instances: comma-separated integers")
    if not apps or set(apps) - set(APPS):
        parser.error("--apps: flask, django")
    if not counts or min(counts) < 1 or args.requests < 1 or args.actions < 1:
        parser.error("--instances, --requests and --actions must be at least 1")
    if args.latency < 0 or not 0 <= args.write_ratio <= 1:
        parser.error("--latency must be >= 0 and --write-ratio within 0..1")
    if args.debug_log:
        args.debug_log.mkdir(parents=True, exist_ok=True)
    # Ctrl+C, and a kill, stop the instances, the proxy and SeaweedFS on the way out (also
    # when started in the background, where SIGINT would otherwise be ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    from lambdalite.testing.s3proxy import FaultProxy

    commit = _git_commit()  # the engine moves fast: say which one was measured
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lambdalite-apps-bench-") as tmp:
        work = Path(tmp)
        with backend_remote("s3", work, name=BUCKET) as where:
            if where is None:
                sys.exit("SeaweedFS is needed: pip install -e '.[test]'")
            prefix, endpoint = where
            assert endpoint is not None
            with FaultProxy(endpoint, latency=args.latency, seed=args.seed) as proxy:
                log(
                    f"SeaweedFS at {endpoint}, proxy (+{1000 * args.latency:.0f} ms) at "
                    f"{proxy.endpoint_url}"
                )
                for app in apps:
                    log(f"{app}:")
                    for n in counts:
                        rows.append(
                            run_one(app, n, prefix, proxy.endpoint_url, endpoint, work, args)
                        )
    elapsed = time.perf_counter() - started
    print(table(rows))
    print()
    print(endpoint_table(rows))
    print()
    print(goals(rows))
    meta = {
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "latency_s": args.latency,
        "requests_per_client": args.requests,
        "write_ratio": args.write_ratio,
        "actions_per_login": args.actions,
        "seed": args.seed,
        "commit": commit,
        "seconds": round(elapsed, 1),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_finite({"meta": meta, "results": rows}), indent=2))
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    if plot(rows, args.plot):
        log(f"wrote {args.plot}")
    log(f"wrote {args.json} ({elapsed:.0f} s)")
    if any("error" in r or r["failed"] or r["lost_updates"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted: instances, proxy and SeaweedFS stopped")
        sys.exit(130)
