"""The local copy: its files, the version it verifiably holds, and the checks before trusting it.

A :class:`LocalCopy` is one remote's database file in the cache folder (in WAL
mode) plus what the engine knows for certain about it: the *published base*,
i.e. the remote version its committed content equals (version, ETag, manifest,
page size, and the digest of every page in :class:`~lambdalite.replica.pages.PageHashes`),
and where in the WAL that content ends (``published_pos``).

Nothing local is trusted without a check (DESIGN §2.6). :meth:`LocalCopy.doubt`
names the first reason not to: the database file vanished or was replaced (the
cache folder was deleted, another program replaced the file), it changed size
behind the engine's back (truncated), or the WAL holds committed frames that
were never published (SQLite committed something outside a lambdalite
transaction). The engine asks before every pull and before every write, and
the commit path checks every pre-image it uses against the page digests, so a
damaged page is never built upon. On doubt the engine forgets the base
(:meth:`LocalCopy.forget`) and the next pull installs a full image.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3

from lambdalite.errors import BusyError, CorruptionError
from lambdalite.replica import format as fmt
from lambdalite.replica.cache import CacheDir, LocalState
from lambdalite.replica.pages import PageHashes, WalPosition, checksum_hex, read_page, read_wal

__all__ = ["DEFAULT_PAGE_SIZE", "Doubt", "LocalCopy", "file_id"]

log = logging.getLogger("lambdalite.replica")

DEFAULT_PAGE_SIZE = 4096
_WAL_INDEX_HEADERS = 96  # the two copies of the WAL index header at the start of -shm


class Doubt(Exception):
    """The local copy cannot be trusted (``reason`` says why); the engine discards it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalCopy:
    """One remote's local copy and its published base (see the module docstring)."""

    def __init__(self, cache: CacheDir) -> None:
        self.cache = cache
        self.version = 0
        self.etag: str | None = None
        self.manifest: fmt.Manifest | None = None
        self.manifest_raw: bytes | None = None
        self.page_size = DEFAULT_PAGE_SIZE
        self.hashes = PageHashes()
        self.published_pos = WalPosition.empty()
        self.needs_image = False  # in doubt: the next pull installs a full image
        self._files: tuple[int, int, int, int] | None = None  # db (device, inode, size), WAL size

    # ------------------------------------------------------------------ facts

    @property
    def db_path(self) -> str:
        return self.cache.db_path

    @property
    def wal_path(self) -> str:
        return self.cache.wal_path

    @property
    def page_count(self) -> int:
        return self.hashes.count

    @property
    def checksum(self) -> int:
        return self.hashes.checksum

    @property
    def lineage(self) -> str | None:
        return self.manifest.lineage if self.manifest is not None else None

    # ------------------------------------------------------------------ opening

    def open(self) -> None:
        """Lock the cache folder and adopt its state if the files prove it; else start empty."""
        self.cache.open()
        state = self.cache.load_state()
        self.cache.generation = state.generation if state is not None else 0
        self.cache.remove_other_generations()
        if state is not None and state.clean and os.path.exists(self.db_path):
            try:
                self.checkpoint(required=True, fold_unpublished=True)  # verified just below
                hashes = PageHashes.of_file(self.db_path, state.page_size)
            except (sqlite3.Error, OSError) as exc:
                log.warning("local copy unreadable (%s); pulling it again", exc)
            else:
                if checksum_hex(hashes.checksum) == state.checksum:
                    try:
                        self._adopt_state(state, hashes)
                    except CorruptionError as exc:  # a state file no manifest can come from
                        log.warning("cached manifest unreadable (%s); pulling again", exc)
                    else:
                        self.note_files()
                        return
                log.warning(
                    "local copy of %s does not match its state; pulling again", state.remote
                )
        self.start_empty()

    def start_empty(self) -> None:
        """An empty local copy at version 0 (nothing pulled yet)."""
        self.cache.discard()
        open(self.db_path, "wb").close()
        self.version, self.etag, self.manifest, self.manifest_raw = 0, None, None, None
        self.page_size = DEFAULT_PAGE_SIZE
        self.hashes = PageHashes()
        self.published_pos = WalPosition.empty()
        self.needs_image = False
        self.note_files()

    def _adopt_state(self, state: LocalState, hashes: PageHashes) -> None:
        raw = state.manifest.encode() if state.manifest is not None else None
        manifest = fmt.decode_manifest(raw) if raw is not None else None
        self.adopt(manifest, state.etag, raw, version=state.version)
        self.page_size = state.page_size
        self.hashes = hashes
        self.published_pos = WalPosition.empty()  # checkpointed above
        self.needs_image = False

    def adopt(
        self,
        manifest: fmt.Manifest | None,
        etag: str | None,
        raw: bytes | None,
        *,
        version: int | None = None,
    ) -> None:
        """Record which manifest describes the published base (the pages are set apart)."""
        self.manifest, self.etag, self.manifest_raw = manifest, etag, raw
        if manifest is not None:
            self.version = manifest.version if version is None else version
            self.page_size = manifest.page_size
        elif version is not None:
            self.version = version

    def save_state(self, *, clean: bool = True) -> None:
        self.cache.save_state(
            LocalState(
                remote=self.cache.remote,
                version=self.version,
                etag=self.etag,
                checksum=checksum_hex(self.checksum),
                page_size=self.page_size,
                page_count=self.page_count,
                manifest=self.manifest_raw.decode() if self.manifest_raw is not None else None,
                clean=clean,
                generation=self.cache.generation,
            )
        )

    def forget(self) -> None:
        """Stop trusting the local copy: the next pull installs a full image of the remote."""
        self.version, self.etag, self.manifest, self.manifest_raw = 0, None, None, None
        self.hashes = PageHashes()
        self.needs_image = True
        with contextlib.suppress(OSError):
            os.unlink(self.cache.state_path)

    # ------------------------------------------------------------------ checks

    def note_files(self) -> None:
        """Remember the files as the engine left them (after a change of its own)."""
        st = os.stat(self.db_path)
        self._files = (st.st_dev, st.st_ino, st.st_size, _size(self.wal_path))

    def doubt(self, *, check_wal: bool = True) -> str | None:
        """Why the local copy cannot be trusted to hold its published base, or None.

        Cheap: a few ``stat`` calls, and a scan of the WAL's frame headers only
        when the WAL grew since the engine last looked. It runs before every
        pull and every write transaction. ``check_wal=False`` leaves the WAL
        alone (a writer's own commit is in it).
        """
        if self.needs_image:
            return "it is waiting to be pulled again"
        try:
            st = os.stat(self.db_path)
        except OSError as exc:
            return f"its database file is gone ({exc.strerror}: the cache folder was deleted?)"
        if self._files is None:
            return None
        dev, ino, size, wal_size = self._files
        if (st.st_dev, st.st_ino) != (dev, ino):
            return "its database file was replaced by another file"
        if st.st_size != size:
            return (
                f"its database file changed size behind lambdalite's back ({size} -> {st.st_size})"
            )
        if not self.cache.still_locked():
            return "its cache folder's lock file is gone (the cache folder was deleted?)"
        if check_wal and _size(self.wal_path) != wal_size and self.unpublished_frames():
            return "its WAL holds committed changes that were never published"
        return None

    def unpublished_frames(self) -> bool:
        """Whether the WAL holds committed frames past the published base."""
        pos = read_wal(self.wal_path).position
        return pos.committed > 0 and pos != self.published_pos

    # ------------------------------------------------------------------ SQLite plumbing

    def maintenance(self, timeout: float = 30.0) -> sqlite3.Connection:
        raw = sqlite3.connect(self.db_path, isolation_level=None, timeout=timeout)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA wal_autocheckpoint=0")
        return raw

    def checkpoint(self, *, required: bool, fold_unpublished: bool = False) -> bool:
        """Move every WAL frame into the database file and empty the WAL.

        ``required``: the caller has exclusive access and the checkpoint must
        complete. Otherwise it is opportunistic and never waits: a reader of an
        older snapshot may be a thread waiting for this very writer. Committed
        frames that were never published are not folded into the file (that
        would hide them) unless ``fold_unpublished``: :class:`Doubt` is raised.
        """
        if not os.path.exists(self.wal_path) or os.path.getsize(self.wal_path) == 0:
            self.published_pos = WalPosition.empty()
            return True
        if not fold_unpublished and self.unpublished_frames():
            raise Doubt("its WAL holds committed changes that were never published")
        raw = self.maintenance(timeout=30.0 if required else 0.0)
        try:
            busy, _log, _done = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            raw.close()
        if busy and required:
            raise BusyError("could not checkpoint the local copy: a reader still holds it")
        if not busy:
            self.published_pos = WalPosition.empty()
            self.note_files()
        return not busy

    def invalidate_caches(self) -> None:
        """Make every connection of the process drop its page cache before its next read.

        A WAL-mode connection only notices a changed database when the WAL
        index changes, so the index is reset (:meth:`_reset_wal_index`) and a
        fresh connection commits a no-op write (setting ``user_version`` to its
        own value), which every other connection sees at its next read; the
        checkpoint then empties the WAL again. That write also bumps the change
        counters in page 1's header, so page 1 is put back byte for byte
        afterwards, keeping the local copy identical to the remote's pages.
        Exclusive access is held by the caller.
        """
        if os.path.getsize(self.db_path) == 0:
            return
        with open(self.db_path, "rb") as f:
            page1 = read_page(f, 1, self.page_size_of_file())
        self._reset_wal_index()
        raw = self.maintenance()
        try:
            uv = raw.execute("PRAGMA user_version").fetchone()[0]
            raw.execute("BEGIN IMMEDIATE")
            raw.execute(f"PRAGMA user_version={int(uv)}")
            raw.execute("COMMIT")
            busy, _l, _c = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy:
                raise BusyError("could not checkpoint the local copy after a pull")
        finally:
            raw.close()
        with open(self.db_path, "r+b") as f:
            f.write(page1)
            f.flush()
            os.fsync(f.fileno())

    def _reset_wal_index(self) -> None:
        """Mark the shared WAL index as uninitialized, so SQLite rebuilds it.

        The WAL index header remembers the database size in pages, and SQLite
        trusts it over the file's size; after pages were written behind its
        back (a pull that grew the file, an undo that shrank it) that number is
        wrong. Zeroing both copies of the header makes the next connection run
        WAL recovery, which finds an empty WAL and takes the size from the file.
        """
        shm = self.db_path + "-shm"
        try:
            with open(shm, "r+b") as f:
                if os.fstat(f.fileno()).st_size >= _WAL_INDEX_HEADERS:
                    f.write(b"\0" * _WAL_INDEX_HEADERS)
        except FileNotFoundError:
            pass

    def page_size_of_file(self) -> int:
        with open(self.db_path, "rb") as f:
            header = f.read(100)
        if len(header) < 18:
            return self.page_size
        size = int.from_bytes(header[16:18], "big")
        return 65536 if size == 1 else size


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return -1


def file_id(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, or None if there is none."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
