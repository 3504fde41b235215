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

**Waiting in turn.** A contender that finds the lock held (or others waiting) takes a
ticket: a small file in ``<path>.queue/``, named after its place in line (one more than
the last ticket there), that it keeps an exclusive ``flock`` on while it waits and whose
content says when it last looked (``since``, refreshed once older than half the
expiration). It polls (1 ms growing to 20 ms: a look is a few system calls, not a
request) and takes the ``flock`` on the lock file only when no live ticket is ahead of
its own; a new contender that sees tickets joins the line behind them instead of taking
a lock that just became free. A ticket whose ``flock`` is free belongs to a waiter that
died: it is removed at once; one not refreshed within the expiration (a stopped
process) is skipped. There is no hand-over (a ``flock`` cannot be given to another
process): the first in line takes the lock at its next poll.

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
from lambdalite.locks.base import Backoff, Busy, Lease, LeaseLock

__all__ = ["FileLock"]

logger = logging.getLogger("lambdalite.locks.file")

_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)
_SINCE = 20  # bytes of a ticket's "since" field: fixed width, rewritten in place


class FileLock(LeaseLock):
    """A ``flock`` on the lock file ``key`` (made absolute), lease metadata in ``key.lease``,
    waiters' tickets in ``key.queue/``."""

    def __init__(self, key: str, **kwargs: Any) -> None:
        path = os.path.abspath(os.fspath(key))
        # A look costs a few system calls, not a request: look more often than the others.
        kwargs.setdefault("backoff", Backoff(base=0.001, cap=0.02, floor=0.5))
        super().__init__(path, **kwargs)
        self.path = path
        self.lease_path = path + ".lease"
        self.queue_dir = path + ".queue"
        self.where = f"lock file {path}"
        self._fd: int | None = None
        self._ticket: tuple[int, str] | None = None  # (descriptor holding its flock, name)
        self._ticket_since = 0.0

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
            if exc.errno in _BUSY:
                return None
            raise self._error("lock", exc) from exc
        if not self._still_named(fd):  # broken (removed) between our open and our flock
            os.close(fd)
            return None
        return fd

    # -- primitives ------------------------------------------------------------------------

    # -- the queue of tickets ----------------------------------------------------------------

    def _tickets(self) -> list[str]:
        """The tickets in line, first first (hidden names are tickets being made)."""
        try:
            names = os.listdir(self.queue_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise self._error("list the queue of", exc) from exc
        return sorted(name for name in names if not name.startswith("."))

    def _probe(self, name: str, now: float) -> str | None:
        """The owner of ticket ``name`` if it is live: its waiter holds its ``flock`` and
        looked within the expiration. A ticket whose ``flock`` is free is removed."""
        path = os.path.join(self.queue_dir, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error("open a ticket in the queue of", exc) from exc
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in _BUSY:
                    raise self._error("check a ticket in the queue of", exc) from exc
            else:  # its waiter is gone (the kernel dropped its flock)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                return None
            data = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
        try:
            since = float(data[:_SINCE])
            owner = data[_SINCE + 1 :].decode().strip()
        except (ValueError, UnicodeDecodeError):
            return "(unreadable ticket)"  # being written: its flock says it is alive
        return owner if since + self.expiration >= now else None

    def _ahead(self, now: float) -> list[str]:
        """Owners of the live tickets ahead of ours (all of them if we have none)."""
        mine = self._ticket[1] if self._ticket is not None else None
        ahead = []
        for name in self._tickets():
            if mine is not None and name >= mine:
                break
            owner = self._probe(name, now)
            if owner is not None:
                ahead.append(owner)
        return ahead

    def _ticket_data(self, now: float) -> bytes:
        return f"{now:0{_SINCE}.3f} {self.owner}\n".encode()

    def _join(self, now: float) -> None:
        """Take a ticket: one more than the last one in line, made under a hidden name and
        locked before it gets its real one, so nobody ever sees it unlocked."""
        try:
            os.makedirs(self.queue_dir, exist_ok=True)
            last = 0
            for name in self._tickets():
                with contextlib.suppress(ValueError):
                    last = max(last, int(name.split("-", 1)[0]))
            tmp = os.path.join(self.queue_dir, f".{uuid.uuid4().hex}.tmp")
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise self._error("join the queue of", exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, self._ticket_data(now))
            name = f"{last + 1:016d}-{uuid.uuid4().hex[:8]}"
            os.rename(tmp, os.path.join(self.queue_dir, name))
        except OSError as exc:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._error("join the queue of", exc) from exc
        self._ticket = (fd, name)
        self._ticket_since = now

    def _refresh(self, now: float) -> None:
        assert self._ticket is not None
        try:
            os.pwrite(self._ticket[0], self._ticket_data(now)[:_SINCE], 0)
        except OSError as exc:
            raise self._error("refresh our ticket in the queue of", exc) from exc
        self._ticket_since = now

    def _drop_ticket(self) -> None:
        if self._ticket is not None:
            fd, name = self._ticket
            self._ticket = None
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.queue_dir, name))
            os.close(fd)  # drops its flock

    # -- primitives ------------------------------------------------------------------------

    def _try_acquire(self, now: float) -> Lease | Busy:
        if self._fd is not None and not self._still_named(self._fd):
            self._drop()  # our file was broken: start afresh
        if self._fd is None:
            if self._ticket is not None and not os.path.exists(
                os.path.join(self.queue_dir, self._ticket[1])
            ):
                self._drop_ticket()  # removed (by hand, or the queue was cleared): join again
            ahead = self._ahead(now)
            fd = None if ahead else self._lock_fd()
            if fd is None:
                if self._ticket is None:
                    self._join(now)
                elif self._ticket_since + self.expiration / 2 < now:
                    self._refresh(now)
                record = self._read()
                return Busy(record.lease(self.key) if record else None, len(ahead))
            self._fd = fd
            self._drop_ticket()
        try:
            granted = Record.granted(self._read(), self.owner, now, self.expiration)
            self._write(granted)
        except LockError:
            self._drop()
            raise
        return Lease(self.key, self.owner, granted.generation, granted.expires_at)

    def _leave(self, now: float) -> Lease | None:
        self._drop_ticket()
        return None

    def waiters(self) -> tuple[str, ...]:
        now = self.clock()
        owners = (self._probe(name, now) for name in self._tickets())
        return tuple(owner for owner in owners if owner is not None)

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
        """Close the descriptors; a held ``flock`` goes with them (the record stays until
        the next acquire overwrites it), and so does our ticket, if any."""
        self._drop()
        self._drop_ticket()
