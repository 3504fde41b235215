"""A fault-injecting, latency-adding S3 reverse proxy, for chaos tests and benchmarks.

::

    from lambdalite.testing.s3proxy import FaultProxy

    with FaultProxy(server.endpoint_url, seed=7, latency=0.02) as proxy:
        s3 = boto3.client("s3", endpoint_url=proxy.endpoint_url)
        proxy.set_rates({"reset_after": 0.05, "error_before": 0.02}, methods={"PUT"})
        proxy.script("error_after", method="PUT", key_pattern=r"manifest")
        ...
        assert proxy.counts()["error_after"] == 1

:class:`FaultProxy` is a real HTTP/1.1 server on a loopback socket that passes
every request of a real S3 client (boto3) to a real S3-compatible server (the
*upstream*) and the answer back, byte for byte: the ``Host`` header too, so
SigV4 signatures stay valid. Nothing in boto3 is mocked; what the client sees
is what a network between it and S3 can do to it. Each client connection gets
its own thread and its own persistent upstream connection (keep-alive on both
sides). ``Expect: 100-continue`` is answered by the proxy itself, and the
request goes upstream without it. Only the standard library is used.

Latency: ``latency`` seconds are added before each answer, and once more before
a ``100 Continue`` interim answer, so a PUT with ``Expect: 100-continue`` costs
two latencies, as over a real WAN. It can be changed while the proxy runs.

Faults (:class:`FaultKind`), decided once per request, and what each simulates:

* ``error_before``: answers ``503 SlowDown`` (S3's XML error) without forwarding;
  S3 throttling. Nothing reaches the server.
* ``error_500_before``: answers ``500 InternalError`` without forwarding; an S3
  front end failing before the write.
* ``reset_before``: closes the client connection with a TCP RST without
  forwarding; a load balancer dropping the connection. Nothing was written.
* ``reset_after``: forwards, reads the whole upstream answer, then resets the
  client connection without answering: the write landed, the answer was lost
  (the ambiguous outcome every commit protocol must survive).
* ``error_after``: forwards, discards the upstream answer and answers ``500
  InternalError``: the write landed but the client is told it failed.
* ``delay``: forwards, then stalls ``delay`` seconds (default 1.0) before
  answering; a slow request, or one that outlives the client's read timeout.
* ``trickle``: forwards, then sends the response body in small pieces
  (``trickle_bytes`` every few milliseconds, ``trickle_duration`` seconds in
  all, default 0.25); the answer is correct, only slow. Large bodies are cut in
  bigger pieces so that the total stays near ``trickle_duration``.
* ``truncate``: forwards, sends the status line and headers (with the real
  ``Content-Length``) and only the first half of the body, then closes the
  connection; a connection lost mid-download. An answer without a body (HEAD,
  204, most PUTs) is cut in the middle of its status line instead (Python's
  ``http.client`` takes headers cut between two lines for a complete answer).

Faults come from two sources. :meth:`FaultProxy.script` appends entries to a
FIFO, for deterministic tests: a request that matches the head entry's
``method`` and ``key_pattern`` consumes it and gets its fault. Otherwise, the
random rates set by :meth:`FaultProxy.set_rates` apply to requests matching its
filter (``methods``, and ``key_pattern`` searched in the object key): one draw
of a ``random.Random(seed)`` per matching request, under a lock, so the same
seed and the same sequence of requests give the same faults. Scripted faults do
not consume random draws. :meth:`FaultProxy.clear` removes both.

Every request is recorded in :attr:`FaultProxy.log` (a :class:`ProxiedRequest`
each: method, bucket, key, query, the upstream's status or ``None`` if the
request was not forwarded, the status the client got or ``None`` if the
connection was reset or cut, the fault, bytes in each direction), and
:meth:`FaultProxy.counts` counts the faults injected.

Object keys are parsed from path-style URLs (``/bucket/key``), which boto3 uses
for an IP-address endpoint such as the proxy's. The upstream must be plain
``http://``.

From a shell (prints the endpoint URL on one line, serves until SIGTERM or
SIGINT)::

    python -m lambdalite.testing.s3proxy --upstream http://127.0.0.1:8333 \\
        --latency 0.02 --seed 7 --rate reset_after=0.05 --rate error_before=0.02
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import logging
import math
import random
import re
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import FrameType, TracebackType
from urllib.parse import unquote, urlsplit

from lambdalite.errors import ConfigurationError

__all__ = ["FaultKind", "FaultProxy", "ProxiedRequest", "main"]

logger = logging.getLogger("lambdalite.testing.s3proxy")

_MAX_LINE = 65536
_MAX_HEADERS = 256
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TRICKLE_TICK = 0.004  # the shortest pause between two trickled pieces
_DRAIN_SECONDS = 2.0  # how long a closing client connection is read for its EOF


class FaultKind(StrEnum):
    """What :class:`FaultProxy` does to one request (see the module docstring)."""

    ERROR_BEFORE = "error_before"
    ERROR_500_BEFORE = "error_500_before"
    RESET_BEFORE = "reset_before"
    RESET_AFTER = "reset_after"
    ERROR_AFTER = "error_after"
    DELAY = "delay"
    TRICKLE = "trickle"
    TRUNCATE = "truncate"


_NOT_FORWARDED = frozenset(
    {FaultKind.ERROR_BEFORE, FaultKind.ERROR_500_BEFORE, FaultKind.RESET_BEFORE}
)


@dataclass(frozen=True, slots=True)
class ProxiedRequest:
    """One request that went through the proxy, recorded when its exchange ended."""

    method: str
    bucket: str
    key: str
    """The object key (URL-decoded path after the bucket); ``""`` for bucket requests."""
    query: str
    status: int | None
    """The upstream's status; ``None`` if the request was not forwarded (or upstream failed)."""
    client_status: int | None
    """The status the client got; ``None`` if its connection was reset or cut short."""
    fault: FaultKind | None
    bytes_up: int
    """Request body bytes received from the client (without chunked framing)."""
    bytes_down: int
    """Response body bytes sent to the client (with chunked framing, if any)."""
    expect_continue: bool
    """Whether the client sent ``Expect: 100-continue``."""


@dataclass(frozen=True, slots=True)
class _ScriptEntry:
    kind: FaultKind | None
    method: str | None
    pattern: re.Pattern[str] | None
    before: Callable[[], None] | None = None

    def matches(self, method: str, key: str) -> bool:
        if self.method is not None and method != self.method:
            return False
        return self.pattern is None or self.pattern.search(key) is not None


class _ProtocolError(Exception):
    """A peer broke HTTP/1.1 framing, or closed in the middle of a message."""


@dataclass(frozen=True, slots=True)
class _Head:
    """A request or status line and its headers, with the raw bytes as received."""

    start: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    raw: bytes

    def get(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def without(self, name: bytes) -> bytes:
        """The raw head with every ``name`` header line left out."""
        lines = self.raw.split(b"\r\n")
        kept = [lines[0]] + [
            line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() != name
        ]
        return b"\r\n".join(kept)

    def wants_close(self) -> bool:
        tokens = {t.strip().lower() for t in (self.get(b"connection") or b"").split(b",")}
        words = self.start.split()
        if words and b"HTTP/1.0" in (words[0], words[-1]):  # a status line or a request line
            return b"keep-alive" not in tokens
        return b"close" in tokens


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    head: _Head
    body: bytes
    """The raw body as received (with chunked framing, if any)."""
    until_close: bool
    """The body had no length and ended with the connection."""


def _read_head(rfile: io.BufferedReader, *, first: bool = False) -> _Head | None:
    """Read a start line and headers; ``None`` on a clean EOF before the first byte."""
    raw = bytearray()
    line = rfile.readline(_MAX_LINE)
    while line in (b"\r\n", b"\n"):  # stray empty lines before a request are allowed
        line = rfile.readline(_MAX_LINE)
    if not line:
        if first:
            return None
        raise _ProtocolError("connection closed before a message")
    start = line.rstrip(b"\r\n")
    raw += start + b"\r\n"
    headers: list[tuple[bytes, bytes]] = []
    while True:
        line = rfile.readline(_MAX_LINE)
        if not line:
            raise _ProtocolError("connection closed in the middle of headers")
        if not line.endswith(b"\n"):
            raise _ProtocolError("header line too long")
        raw += line
        if line in (b"\r\n", b"\n"):
            break
        name, sep, value = line.partition(b":")
        if not sep or len(headers) >= _MAX_HEADERS:
            raise _ProtocolError(f"bad header line {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    return _Head(start, tuple(headers), bytes(raw))


def _read_exact(rfile: io.BufferedReader, size: int) -> bytes:
    data = rfile.read(size)
    if len(data) != size:
        raise _ProtocolError(f"connection closed after {len(data)} of {size} body bytes")
    return data


def _read_chunked(rfile: io.BufferedReader) -> tuple[bytes, int]:
    """A chunked body as received (framing and trailers included), and its payload size."""
    raw = bytearray()
    payload = 0
    while True:
        line = rfile.readline(_MAX_LINE)
        if not line.endswith(b"\n"):
            raise _ProtocolError("connection closed in a chunk header")
        raw += line
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _ProtocolError(f"bad chunk header {line[:80]!r}") from None
        if size == 0:
            while True:  # trailers, then the empty line
                line = rfile.readline(_MAX_LINE)
                if not line.endswith(b"\n"):
                    raise _ProtocolError("connection closed in chunked trailers")
                raw += line
                if line in (b"\r\n", b"\n"):
                    return bytes(raw), payload
        raw += _read_exact(rfile, size + 2)
        payload += size


def _content_length(head: _Head) -> int | None:
    value = head.get(b"content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise _ProtocolError(f"bad Content-Length {value!r}") from None
    if length < 0:
        raise _ProtocolError(f"bad Content-Length {value!r}")
    return length


def _is_chunked(head: _Head) -> bool:
    return b"chunked" in (head.get(b"transfer-encoding") or b"").lower()


def _read_request_body(rfile: io.BufferedReader, head: _Head) -> tuple[bytes, int]:
    if _is_chunked(head):
        return _read_chunked(rfile)
    length = _content_length(head) or 0
    return _read_exact(rfile, length), length


def _read_response(rfile: io.BufferedReader, method: str) -> _Response:
    """Read one final response (interim 1xx answers are skipped)."""
    while True:
        head = _read_head(rfile)
        assert head is not None
        parts = head.start.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise _ProtocolError(f"bad status line {head.start[:80]!r}")
        status = int(parts[1])
        if status >= 200:
            break
    if method == "HEAD" or status in (204, 304):
        return _Response(status, head, b"", until_close=False)
    if _is_chunked(head):
        body, _ = _read_chunked(rfile)
        return _Response(status, head, body, until_close=False)
    length = _content_length(head)
    if length is not None:
        return _Response(status, head, _read_exact(rfile, length), until_close=False)
    return _Response(status, head, rfile.read(), until_close=True)


def _close_socket(sock: socket.socket, rfile: io.BufferedReader | None, *, reset: bool) -> None:
    """Close ``sock`` (and its reader); with ``reset``, abort it with a TCP RST."""
    if reset:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
    if rfile is not None:
        with contextlib.suppress(OSError):
            rfile.close()
    with contextlib.suppress(OSError):
        sock.close()


def _drain(sock: socket.socket) -> None:
    """Half-close ``sock`` and discard what the peer still sends, until it closes too.

    Closing a socket with unread data in it sends a RST, which can destroy the
    answer just sent before the client reads it (a body it sent although it was
    refused, say). So the client's side is read until its EOF, for a short while.
    """
    deadline = time.monotonic() + _DRAIN_SECONDS
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break


class _Upstream:
    """One persistent connection to the upstream server, reopened when it drops."""

    def __init__(self, proxy: FaultProxy) -> None:
        self._proxy = proxy
        self._sock: socket.socket | None = None
        self._rfile: io.BufferedReader | None = None

    def exchange(self, request: bytes, method: str) -> _Response:
        """Send ``request`` and read the final response; retry once on a stale connection."""
        for attempt in (1, 2):
            reused = self._sock is not None
            if self._sock is None:
                self._connect()
            assert self._sock is not None and self._rfile is not None
            try:
                self._sock.sendall(request)
                response = _read_response(self._rfile, method)
            except (OSError, _ProtocolError) as exc:
                self.close()
                if reused and attempt == 1:
                    logger.debug("upstream connection dropped (%s); reconnecting", exc)
                    continue
                raise
            if response.until_close or response.head.wants_close():
                self.close()
            return response
        raise AssertionError("unreachable")

    def _connect(self) -> None:
        host, port = self._proxy._upstream_address
        sock = socket.create_connection((host, port), timeout=self._proxy.upstream_timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._proxy._track(sock)
        self._sock = sock
        self._rfile = sock.makefile("rb")

    def close(self) -> None:
        if self._sock is not None:
            self._proxy._untrack(self._sock)
            _close_socket(self._sock, self._rfile, reset=False)
        self._sock = None
        self._rfile = None


class FaultProxy:
    """An HTTP/1.1 reverse proxy to the S3 server at ``upstream`` that injects faults.

    The constructor does no I/O; :meth:`start` binds ``host:port`` (port 0: a
    free one) and serves in daemon threads; :meth:`stop` closes every socket.
    ``latency``, ``delay``, ``trickle_bytes`` and ``trickle_duration`` can be
    changed while it runs.
    """

    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 0,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        delay: float = 1.0,
        trickle_bytes: int = 64,
        trickle_duration: float = 0.25,
        upstream_timeout: float = 60.0,
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ConfigurationError(
                f"upstream must be an http://host[:port] URL, not {upstream!r}", key="upstream"
            )
        if parts.path not in ("", "/") or parts.query:
            raise ConfigurationError(
                f"upstream must have no path or query: {upstream!r}", key="upstream"
            )
        for name, value in (
            ("latency", latency),
            ("delay", delay),
            ("trickle_duration", trickle_duration),
        ):
            if value < 0:
                raise ConfigurationError(f"{name} must be >= 0, not {value}", key=name)
        if trickle_bytes < 1:
            raise ConfigurationError("trickle_bytes must be >= 1", key="trickle_bytes")
        self.upstream = upstream
        self.latency = latency
        """Seconds added before each answer (and before each ``100 Continue``)."""
        self.delay = delay
        """Seconds a ``delay`` fault stalls, on top of ``latency``."""
        self.trickle_bytes = trickle_bytes
        """The size of a trickled piece (larger for large bodies, see the module docstring)."""
        self.trickle_duration = trickle_duration
        """How long a ``trickle`` fault takes to send a body."""
        self.upstream_timeout = upstream_timeout
        self._upstream_address = (parts.hostname, parts.port or 80)
        self._bind = (host, port)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._rates: dict[FaultKind, float] = {}
        self._methods: frozenset[str] | None = None
        self._key_pattern: re.Pattern[str] | None = None
        self._script: deque[_ScriptEntry] = deque()
        self._log: list[ProxiedRequest] = []
        self._counts: Counter[FaultKind] = Counter()
        self._request_ids = itertools.count(1)
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._accept_thread: threading.Thread | None = None
        self._threads: set[threading.Thread] = set()
        self._sockets: set[socket.socket] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        """Bind and start serving; returns ``self``."""
        if self._listener is not None or self._stopping.is_set():
            raise RuntimeError("a FaultProxy can be started once")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(self._bind)
            listener.listen(128)
            listener.settimeout(0.5)  # the accept loop also notices stop() on its own
        except OSError:
            listener.close()
            raise
        host, port = listener.getsockname()[:2]
        self._listener = listener
        self._address = (str(host), int(port))
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"s3proxy-accept-{port}", daemon=True
        )
        self._accept_thread.start()
        logger.info("S3 fault proxy %s -> %s", self.endpoint_url, self.upstream)
        return self

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets = list(self._sockets)
            threads = list(self._threads)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        for thread in threads:
            thread.join(timeout=2)
        if listener is not None:
            logger.info("S3 fault proxy %s stopped", self.endpoint_url)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        """``http://host:port`` of the proxy (after :meth:`start`)."""
        if self._address is None:
            raise RuntimeError("the proxy has no address before start()")
        return f"http://{self._address[0]}:{self._address[1]}"

    # -- faults ----------------------------------------------------------------------------

    def set_rates(
        self,
        rates: Mapping[str, float],
        *,
        methods: Iterable[str] | None = None,
        key_pattern: str | None = None,
    ) -> None:
        """Replace the random fault rates (probability per request, summing to at most 1).

        Only requests whose method is in ``methods`` (all if ``None``) and whose
        object key matches ``key_pattern`` (``re.search``; all if ``None``) are
        subject to random faults, and only they draw from the random generator.
        """
        parsed: dict[FaultKind, float] = {}
        for name, rate in rates.items():
            kind = _fault_kind(name, key="rates")
            if not 0 <= rate <= 1:
                raise ConfigurationError(
                    f"rate of {name} must be in [0, 1], not {rate}", key="rates"
                )
            parsed[kind] = float(rate)
        if sum(parsed.values()) > 1 + 1e-9:
            raise ConfigurationError("fault rates must sum to at most 1", key="rates")
        pattern = _compile(key_pattern)
        with self._lock:
            self._rates = parsed
            self._methods = None if methods is None else frozenset(m.upper() for m in methods)
            self._key_pattern = pattern
        logger.debug("fault rates %s (methods %s, keys %r)", parsed, methods, key_pattern)

    def script(
        self,
        kind: str | None,
        *,
        method: str | None = None,
        key_pattern: str | None = None,
        count: int = 1,
        before: Callable[[], None] | None = None,
    ) -> None:
        """Inject ``kind`` into the next ``count`` requests matching ``method`` and the key.

        Entries are consumed in order: a request gets the fault of the oldest
        pending entry if it matches that entry, and no scripted fault otherwise.
        ``kind=None`` injects nothing (the entry only orders ``before``).
        ``before`` is called, in the proxy's thread, when a request consumes the
        entry and before anything is forwarded: a test makes something happen
        at an exact point of a client's sequence (another instance commits
        between a write whose answer was lost and the writer's next request).
        """
        if count < 0:
            raise ConfigurationError(f"count must be >= 0, not {count}", key="count")
        entry = _ScriptEntry(
            None if kind is None else _fault_kind(kind, key="kind"),
            None if method is None else method.upper(),
            _compile(key_pattern),
            before,
        )
        with self._lock:
            self._script.extend([entry] * count)

    def clear(self) -> None:
        """Remove the random rates, their filter and every pending scripted fault."""
        with self._lock:
            self._rates = {}
            self._methods = None
            self._key_pattern = None
            self._script.clear()

    @property
    def pending(self) -> int:
        """How many scripted faults are still waiting for a matching request."""
        with self._lock:
            return len(self._script)

    @property
    def log(self) -> list[ProxiedRequest]:
        """A copy of the record of every request answered (or cut) so far, in that order."""
        with self._lock:
            return list(self._log)

    def counts(self) -> Counter[FaultKind]:
        """How many faults of each kind were injected so far."""
        with self._lock:
            return Counter(self._counts)

    def _decide(self, method: str, key: str) -> FaultKind | None:
        kind, before = self._draw(method, key)
        if before is not None:
            before()
        return kind

    def _draw(self, method: str, key: str) -> tuple[FaultKind | None, Callable[[], None] | None]:
        before = None
        with self._lock:
            if self._script and self._script[0].matches(method, key):
                entry = self._script.popleft()
                kind: FaultKind | None = entry.kind
                before = entry.before
            elif (
                self._rates
                and (self._methods is None or method in self._methods)
                and (self._key_pattern is None or self._key_pattern.search(key) is not None)
            ):
                draw = self._rng.random()
                kind = None
                total = 0.0
                for candidate in FaultKind:  # a fixed order: the same draw, the same fault
                    total += self._rates.get(candidate, 0.0)
                    if draw < total:
                        kind = candidate
                        break
            else:
                kind = None
            if kind is not None:
                self._counts[kind] += 1
            return kind, before

    # -- serving ---------------------------------------------------------------------------

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)
        if self._stopping.is_set():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _untrack(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        ids = itertools.count(1)
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stopping.is_set():
                    break
                logger.warning("accept failed: %s", exc)
                self._stopping.wait(0.05)
                continue
            conn.settimeout(None)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(
                target=self._serve, args=(conn,), name=f"s3proxy-conn-{next(ids)}", daemon=True
            )
            with self._lock:
                self._threads.add(thread)
            self._track(conn)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        rfile = conn.makefile("rb")
        upstream = _Upstream(self)
        reset = False
        try:
            while not self._stopping.is_set():
                keep, reset = self._exchange(conn, rfile, upstream)
                if not keep:
                    break
        except (OSError, _ProtocolError) as exc:
            logger.debug("client connection ended: %s", exc)
        finally:
            upstream.close()
            if not reset:
                _drain(conn)
            self._untrack(conn)
            _close_socket(conn, rfile, reset=reset)
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _ProtocolError("proxy stopped")

    def _exchange(
        self, conn: socket.socket, rfile: io.BufferedReader, upstream: _Upstream
    ) -> tuple[bool, bool]:
        """Serve one request; returns (keep the connection, reset it).

        The request is recorded before the last byte of its answer leaves, so a
        client that got its answer finds it in :attr:`log`.
        """
        head = _read_head(rfile, first=True)
        if head is None:
            return False, False
        parts = head.start.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            raise _ProtocolError(f"bad request line {head.start[:80]!r}")
        method = parts[0].decode("ascii", "replace").upper()
        bucket, key, query = _parse_target(parts[1].decode("latin-1"))
        expect = (head.get(b"expect") or b"").lower() == b"100-continue"
        has_body = _is_chunked(head) or bool(_content_length(head))
        close = head.wants_close()
        fault = self._decide(method, key)
        if fault is not None:
            logger.debug("injecting %s into %s /%s/%s", fault, method, bucket, key)

        def record(status: int | None, client_status: int | None, up: int, down: int) -> None:
            entry = ProxiedRequest(
                method, bucket, key, query, status, client_status, fault, up, down, expect
            )
            with self._lock:
                self._log.append(entry)

        if fault in _NOT_FORWARDED:
            up = 0
            if expect and has_body:
                close = True  # a final answer instead of 100 Continue: the body never comes
            else:
                up = _read_request_body(rfile, head)[1]
            self._sleep(self.latency)
            if fault is FaultKind.RESET_BEFORE:
                record(None, None, up, 0)
                return False, True
            status = 503 if fault is FaultKind.ERROR_BEFORE else 500
            answer, sent = self._error_answer(status, method, bucket, key, close=close)
            record(None, status, up, sent)
            conn.sendall(answer)
            return not close, False

        if expect:
            self._sleep(self.latency)
            conn.sendall(_CONTINUE)
        body, up = _read_request_body(rfile, head)
        request = (head.without(b"expect") if expect else head.raw) + body
        try:
            response = upstream.exchange(request, method)
        except (OSError, _ProtocolError) as exc:
            logger.warning("upstream %s failed for %s %s: %s", self.upstream, method, key, exc)
            self._sleep(self.latency)
            answer, sent = self._error_answer(502, method, bucket, key, close=True)
            record(None, 502, up, sent)
            conn.sendall(answer)
            return False, False
        close = close or response.until_close or response.head.wants_close()

        self._sleep(self.latency)
        if fault is FaultKind.RESET_AFTER:
            record(response.status, None, up, 0)
            return False, True
        if fault is FaultKind.ERROR_AFTER:
            answer, sent = self._error_answer(500, method, bucket, key, close=close)
            record(response.status, 500, up, sent)
            conn.sendall(answer)
            return not close, False
        if fault is FaultKind.TRUNCATE:
            down = len(response.body) // 2
            if response.body:
                answer = response.head.raw + response.body[:down]
            else:  # cut the status line: http.client takes a head cut between lines for whole
                answer = response.head.raw[: max(1, len(response.head.start) // 2)]
            record(response.status, None, up, down)
            conn.sendall(answer)
            return False, False
        if fault is FaultKind.DELAY:
            self._sleep(self.delay)
        record(response.status, response.status, up, len(response.body))
        if fault is FaultKind.TRICKLE:
            conn.sendall(response.head.raw)
            self._trickle(conn, response.body)
        else:
            conn.sendall(response.head.raw + response.body)
        return not close, False

    def _trickle(self, conn: socket.socket, body: bytes) -> None:
        duration = self.trickle_duration
        if not body:
            self._sleep(duration)
            return
        piece = self.trickle_bytes
        most = max(1, int(duration / _TRICKLE_TICK))
        if math.ceil(len(body) / piece) > most:
            piece = math.ceil(len(body) / most)
        pieces = math.ceil(len(body) / piece)
        pause = duration / pieces
        for offset in range(0, len(body), piece):
            self._sleep(pause)
            conn.sendall(body[offset : offset + piece])

    def _error_answer(
        self, status: int, method: str, bucket: str, key: str, *, close: bool
    ) -> tuple[bytes, int]:
        """An S3 XML error answer, and the size of its body on the wire (none for HEAD)."""
        code, reason, message = _ERRORS[status]
        request_id = f"s3proxy-{next(self._request_ids)}"
        resource = f"/{bucket}/{key}" if key else f"/{bucket}"
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{_xml_escape(resource)}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amz-request-id: {request_id}\r\n"
            f"Date: {time.strftime('%a, %d %b %Y %H:%M:%S GMT', time.gmtime())}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        ).encode()
        if method == "HEAD":
            return head, 0
        return head + body, len(body)


_ERRORS: dict[int, tuple[str, str, str]] = {
    500: ("InternalError", "Internal Server Error", "We encountered an internal error."),
    502: ("BadGateway", "Bad Gateway", "The S3 fault proxy could not reach the upstream."),
    503: ("SlowDown", "Slow Down", "Please reduce your request rate."),
}


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _parse_target(target: str) -> tuple[str, str, str]:
    """Bucket, object key (URL-decoded) and query of a path-style request target."""
    if not target.startswith("/"):  # absolute form, as sent to a forward proxy
        parts = urlsplit(target)
        path, query = parts.path or "/", parts.query
    else:
        path, _, query = target.partition("?")
    bucket, _, key = path.lstrip("/").partition("/")
    return unquote(bucket), unquote(key), query


def _fault_kind(name: str, *, key: str) -> FaultKind:
    try:
        return FaultKind(name)
    except ValueError:
        known = ", ".join(k.value for k in FaultKind)
        raise ConfigurationError(f"unknown fault kind {name!r}; known: {known}", key=key) from None


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigurationError(f"bad key_pattern {pattern!r}: {exc}", key="key_pattern") from exc


def _parse_rate(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError(text)
        return _fault_kind(name.strip(), key="rate").value, float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected kind=probability, got {text!r}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: serve a proxy until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m lambdalite.testing.s3proxy",
        description="A fault-injecting, latency-adding reverse proxy for an S3 server. "
        "Prints its endpoint URL on one line, then serves until SIGTERM or SIGINT. "
        f"Fault kinds: {', '.join(k.value for k in FaultKind)}.",
    )
    parser.add_argument("--upstream", required=True, help="the S3 server, http://host:port")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: a free one)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per answer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random faults (0)")
    parser.add_argument(
        "--rate",
        type=_parse_rate,
        action="append",
        default=[],
        metavar="KIND=P",
        help="probability of a random fault per request (repeatable)",
    )
    parser.add_argument("--method", action="append", help="random faults only for this method")
    parser.add_argument("--key-pattern", help="random faults only for keys matching this regex")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds of a delay fault (1.0)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(message)s",
    )
    try:
        proxy = FaultProxy(
            args.upstream,
            seed=args.seed,
            latency=args.latency,
            host=args.host,
            port=args.port,
            delay=args.delay,
        )
        if args.rate:
            proxy.set_rates(dict(args.rate), methods=args.method, key_pattern=args.key_pattern)
    except ConfigurationError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with proxy:
        print(proxy.endpoint_url, flush=True)
        while not stop.wait(0.5):
            pass
    counts = proxy.counts()
    logger.info(
        "served %d requests; faults: %s", len(proxy.log), dict(counts) if counts else "none"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
