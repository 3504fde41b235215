"""Healing the local copy: undoing a commit that was not published, discarding one in doubt.

Two repairs, both local (the remote is the truth and is never touched here):

* **Undo** (:meth:`Healer.undo`): a commit was written locally but not
  published (another instance won the race, the push failed, or its outcome is
  unknown). The pre-images of the pages it changed, checked against the
  published version's page digests before the push, are written back once no
  other connection holds a snapshot; until then no new snapshot is taken.
* **Discard** (:meth:`Healer.discard`): there is a reason to doubt the local
  copy (see :meth:`lambdalite.replica.local.LocalCopy.doubt`), or an undo
  failed. The engine forgets what the copy holds and starts a new, empty
  database file (a new *generation*: connections reopen their handles before
  their next statement, and the old file is never written again); the next
  pull installs a full image of the remote.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lambdalite.errors import LambdaliteError
from lambdalite.replica.local import Doubt
from lambdalite.replica.pages import write_pages

if TYPE_CHECKING:
    from lambdalite.replica.engine import Replica

__all__ = ["Healer", "Undo"]

log = logging.getLogger("lambdalite.replica")


@dataclass(slots=True)
class Undo:
    """The published version's content of every page a local commit changed or cut off."""

    pages: dict[int, bytes]
    page_count: int


class Healer:
    """The repairs of one replica's local copy."""

    def __init__(self, replica: Replica) -> None:
        self.r = replica

    def check(self) -> None:
        """Discard the local copy if there is a reason to doubt it (before a pull)."""
        local = self.r.local
        with self.r.gate.cond:
            if local.needs_image:
                return
            reason = local.doubt(check_wal=self.r.gate.quiet())
            if reason is not None:
                self.discard(reason)

    def discard(self, reason: str) -> None:
        """Stop using the local copy: a new empty file, pulled again in full at the next read."""
        r, local = self.r, self.r.local
        with r.gate.cond:
            log.error("local copy of %s discarded: %s; it will be pulled again", r.remote, reason)
            local.forget()
            r.confirmed_at = float("-inf")
            try:
                if not r.cache.still_locked():
                    r.cache.reopen()
                r.cache.generation += 1
                open(local.db_path, "wb").close()
                local.note_files()
            except OSError as exc:
                log.error("could not start a new local copy of %s: %s", r.remote, exc)

    def undo(self, undo: Undo, *, exclude: int | None) -> None:
        """Put the local copy back to the published version (see the module docstring)."""
        if not self.r.gate.defer(lambda: self._apply(undo), exclude=exclude):
            log.info("undo of a failed commit waits for open cursors to finish")

    def _apply(self, undo: Undo) -> None:
        """Write the pre-images back (the gate's condition is held, no other holder)."""
        r, local = self.r, self.r.local
        if local.needs_image:
            return  # discarded meanwhile: the next pull replaces everything anyway
        try:
            local.save_state(clean=False)
            local.checkpoint(required=True, fold_unpublished=True)  # the failed commit's frames
            write_pages(local.db_path, undo.pages, undo.page_count, local.page_size_of_file())
            local.invalidate_caches()
            local.checkpoint(required=True)
            local.note_files()
            local.save_state()
        except (OSError, sqlite3.Error, LambdaliteError, Doubt) as exc:
            self.discard(f"undoing a commit that was not published failed ({exc})")
        r.confirmed_at = float("-inf")
