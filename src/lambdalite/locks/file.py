"""The local file lock: ``flock`` on a lock file, for one host (the embedded default).

``key`` is the path of the lock file. The lock is an exclusive :func:`fcntl.flock` on it,
held through an open file descriptor for as long as the lease lasts. The lease's
metadata (owner, generation, expiry) is written next to it, in ``<path>.lease``
(JSON, replaced atomically), so that :meth:`FileLock.inspect` and ``lambdalite lock
show`` can name the holder and the next holder can bump the generation.

What expiry means here. The kernel holds a ``flock`` for a live process and drops it the
moment the process dies (``SIGKILL`` included), so:

* a crashed holder blocks nobody: the next acquire succeeds at once, without waiting for
  the lease to expire (its stale ``.lease`` record is simply overwritten);
* a live holder past its expiry (a stopped or very slow process) keeps the lock: nobody
  takes it over. Expiry only matters to the holder itself: :meth:`~LeaseLock.renew` and
  :meth:`~LeaseLock.ensure` refuse an expired lease with ``LockLostError`` (the holder
  should then roll back and :meth:`~LeaseLock.release`, which frees the ``flock``).

:meth:`FileLock.break_` removes the lock file: the old holder keeps a ``flock`` on a
file that no longer has a name, the next acquire creates a new one, and the old
holder's next renew or ensure finds its file replaced and raises ``LockLostError``.
Acquire checks, after locking, that the path still names the file it locked, so a
break racing an acquire never lets two holders in.

A ``flock`` is shared with children forked while it is held; fork before acquiring.
On NFS, Linux emulates ``flock`` with byte-range locks; on a network filesystem prefer
the DynamoDB lock (``docs/locks.md``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import uuid
from typing import Any

from lambdalite.errors import LockError
from lambdalite.locks._record import Record, decode, encode
from lambdalite.locks.base import Busy, Lease, LeaseLock

__all__ = ["FileLock"]

logger = logging.getLogger("lambdalite.locks.file")


class FileLock(LeaseLock):
    """A ``flock`` on the lock file ``key`` (made absolute), lease metadata in ``key.lease``."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        path = os.path.abspath(os.fspath(key))
        super().__init__(path, **kwargs)
        self.path = path
        self.lease_path = path + ".lease"
        self.where = f"lock file {path}"
        self._fd: int | None = None

    # -- files -----------------------------------------------------------------------------

    def _error(self, action: str, exc: OSError) -> LockError:
        return LockError(f"cannot {action} the {self.where}: {exc.strerror or exc}")

    def _read(self) -> Record | None:
        try:
            with open(self.lease_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("read the lease record of", exc) from exc
        try:
            return decode(data)
        except ValueError as exc:
            # The flock is the truth; a torn or foreign record only loses the generation.
            logger.warning("ignoring unreadable lease record %s: %s", self.lease_path, exc)
            return None

    def _write(self, record: Record) -> None:
        tmp = f"{self.lease_path}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, encode(record))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.lease_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._error("write the lease record of", exc) from exc

    def _still_named(self, fd: int) -> bool:
        """Does ``path`` still name the file ``fd`` locked (not removed by a break)?"""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)

    def _drop(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor drops the flock

    def _lock_fd(self) -> int | None:
        """A descriptor holding the flock on ``path``, or ``None`` if another holds it."""
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise self._error("open", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return None
            raise self._error("lock", exc) from exc
        if not self._still_named(fd):  # broken (removed) between our open and our flock
            os.close(fd)
            return None
        return fd

    # -- primitives ------------------------------------------------------------------------

    def _try_acquire(self, now: float) -> Lease | Busy:
        if self._fd is not None and not self._still_named(self._fd):
            self._drop()  # our file was broken: start afresh
        if self._fd is None:
            fd = self._lock_fd()
            if fd is None:
                record = self._read()
                return Busy(record.lease(self.key) if record else None)
            self._fd = fd
        try:
            granted = Record.granted(self._read(), self.owner, now, self.expiration)
            self._write(granted)
        except LockError:
            self._drop()
            raise
        return Lease(self.key, self.owner, granted.generation, granted.expires_at)

    def _held(self, lease: Lease) -> Record | None:
        """The record if this object still holds the flock for ``lease``, else ``None``."""
        if self._fd is None or not self._still_named(self._fd):
            return None
        record = self._read()
        return record if record is not None and record.holds(lease) else None

    def _renew(self, lease: Lease, now: float) -> Lease:
        if self._held(lease) is None:
            record = self._read()
            raise self._lost(lease, record.lease(self.key) if record else None, "renew")
        renewed = Record(lease.owner, lease.generation, now + self.expiration)
        self._write(renewed)
        return Lease(self.key, lease.owner, lease.generation, renewed.expires_at)

    def _release(self, lease: Lease, now: float) -> None:
        if self._fd is not None and not self._still_named(self._fd):
            self._drop()  # broken: the flock we hold guards nothing any more
        record = self._read()
        if self._fd is not None and (record is None or record.holds(lease)):
            # We hold the flock; a missing record (deleted by hand) is ours to rewrite.
            try:
                self._write(Record(None, lease.generation, 0.0))
            finally:
                self._drop()
            return
        if self._fd is None and record is not None and record.released_after(lease):
            return  # released already
        raise self._lost(lease, record.lease(self.key) if record else None, "release")

    def inspect(self) -> Lease | None:
        record = self._read()
        if record is None or record.owner is None:
            return None
        if self._fd is None and self._flock_is_free():
            return None  # a stale record: its holder died without releasing
        return record.lease(self.key)

    def _flock_is_free(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        except OSError as exc:
            raise self._error("open", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def break_(self) -> Lease | None:
        previous = self.inspect()
        record = self._read()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error("remove", exc) from exc
        if record is not None and record.owner is not None:
            self._write(record.free())
        if previous is not None:
            logger.warning("broke %s held by %s", self.where, previous.owner)
        return previous

    def close(self) -> None:
        """Close the descriptor; a held ``flock`` goes with it (the record stays until the
        next acquire overwrites it)."""
        self._drop()
