"""Locks: who should write now (``docs/locks.md``).

A lock is a hint about who should work; only the storage can fence a superseded holder
(:mod:`lambdalite.locks.base`). Backends, by the ``lock`` setting:

==================  ==========================================================  =========
spec                what                                                        ``key``
==================  ==========================================================  =========
``none``            no lock: optimistic only (:mod:`~lambdalite.locks.none`)      any
``file``            ``flock`` on a lock file, one host (:mod:`~.file`)            the path
``s3``/``object``   a lock object on the remote's storage (:mod:`~.object`)       object key
``memory``          in-process, for tests (:mod:`~.memory`)                       any
``dynamodb://T``    an item in DynamoDB table ``T`` (:mod:`~.dynamodb`)           ``pk``
==================  ==========================================================  =========

Crash bound: a holder that dies without releasing blocks the others for at most the
lease ``expiration`` (30 s by default) after its last acquire or renew; with the file
lock, not at all (the kernel drops a dead process's ``flock`` at once).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lambdalite.errors import ConfigurationError
from lambdalite.locks.base import Lease, LeaseLock, Lock

if TYPE_CHECKING:
    from lambdalite.config import Settings
    from lambdalite.storage.base import Storage

__all__ = ["Lease", "Lock", "default_lock_key", "lock_for_settings", "open_lock"]

_SPECS = "manifest, none, file, s3 (or object), memory or dynamodb://TABLE"


def open_lock(
    spec: str,
    *,
    key: str,
    storage: Storage | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    expiration: float = 30.0,
    max_attempts: int | None = None,
    clock: Callable[[], float] = time.time,
    owner: str | None = None,
) -> Lock:
    """The lock ``spec`` names, on ``key``. No I/O happens until the first call.

    ``storage`` is needed by ``s3``/``object``; ``endpoint_url`` and ``region`` are used by
    ``dynamodb://`` (else boto3's default chain: ``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_REGION``).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"invalid lock {spec!r}: expected {_SPECS}", key="lock")
    if not isinstance(key, str) or not key:
        raise ConfigurationError(f"invalid lock key {key!r}: expected a non-empty string",
                                 key="lock_key")
    if not (isinstance(expiration, int | float) and 0 < expiration < float("inf")):
        raise ConfigurationError(
            f"invalid lock expiration {expiration!r}: expected seconds > 0", key="lock_expiration"
        )
    if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
        raise ConfigurationError(
            f"invalid lock max attempts {max_attempts!r}: expected an integer >= 1 (or None: "
            "as many as the timeout allows)",
            key="lock_max_attempts",
        )
    common: dict[str, Any] = {
        "expiration": expiration, "max_attempts": max_attempts, "clock": clock, "owner": owner
    }
    text = spec.strip()
    kind = text.lower()
    lock: LeaseLock
    if kind == "none":
        from lambdalite.locks.none import NoLock

        lock = NoLock(key, **common)
    elif kind == "memory":
        from lambdalite.locks.memory import MemoryLock

        lock = MemoryLock(key, **common)
    elif kind == "file":
        from lambdalite.locks.file import FileLock

        lock = FileLock(key, **common)
    elif kind in ("s3", "object"):
        if storage is None:
            raise ConfigurationError(
                f"lock {text!r} keeps its lock object on the remote: a storage is needed",
                key="lock",
            )
        from lambdalite.locks.object import ObjectLock

        lock = ObjectLock(storage, key, **common)
    elif kind == "manifest":
        if storage is None:
            raise ConfigurationError(
                "lock 'manifest' is the write lease in the remote's manifest: a storage is needed",
                key="lock",
            )
        from lambdalite.locks.manifest import ManifestLease

        return ManifestLease(storage, expiration=expiration)
    elif kind.startswith("dynamodb://"):
        from lambdalite.locks.dynamodb import DynamoDBLock

        table = text[len("dynamodb://"):]
        lock = DynamoDBLock(table, key, endpoint_url=endpoint_url, region=region, **common)
    else:
        raise ConfigurationError(f"unknown lock {spec!r}: expected {_SPECS}", key="lock")
    return lock


def default_lock_key(settings: Settings, lock: str | None = None) -> str:
    """The lock key used when ``lock_key`` is not set (the engine and the CLI both use this);
    ``lock`` overrides ``settings.lock`` (the CLI's ``--lock object`` on a folder remote).

    * shared-file mode: ``database#<absolute path>`` (django-sqlite-efs's item key), or for
      the file lock the lock file ``<absolute path>.lock``;
    * replica mode: for ``s3``/``object``, the object ``lock`` under the remote prefix; for
      ``file``, a lock file named after the remote in the system temporary directory; for the
      others ``<remote>#lock``.
    """
    kind = (lock or settings.lock).strip().lower()
    if settings.mode == "shared-file":
        database = os.path.abspath(settings.database or settings.remote)
        return database + ".lock" if kind == "file" else "database#" + database
    if kind in ("s3", "object"):
        return "lock"
    if kind == "file":
        digest = hashlib.sha256(settings.remote.encode()).hexdigest()[:16]
        return os.path.join(tempfile.gettempdir(), "lambdalite-locks", f"{digest}.lock")
    return f"{settings.remote}#lock"


def lock_for_settings(
    settings: Settings,
    *,
    storage: Storage | None = None,
    clock: Callable[[], float] = time.time,
    owner: str | None = None,
    endpoint_url: str | None = None,
) -> Lock:
    """The lock ``settings`` describe (``lock_key`` or :func:`default_lock_key`).

    ``settings.endpoint_url`` is the S3 endpoint, so it is not passed to DynamoDB: point the
    DynamoDB lock elsewhere with ``endpoint_url`` or ``AWS_ENDPOINT_URL_DYNAMODB``.
    """
    return open_lock(
        settings.lock,
        key=settings.lock_key or default_lock_key(settings),
        storage=storage,
        endpoint_url=endpoint_url,
        region=settings.region,
        expiration=settings.lock_expiration,
        max_attempts=settings.lock_max_attempts,
        clock=clock,
        owner=owner,
    )
