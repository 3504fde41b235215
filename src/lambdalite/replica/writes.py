"""Writes whose answer may be lost: created once, settled by reading back.

The commit path sends each write itself (the S3 backend never lets the SDK
retry a conditional write, see :mod:`lambdalite.storage.s3`) and uses these:

* :func:`create_once` makes an immutable object under a unique key. After an
  unanswered attempt, a later attempt refused because the key exists is our
  own earlier attempt exactly when the object holds our bytes.
* :func:`settle_by_reading` reads the manifest back after an unanswered
  manifest write and asks :func:`~lambdalite.replica.chain.settle` what
  became of it; a remote that cannot be read back gives ``unknown``.
"""

from __future__ import annotations

import random
import time

from lambdalite.errors import (
    CorruptionError,
    PreconditionFailedError,
    StorageError,
    TransientStorageError,
)
from lambdalite.replica import format as fmt
from lambdalite.replica.chain import Read, Verdict, read_manifest, settle
from lambdalite.storage.base import Storage

__all__ = ["ATTEMPTS", "backoff", "create_once", "read_quietly", "settle_by_reading"]

ATTEMPTS = 6  # sends of one write before giving up
_READS = 3  # reads of the manifest when settling
_SETTLE_SEGMENTS = 64  # archived manifests a settle may walk back


def backoff(attempt: int) -> None:
    """Sleep before attempt ``attempt + 1``: capped exponential backoff with jitter."""
    time.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + random.random() / 2))


def create_once(storage: Storage, key: str, data: bytes, *, attempts: int = ATTEMPTS) -> None:
    """Create object ``key`` (a key no one else writes) holding ``data``, retrying until it is.

    Raises the last TransientStorageError when every attempt failed (the
    object may or may not exist: an orphan for ``lambdalite gc`` at worst).
    """
    error: StorageError | None = None
    for attempt in range(attempts):
        try:
            storage.put(key, data, if_none_match=True)
            return
        except PreconditionFailedError as exc:
            blob = storage.get(key)  # an earlier attempt of ours landed after all?
            if blob is not None and blob.data == data:
                return
            raise CorruptionError(
                f"{key!r} exists with other content, although its name is unique",
                remote=storage.url,
                key=key,
            ) from exc
        except TransientStorageError as exc:
            error = exc
            backoff(attempt)
    assert error is not None
    raise error


def settle_by_reading(
    storage: Storage,
    *,
    nonce: str,
    version: int,
    base: fmt.Manifest | None,
    base_etag: str | None,
) -> Verdict:
    """Read the manifest back and settle the unanswered write of ``version`` with ``nonce``."""
    why = "the remote could not be read back"
    for attempt in range(_READS):
        try:
            return settle(
                storage,
                read_manifest(storage),
                nonce=nonce,
                version=version,
                base=base,
                base_etag=base_etag,
                remote=storage.url,
                max_segments=_SETTLE_SEGMENTS,
            )
        except TransientStorageError as exc:
            why = f"the remote could not be read back ({exc})"
            backoff(attempt)
        except StorageError as exc:
            return Verdict("unknown", None, f"the remote could not be read back ({exc})")
    return Verdict("unknown", None, why)


def read_quietly(storage: Storage) -> Read | None:
    """The manifest, or None if there is none or it cannot be read now."""
    try:
        return read_manifest(storage)
    except StorageError:
        return None
