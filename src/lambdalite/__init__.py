"""lambdalite: SQLite for AWS Lambda and other stateless, concurrently scaled hosts.

The database's truth lives in durable shared storage (S3, an S3-compatible
store, or a local folder); each instance works on a local copy, and every
``COMMIT`` is published with a conditional write, so concurrent instances never
lose each other's writes::

    import lambdalite

    conn = lambdalite.connect("s3://my-bucket/app")     # or "file:///srv/app-db"
    with conn:
        conn.execute("INSERT INTO guestbook(name) VALUES (?)", ("Ada",))
    # the commit returned: the row is durable in S3

See the README and ``docs/`` for the guarantees and every option.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from lambdalite.config import Settings
from lambdalite.connection import LEGACY_TRANSACTION_CONTROL, Connection
from lambdalite.cursor import Cursor
from lambdalite.errors import (
    BusyError,
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConflictError,
    CorruptionError,
    LambdaliteError,
    LocalCopyError,
    LockError,
    LockLostError,
    LockTimeoutError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
    TransientStorageError,
)
from lambdalite.replica.engine import EngineOptions, Replica, get_replica
from lambdalite.retry import retry_on_conflict, retrying
from lambdalite.storage import open_storage

if TYPE_CHECKING:
    from lambdalite.locks.base import Lock
    from lambdalite.storage.base import Storage

__all__ = [
    "LEGACY_TRANSACTION_CONTROL",
    "BusyError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "Connection",
    "CorruptionError",
    "Cursor",
    "LambdaliteError",
    "LocalCopyError",
    "LockError",
    "LockLostError",
    "LockTimeoutError",
    "NotFoundError",
    "PreconditionFailedError",
    "Settings",
    "StorageError",
    "TransientStorageError",
    "__version__",
    "connect",
    "retry_on_conflict",
    "retrying",
]

__version__ = "0.1.0"

_SQLITE_ARGS = ("detect_types", "check_same_thread", "cached_statements")


def connect(
    target: str | os.PathLike[str],
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    cache_dir: str | None = None,
    max_staleness: float | None = None,
    timeout: float | None = None,
    isolation_level: str | None = "",
    detect_types: int = 0,
    check_same_thread: bool = True,
    cached_statements: int = 128,
    autocommit: bool | int = LEGACY_TRANSACTION_CONTROL,
    vfs: str | None = None,
    **options: Any,
) -> Connection:
    """Open the database at ``target`` and return a ``sqlite3.Connection``-compatible object.

    ``target`` is the remote: ``file:///abs/folder`` (a local folder: the
    embedded default), ``s3://bucket/prefix`` or ``memory://name`` (an
    in-process fake for tests). Options may also travel in its query string and
    in ``LAMBDALITE_*`` environment variables (see docs/configuration.md);
    keyword arguments win. No I/O happens here: the remote is first contacted
    by the first statement.

    A plain absolute path opens *shared-file mode*: the database file itself on
    a shared filesystem (EFS), written in place under the distributed ``lock``.
    ``vfs`` picks SQLite's VFS there (e.g. ``"unix-dotfile"`` on a filesystem
    whose byte-range locks do not work).

    ``isolation_level``, ``autocommit`` (PEP 249, as in Python 3.12's sqlite3,
    on every Python), ``detect_types``, ``check_same_thread`` and
    ``cached_statements`` mean what they mean for :func:`sqlite3.connect`.
    """
    given: dict[str, Any] = {
        "endpoint_url": endpoint_url,
        "region": region,
        "cache_dir": cache_dir,
        "max_staleness": max_staleness,
        "timeout": timeout,
        **options,
    }
    settings = Settings.build(target, given)
    if settings.mode == "shared-file":
        from lambdalite.shared_file import connect_shared_file

        return connect_shared_file(
            settings,
            vfs=vfs,
            isolation_level=isolation_level,
            detect_types=detect_types,
            check_same_thread=check_same_thread,
            cached_statements=cached_statements,
            autocommit=autocommit,
        )
    if vfs is not None:
        raise ConfigurationError(
            "vfs applies to shared-file mode only (a plain absolute path as the target)",
            key="vfs",
        )
    replica = replica_for(settings)
    return Connection(
        replica,
        isolation_level=isolation_level,
        timeout=settings.timeout,
        max_staleness=settings.max_staleness,
        transaction_mode=settings.transaction_mode,
        detect_types=detect_types,
        check_same_thread=check_same_thread,
        cached_statements=cached_statements,
        autocommit=autocommit,
    )


def replica_for(settings: Settings) -> Replica:
    """The process's engine for a replica-mode ``settings`` (shared by its connections)."""

    def make() -> Replica:
        lock = None
        if settings.lock not in ("none", "manifest"):
            from lambdalite.locks import lock_for_settings

            def lock(storage: Storage) -> Lock:
                return lock_for_settings(settings, storage=storage)

        return Replica(
            settings.remote,
            open_storage(
                settings.remote, endpoint_url=settings.endpoint_url, region=settings.region
            ),
            settings.cache_dir,
            EngineOptions(
                inline_delta_max=settings.inline_delta_max,
                compact_after_deltas=settings.compact_after_deltas,
                compact_after_bytes=settings.compact_after_bytes,
                write_lease=settings.lock == "manifest",
                lease_duration=settings.lock_expiration,
                lease_max_attempts=settings.lock_max_attempts,
            ),
            lock=lock,
        )

    return get_replica(settings.remote, settings.cache_dir, make)
