"""The gate: which connections of the process hold a snapshot of the local copy, and when not.

A *holder* is a connection with an open snapshot (a transaction, or a cursor
with rows left). Pages are only written into the local copy when no other
connection holds a snapshot (:meth:`Gate.exclusive`). A statement that would
*take* a snapshot passes the gate, which is closed while a commit is being
published (:meth:`Gate.close_for_commit`) and while a repair is pending
(:meth:`Gate.defer`), so no connection ever reads a local commit that the
remote does not have, nor a local copy that is about to be repaired.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from lambdalite.errors import BusyError

__all__ = ["Gate"]


class Gate:
    """Holders of snapshots of one local copy, and the gate in front of them."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.RLock())
        self._holders: dict[int, int] = {}  # connection token -> thread id
        self._starting = 0  # statements between begin_statement and end_statement
        self._busy = False  # a commit is being published, or exclusive access is held
        self._pending: Callable[[], None] | None = None  # a repair waiting for no holders

    # ------------------------------------------------------------------ statements

    def begin_statement(self, token: int, timeout: float, version: Callable[[], int]) -> int | None:
        """Called before a statement of connection ``token`` runs.

        A connection that holds no snapshot yet waits while a commit is being
        published or a repair is pending, then becomes a holder; the version
        its snapshot will see is returned. A holder passes straight through (None).
        """
        with self.cond:
            if token in self._holders:
                return None
            deadline = time.monotonic() + timeout
            while self._busy or self._pending is not None:
                if self._pending is not None and self._run_pending(exclude=token):
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BusyError(
                        "database is locked: another connection of this process is publishing a "
                        "commit or holds an open cursor (raise `timeout` or finish that cursor)"
                    )
                self.cond.wait(remaining)
            self._starting += 1
            self._holders[token] = threading.get_ident()
            return version()

    def end_statement(self, established: int | None) -> None:
        if established is None:
            return
        with self.cond:
            self._starting -= 1
            self.cond.notify_all()

    def release(self, token: int) -> None:
        """Connection ``token`` no longer holds a snapshot."""
        with self.cond:
            if self._holders.pop(token, None) is not None:
                if self._pending is not None and not self._holders:
                    self._run_pending(exclude=None)
                self.cond.notify_all()

    def is_holder(self, token: int) -> bool:
        with self.cond:
            return token in self._holders

    def quiet(self) -> bool:
        """No commit is being published and no repair waits (``cond`` held by the caller).

        Only then does every committed WAL frame belong to the published version.
        """
        return not self._busy and self._pending is None

    # ------------------------------------------------------------------ writers and repairs

    @contextlib.contextmanager
    def exclusive(self, token: int | None, timeout: float) -> Iterator[bool]:
        """Close the gate and wait until no other connection holds a snapshot.

        Yields False (and changes nothing) when that cannot happen in time, or
        at once when a holder is in the calling thread (it could never finish).
        """
        me = threading.get_ident()
        deadline = time.monotonic() + timeout
        with self.cond:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    yield False
                    return
                self.cond.wait(remaining)
            self._busy = True
            try:
                while True:
                    others = {t: th for t, th in self._holders.items() if t != token}
                    if self._starting == 0 and not others and self._run_pending(exclude=token):
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or me in others.values():
                        yield False
                        return
                    self.cond.wait(min(remaining, 0.05))
                yield True
            finally:
                self._busy = False
                self.cond.notify_all()

    def close_for_commit(self, timeout: float) -> None:
        """Hold back new snapshots while the writer commits locally and publishes."""
        with self.cond:
            deadline = time.monotonic() + timeout
            self._busy = True
            while self._starting:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._busy = False
                    self.cond.notify_all()
                    raise BusyError("database is locked: a statement is still starting")
                self.cond.wait(remaining)

    def reopen(self) -> None:
        with self.cond:
            self._busy = False
            self.cond.notify_all()

    def wait_for_repairs(self, token: int, timeout: float) -> None:
        """Wait until no repair is pending (running it when only ``token`` holds a snapshot)."""
        with self.cond:
            deadline = time.monotonic() + timeout
            while self._pending is not None and not self._run_pending(exclude=token):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BusyError(
                        "database is locked: the local copy is being repaired after a failed "
                        "commit while another connection of this process holds it open"
                    )
                self.cond.wait(remaining)

    def defer(self, repair: Callable[[], None], *, exclude: int | None) -> bool:
        """Run ``repair`` as soon as no connection but ``exclude`` holds a snapshot.

        Until then no new snapshot is taken. True if it ran at once.
        """
        with self.cond:
            self._pending = repair
            return self._run_pending(exclude=exclude)

    def _run_pending(self, exclude: int | None) -> bool:
        """Run the pending repair if no connection holds a snapshot (``cond`` held)."""
        repair = self._pending
        if repair is None:
            return True
        if any(t != exclude for t in self._holders) or self._starting:
            return False
        try:
            repair()
        finally:
            self._pending = None
            self.cond.notify_all()
        return True
