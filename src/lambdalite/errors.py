"""The exception tree of lambdalite.

Every error lambdalite raises is a :class:`LambdaliteError`. The ones a database
call can raise also subclass :class:`sqlite3.OperationalError`, so Django and
SQLAlchemy wrap them in their own ``OperationalError`` natively and retry
middleware that already handles "database is locked" keeps working::

    LambdaliteError
    ├── ConfigurationError (ValueError)            bad URL or option; names the key
    ├── StorageError (sqlite3.OperationalError)    .remote, .key; __cause__ = the SDK error
    │   ├── TransientStorageError                  5xx, throttling, timeouts, S3 409: retryable
    │   │   └── CommitOutcomeUnknownError          the manifest write's fate could not be learned
    │   ├── NotFoundError                          the object (or bucket) does not exist
    │   ├── PreconditionFailedError                a conditional write lost the race
    │   └── CorruptionError                        checksum or format mismatch: never applied
    ├── ConflictError (sqlite3.OperationalError)   another instance committed first: retry
    │   └── LocalCopyError                         the local copy could not be trusted; it was
    │                                              discarded and is pulled again: retry
    ├── BusyError (sqlite3.OperationalError)       another connection of this process kept the
    │                                              database busy longer than ``timeout``
    └── LockError (sqlite3.OperationalError)
        ├── LockTimeoutError (TimeoutError)        .owner, .expires_at of the holder
        └── LockLostError                          lease expired or taken before commit

No SDK exception crosses a storage or lock boundary: each backend translates
its own errors in one function.
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "BusyError",
    "CommitOutcomeUnknownError",
    "ConfigurationError",
    "ConflictError",
    "CorruptionError",
    "LambdaliteError",
    "LocalCopyError",
    "LockError",
    "LockLostError",
    "LockTimeoutError",
    "NotFoundError",
    "PreconditionFailedError",
    "StorageError",
    "TransientStorageError",
]


class LambdaliteError(Exception):
    """Base class of every error raised by lambdalite."""


class ConfigurationError(LambdaliteError, ValueError):
    """A URL, option or setting is invalid. ``key`` names it."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class StorageError(LambdaliteError, sqlite3.OperationalError):
    """The remote could not be read or written.

    ``remote`` is the remote URL, ``key`` the object key (if any). The SDK's own
    exception, when there is one, is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, remote: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.remote = remote
        self.key = key


class TransientStorageError(StorageError):
    """A failure that may go away when retried (5xx, throttling, timeouts, S3 409).

    ``request_sent`` is False only when the request certainly never reached the
    server (the connection could not be made): a write that failed that way
    did not happen. Otherwise a failed write may or may not have taken effect.
    """

    def __init__(
        self,
        message: str,
        *,
        remote: str | None = None,
        key: str | None = None,
        request_sent: bool = True,
    ) -> None:
        super().__init__(message, remote=remote, key=key)
        self.request_sent = request_sent


class CommitOutcomeUnknownError(TransientStorageError):
    """Whether the commit was published cannot be known (yet).

    The manifest write failed in a way that leaves its outcome open (the
    answer was lost, the server answered 5xx after writing, or kept failing),
    and reading the remote back could not prove it either way. The commit may
    be in the remote, exactly once, or not at all, as with any database whose
    connection drops during COMMIT. The local copy was put back to the version
    before and pulls whatever the remote holds; check before retrying a change
    that must not be applied twice.
    """


class NotFoundError(StorageError):
    """The object does not exist."""


class PreconditionFailedError(StorageError):
    """A conditional write or delete lost the race (HTTP 412, or 404 on ``If-Match``)."""


class CorruptionError(StorageError):
    """An object failed its checksum or is not in lambdalite's format. It is never applied."""


class ConflictError(LambdaliteError, sqlite3.OperationalError):
    """Another instance committed first. The transaction left no trace: retry it."""


class LocalCopyError(ConflictError):
    """The local copy could not be trusted, so nothing was published from it.

    Its database file was deleted, replaced, truncated or damaged, or SQLite
    changed it outside a lambdalite transaction. The local copy was discarded
    and is pulled again from the remote; the transaction left no trace
    anywhere: retry it (it is a :class:`ConflictError`, so the retry helpers do).
    """


class BusyError(LambdaliteError, sqlite3.OperationalError):
    """Another connection of this process kept the database busy for longer than ``timeout``.

    The message starts with "database is locked", as SQLite's own does, so code
    that retries on that keeps working.
    """


class LockError(LambdaliteError, sqlite3.OperationalError):
    """Base class of lock failures."""


class LockTimeoutError(LockError, TimeoutError):
    """The lock could not be acquired in time. ``owner`` and ``expires_at`` describe the holder."""

    def __init__(
        self, message: str, *, owner: str | None = None, expires_at: float | None = None
    ) -> None:
        super().__init__(message)
        self.owner = owner
        self.expires_at = expires_at


class LockLostError(LockError):
    """The lease expired or was taken over before commit; the commit was refused."""
