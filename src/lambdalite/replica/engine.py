"""The replica engine: one local copy of one remote, shared by a process's connections.

How a transaction meets the remote (DESIGN §3):

* **Start.** ``GET manifest`` with ``If-None-Match: <etag we hold>``: a 304
  costs no body. On a new manifest the engine downloads the deltas it lacks
  (or a snapshot when it is cold, too far behind or on another lineage),
  verifies every checksum, then writes the pages into the local copy while no
  connection of the process holds a snapshot, and makes every connection drop
  its page cache (see ``_invalidate_caches``).
* **Commit.** The local copy runs in WAL mode with automatic checkpoints off,
  so the frames a commit appended are exactly its changed pages. The engine
  commits locally while new snapshots are held back, reads those frames,
  pushes them as a delta (inline in the manifest when small) and publishes
  the manifest with ``If-Match: <etag the transaction started from>``. A 412
  means another instance committed first: the local commit is undone from the
  pre-images of the changed pages and :class:`ConflictError` raised. Any other
  push failure is raised from ``commit()`` too, after the same undo.
* **Heal.** The state file records which version the local copy holds and its
  checksum; at start the local copy is verified against it and pulled again on
  any mismatch (a crash mid-commit, mid-pull, or a damaged file).

Concurrency inside the process: a *holder* is a connection with an open
snapshot (a transaction, or a cursor with rows left). Pages are only written
into the local copy when there are no holders. Statements that would *take* a
snapshot pass a gate that is closed while a commit is being published, so no
connection ever reads a local commit that the remote does not have.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lambdalite.errors import (
    BusyError,
    CommitOutcomeUnknownError,
    ConflictError,
    CorruptionError,
    LambdaliteError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
    TransientStorageError,
)
from lambdalite.replica import format as fmt
from lambdalite.replica.cache import CacheDir, LocalState
from lambdalite.replica.chain import deltas_since, settle
from lambdalite.replica.pages import (
    WalFrame,
    WalPosition,
    checksum_after_commit,
    checksum_after_write,
    checksum_hex,
    copy_in_place,
    file_checksum,
    frame_pages,
    read_page,
    read_wal,
    write_pages,
)
from lambdalite.replica.stats import CountingStorage, StorageStats
from lambdalite.storage.base import Storage

if TYPE_CHECKING:
    from lambdalite.locks.base import Lease, Lock

__all__ = ["EngineOptions", "Replica"]

log = logging.getLogger("lambdalite.replica")

crash_hook: Callable[[str], None] | None = None
"""Tests set this to kill the process at a named step of the commit path."""

_INLINE_BUDGET = 12 * 1024  # bytes of inline deltas a manifest may carry in all
_ROLLOVER_BYTES = 24 * 1024  # a manifest larger than this is rolled over after the commit
_MAX_SEGMENTS = 16  # archived segments a cold start may walk before a new snapshot is due
_UNKNOWN_ETAG = "unknown"  # matches no real ETag: the next read fetches the manifest
_DEFAULT_PAGE_SIZE = 4096
_WAL_INDEX_HEADERS = 96  # the two copies of the WAL index header at the start of -shm


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """The settings the engine itself uses (the rest are per connection)."""

    inline_delta_max: int = 65536
    compact_after_deltas: int = 64
    compact_after_bytes: int = 1024 * 1024


@dataclass(slots=True)
class _Undo:
    """What it takes to put the local copy back to the version before a failed push."""

    pages: dict[int, bytes]
    page_count: int
    checksum: int


@dataclass(slots=True)
class _Download:
    manifest: fmt.Manifest
    etag: str
    raw: bytes
    deltas: list[tuple[fmt.DeltaRef, fmt.Delta]]
    image: str | None  # decompressed snapshot file to install, or None (deltas only)
    checksum: int


class Replica:
    """The local copy of one remote in this process (get one with :func:`get_replica`)."""

    def __init__(
        self,
        remote: str,
        storage: Storage,
        cache_dir: str,
        options: EngineOptions | None = None,
        *,
        lock: Callable[[Storage], Lock] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.remote = remote
        self.storage = CountingStorage(storage)
        self.lock: Lock | None = lock(self.storage) if lock is not None else None
        self._lease: Lease | None = None
        self.options = options or EngineOptions()
        self.cache = CacheDir(cache_dir, remote)
        self._clock = clock
        self._writer_id = f"{socket.gethostname()}:{os.getpid()}"
        self._cond = threading.Condition(threading.RLock())
        self._refresh_mutex = threading.Lock()
        self._writer_mutex = threading.Lock()
        self._opened = False
        # What the local copy holds.
        self._version = 0
        self._etag: str | None = None
        self._manifest: fmt.Manifest | None = None
        self._manifest_raw: bytes | None = None
        self._checksum = 0
        self._page_size = _DEFAULT_PAGE_SIZE
        self._page_count = 0
        self._confirmed_at = float("-inf")  # monotonic time of the last manifest check
        # Who is using it.
        self._holders: dict[int, int] = {}  # connection token -> thread id
        self._gate_active = 0
        self._busy = False
        self._pending_undo: _Undo | None = None
        self._open_raw = 0
        self._writer: int | None = None
        self._write_pos = WalPosition.empty()

    # ------------------------------------------------------------------ public facts

    @property
    def stats(self) -> StorageStats:
        return self.storage.stats

    @property
    def version(self) -> int:
        return self._version

    @property
    def manifest(self) -> fmt.Manifest | None:
        return self._manifest

    @property
    def db_path(self) -> str:
        return self.cache.db_path

    # ------------------------------------------------------------------ opening

    def ensure_open(self) -> None:
        with self._cond:
            if self._opened:
                return
            self.cache.open()
            self._load_local()
            self._opened = True

    def _load_local(self) -> None:
        state = self.cache.load_state()
        if state is not None and state.clean and os.path.exists(self.cache.db_path):
            try:
                self._checkpoint(required=True)
                actual, count = file_checksum(self.cache.db_path, state.page_size)
            except (sqlite3.Error, OSError) as exc:
                log.warning("local copy unreadable (%s); pulling it again", exc)
            else:
                if checksum_hex(actual) == state.checksum and count == state.page_count:
                    self._adopt_state(state)
                    return
                log.warning("local copy of %s does not match its state; pulling again", self.remote)
        self.cache.discard()
        self._version, self._etag, self._manifest, self._manifest_raw = 0, None, None, None
        self._checksum, self._page_count, self._page_size = 0, 0, _DEFAULT_PAGE_SIZE
        open(self.cache.db_path, "wb").close()

    def _adopt_state(self, state: LocalState) -> None:
        self._version = state.version
        self._etag = state.etag
        self._checksum = int(state.checksum, 16)
        self._page_size = state.page_size
        self._page_count = state.page_count
        raw = state.manifest.encode() if state.manifest is not None else None
        self._manifest_raw = raw
        self._manifest = fmt.decode_manifest(raw) if raw is not None else None

    def _save_state(self, *, clean: bool = True) -> None:
        self.cache.save_state(
            LocalState(
                remote=self.remote,
                version=self._version,
                etag=self._etag,
                checksum=checksum_hex(self._checksum),
                page_size=self._page_size,
                page_count=self._page_count,
                manifest=self._manifest_raw.decode() if self._manifest_raw is not None else None,
                clean=clean,
            )
        )

    # ------------------------------------------------------------------ raw connections

    def connect_raw(self, **kwargs: object) -> sqlite3.Connection:
        """A SQLite connection to the local copy, in WAL mode with autocheckpoint off."""
        self.ensure_open()
        kwargs["isolation_level"] = None
        raw: sqlite3.Connection = sqlite3.connect(self.cache.db_path, **kwargs)  # type: ignore[call-overload]
        try:
            mode = raw.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"could not put the local copy in WAL mode ({mode})")
            raw.execute("PRAGMA wal_autocheckpoint=0")
        except BaseException:
            raw.close()
            raise
        with self._cond:
            self._open_raw += 1
        return raw

    def close_raw(self, raw: sqlite3.Connection) -> None:
        raw.close()
        with self._cond:
            self._open_raw -= 1

    def _maintenance(self, timeout: float = 30.0) -> sqlite3.Connection:
        raw = sqlite3.connect(self.cache.db_path, isolation_level=None, timeout=timeout)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA wal_autocheckpoint=0")
        return raw

    def _checkpoint(self, *, required: bool) -> bool:
        """Move every WAL frame into the database file and empty the WAL.

        ``required``: the caller has exclusive access and the checkpoint must
        complete. Otherwise it is opportunistic and never waits: a reader of an
        older snapshot may be a thread waiting for this very writer.
        """
        if not os.path.exists(self.cache.wal_path) or os.path.getsize(self.cache.wal_path) == 0:
            return True
        raw = self._maintenance(timeout=30.0 if required else 0.0)
        try:
            busy, _log, _done = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            raw.close()
        if busy and required:
            raise BusyError("could not checkpoint the local copy: a reader still holds it")
        return not busy

    # ------------------------------------------------------------------ holders and the gate

    def begin_statement(self, token: int, timeout: float) -> int | None:
        """Called before a statement of connection ``token`` runs.

        A connection that holds no snapshot yet waits while a commit is being
        published, then becomes a holder; the version its snapshot will see is
        returned. A holder passes straight through (None).
        """
        with self._cond:
            if token in self._holders:
                return None
            deadline = time.monotonic() + timeout
            while self._busy or self._pending_undo is not None:
                if self._pending_undo is not None and self._try_heal(exclude=token):
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BusyError(
                        "database is locked: another connection of this process is publishing a "
                        "commit or holds an open cursor (raise `timeout` or finish that cursor)"
                    )
                self._cond.wait(remaining)
            self._gate_active += 1
            self._holders[token] = threading.get_ident()
            return self._version

    def end_statement(self, token: int, established: int | None) -> None:
        if established is None:
            return
        with self._cond:
            self._gate_active -= 1
            self._cond.notify_all()

    def release(self, token: int) -> None:
        """Connection ``token`` no longer holds a snapshot."""
        with self._cond:
            if self._holders.pop(token, None) is not None:
                if self._pending_undo is not None and not self._holders:
                    self._try_heal(exclude=None)
                self._cond.notify_all()

    def is_holder(self, token: int) -> bool:
        with self._cond:
            return token in self._holders

    @contextlib.contextmanager
    def _exclusive(self, token: int | None, timeout: float) -> Iterator[bool]:
        """Close the gate and wait until no other connection holds a snapshot.

        Yields False (and changes nothing) when that cannot happen in time, or
        at once when a holder is in the calling thread (it could never finish).
        """
        me = threading.get_ident()
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    yield False
                    return
                self._cond.wait(remaining)
            self._busy = True
            try:
                while True:
                    others = {t: th for t, th in self._holders.items() if t != token}
                    if self._gate_active == 0 and not others:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or me in others.values():
                        yield False
                        return
                    self._cond.wait(min(remaining, 0.05))
                yield True
            finally:
                self._busy = False
                self._cond.notify_all()

    # ------------------------------------------------------------------ refresh (pull)

    def refresh(self, token: int, *, max_staleness: float, timeout: float) -> None:
        """Bring the local copy to the remote's newest version (DESIGN §2.4)."""
        self.ensure_open()
        started = time.monotonic()
        if max_staleness > 0 and started - self._confirmed_at <= max_staleness:
            return
        with self._refresh_mutex:
            if self._confirmed_at >= started:
                return  # another thread checked while we waited
            for _attempt in range(5):
                if self.is_holder(token):
                    return  # our own snapshot is open: nothing may move under it
                if self._refresh_once(token, timeout):
                    self._confirmed_at = started
                    return
            log.info("the local copy kept moving during a pull; reading version %d", self._version)

    def _refresh_once(self, token: int, timeout: float) -> bool:
        """One pull; False if a local commit moved the copy meanwhile (try again)."""
        try:
            blob = self.storage.get(fmt.MANIFEST_KEY, if_none_match=self._etag)
        except NotFoundError:
            if self._etag is not None:
                raise StorageError(
                    f"the manifest of {self.remote} has disappeared although version "
                    f"{self._version} was published; refusing to continue on a remote that "
                    "lost its history (restore it, or import the database again)",
                    remote=self.remote,
                    key=fmt.MANIFEST_KEY,
                ) from None
            return True
        if blob is None:
            return True
        manifest = fmt.decode_manifest(blob.data)
        start = (self._version, self._checksum)
        download = self._download(manifest, blob.etag, blob.data)
        try:
            with self._exclusive(token, timeout) as ok:
                if not ok:
                    log.info("local copy busy; this transaction reads version %d", self._version)
                    return True
                if (self._version, self._checksum) != start:
                    return False  # another connection of this process committed meanwhile
                self._install(download)
        finally:
            if download.image:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(download.image)
        return True

    def _same_history(self, manifest: fmt.Manifest) -> bool:
        return self._manifest is not None and self._manifest.lineage == manifest.lineage

    def _download(self, manifest: fmt.Manifest, etag: str, raw: bytes) -> _Download:
        """Fetch and verify what it takes to reach ``manifest`` (no local change yet)."""
        if self._same_history(manifest) or (self._manifest is None and self._version == 0):
            chain = self._chain_to(manifest)
            if chain is not None and (
                chain == () or chain[0].base_checksum == checksum_hex(self._checksum)
            ):
                deltas = [(ref, self._fetch_delta(ref)) for ref in chain]
                return _Download(manifest, etag, raw, deltas, None, self._checksum)
        return self._download_image(manifest, etag, raw)

    def _chain_to(self, manifest: fmt.Manifest) -> tuple[fmt.DeltaRef, ...] | None:
        """The deltas from the local version to ``manifest``'s, or None (pull a snapshot).

        Compactions and rollovers keep the version and archive the manifest
        they replace, so an instance behind finds its deltas in those archives
        (one small GET each) instead of downloading a snapshot.
        """
        chain = manifest.deltas_after(self._version)
        if chain is not None:
            return chain
        if self._version == 0 and manifest.snapshot is not None:
            return None  # a cold start: the snapshot, not the whole history
        chain = self._deltas_since(manifest, self._version, required=False)
        snap_size = manifest.snapshot.size if manifest.snapshot is not None else None
        if chain is not None and snap_size is not None and sum(d.size for d in chain) > snap_size:
            return None  # so far behind that the snapshot is the cheaper way
        return chain

    def _deltas_since(
        self, manifest: fmt.Manifest, version: int, *, required: bool
    ) -> tuple[fmt.DeltaRef, ...] | None:
        return deltas_since(
            self.storage,
            manifest,
            version,
            required=required,
            remote=self.remote,
            max_segments=_MAX_SEGMENTS,
        )

    def _fetch_delta(self, ref: fmt.DeltaRef) -> fmt.Delta:
        if ref.inline is not None:
            return fmt.decode_delta(ref.inline_bytes(), ref, where=f"manifest#v{ref.version}")
        assert ref.key is not None
        try:
            blob = self.storage.get(ref.key)
        except NotFoundError as exc:
            raise CorruptionError(
                f"delta {ref.key!r} (version {ref.version}) named by the manifest is missing; "
                "run `lambdalite verify` on the remote",
                remote=self.remote,
                key=ref.key,
            ) from exc
        assert blob is not None
        return fmt.decode_delta(blob.data, ref, where=ref.key)

    def _download_image(self, manifest: fmt.Manifest, etag: str, raw: bytes) -> _Download:
        image = self.cache.tmp_path(f"image-{manifest.version}-{manifest.nonce}")
        open(image, "wb").close()
        checksum = 0
        try:
            if manifest.snapshot is not None:
                snap = manifest.snapshot
                packed = image + ".zst"
                try:
                    self.storage.get_file(snap.key, packed)
                    fmt.read_snapshot(packed, image, snap, where=snap.key)
                except NotFoundError as exc:
                    raise CorruptionError(
                        f"snapshot {snap.key!r} named by the manifest is missing; run "
                        "`lambdalite verify` on the remote",
                        remote=self.remote,
                        key=snap.key,
                    ) from exc
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(packed)
                checksum, count = file_checksum(image, manifest.page_size)
                if checksum_hex(checksum) != snap.checksum or count != snap.page_count:
                    raise CorruptionError(
                        f"snapshot {snap.key!r} decompressed to pages that fail their checksum",
                        remote=self.remote,
                        key=snap.key,
                    )
            start = manifest.snapshot.version if manifest.snapshot is not None else 0
            refs = self._deltas_since(manifest, start, required=True)
            if refs is None:
                raise CorruptionError(
                    f"the history of {self.remote} from its snapshot (version {start}) to "
                    f"version {manifest.version} is longer or less continuous than a manifest "
                    "chain may be; run `lambdalite verify`",
                    remote=self.remote,
                )
            for ref in refs:
                checksum = self._apply_pages(image, ref, self._fetch_delta(ref), checksum)
        except BaseException:
            os.unlink(image)
            raise
        return _Download(manifest, etag, raw, [], image, checksum)

    def _apply_pages(self, path: str, ref: fmt.DeltaRef, delta: fmt.Delta, checksum: int) -> int:
        """Verify ``delta`` against the file's checksum, write it, return the new checksum."""
        if checksum_hex(checksum) != ref.base_checksum:
            raise CorruptionError(
                f"delta for version {ref.version} does not start from the local pages "
                f"(expected {ref.base_checksum}, have {checksum_hex(checksum)})",
                remote=self.remote,
            )
        old_count = os.path.getsize(path) // delta.page_size if os.path.exists(path) else 0
        new = checksum_after_write(
            path, checksum, old_count, delta.page_count, delta.pages, delta.page_size
        )
        if checksum_hex(new) != ref.checksum:
            raise CorruptionError(
                f"delta for version {ref.version} produces pages that fail their checksum",
                remote=self.remote,
            )
        write_pages(path, delta.pages, delta.page_count, delta.page_size)
        return new

    def _install(self, d: _Download) -> None:
        """Write a verified download into the local copy (exclusive access held)."""
        self._save_state(clean=False)
        m = d.manifest
        if d.image is not None:
            if self._open_raw == 0:
                for suffix in ("-wal", "-shm"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.cache.db_path + suffix)
                os.replace(d.image, self.cache.db_path)
            else:
                self._checkpoint(required=True)
                copy_in_place(d.image, self.cache.db_path, m.page_size)
                self._invalidate_caches()
            checksum = d.checksum
        else:
            self._checkpoint(required=True)
            checksum = self._checksum
            for ref, delta in d.deltas:
                checksum = self._apply_pages(self.cache.db_path, ref, delta, checksum)
            if d.deltas:
                self._invalidate_caches()
        self._version, self._etag = m.version, d.etag
        self._manifest, self._manifest_raw = m, d.raw
        self._checksum, self._page_size, self._page_count = checksum, m.page_size, m.page_count
        self._save_state()
        log.debug("local copy of %s now at version %d", self.remote, m.version)

    def _invalidate_caches(self) -> None:
        """Make every connection of the process drop its page cache before its next read.

        A WAL-mode connection only notices a changed database when the WAL
        index changes, so the index is reset (``_reset_wal_index``) and a
        fresh connection commits a no-op write (setting
        ``user_version`` to its own value), which every other connection sees
        at its next read; the checkpoint then empties the WAL again. That write
        also bumps the change counters in page 1's header, so page 1 is put
        back byte for byte afterwards, keeping the local copy identical to the
        remote's pages.
        """
        if os.path.getsize(self.cache.db_path) == 0:
            return
        with open(self.cache.db_path, "rb") as f:
            page1 = read_page(f, 1, self._page_size_of_file())
        self._reset_wal_index()
        raw = self._maintenance()
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
        with open(self.cache.db_path, "r+b") as f:
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
        Only done with exclusive access: no connection is inside a transaction.
        """
        shm = self.cache.db_path + "-shm"
        try:
            with open(shm, "r+b") as f:
                if os.fstat(f.fileno()).st_size >= _WAL_INDEX_HEADERS:
                    f.write(b"\0" * _WAL_INDEX_HEADERS)
        except FileNotFoundError:
            pass

    def _page_size_of_file(self) -> int:
        with open(self.cache.db_path, "rb") as f:
            header = f.read(100)
        if len(header) < 18:
            return self._page_size
        size = int.from_bytes(header[16:18], "big")
        return 65536 if size == 1 else size

    # ------------------------------------------------------------------ writing (push)

    def snapshot_version(self, raw: sqlite3.Connection) -> int:
        """The version a connection's just-opened transaction reads (it is a holder)."""
        return self._version

    def begin_write(self, token: int, snapshot_version: int | None, timeout: float) -> None:
        """Make connection ``token`` the process's writer before its first write.

        ``snapshot_version`` is the version the transaction has read, or None
        when it has not taken its snapshot yet (it will, after this call). With
        a lock configured, the lock is taken here; a transaction that already
        read is then checked against the remote, and fails with ConflictError
        at once if another instance committed since its snapshot (SQLite's
        ``SQLITE_BUSY_SNAPSHOT`` rule), instead of failing at commit.
        """
        deadline = time.monotonic() + max(timeout, 0.0)
        if not self._writer_mutex.acquire(timeout=max(timeout, 0.0)):
            raise BusyError("database is locked: another connection of this process is writing")
        try:
            if snapshot_version is not None and snapshot_version != self._version:
                raise ConflictError(
                    f"another connection committed version {self._version} after this "
                    f"transaction read version {snapshot_version}; retry the transaction"
                )
            if self.lock is not None:
                self._lease = self.lock.acquire(max(deadline - time.monotonic(), 0.0))
                try:
                    if snapshot_version is None:
                        self._confirmed_at = float("-inf")
                        self.refresh(token, max_staleness=0, timeout=timeout)
                    else:
                        self._check_remote_unchanged()
                except BaseException:
                    self._release_lease()
                    raise
            self._write_pos = read_wal(self.cache.wal_path).position
            self._writer = token
        except BaseException:
            self._writer_mutex.release()
            raise

    def _check_remote_unchanged(self) -> None:
        blob = self.storage.get(fmt.MANIFEST_KEY, if_none_match=self._etag)
        if blob is None:
            return
        current = fmt.decode_manifest(blob.data)
        if not self._only_compacted(current):
            raise ConflictError(
                f"another instance committed version {current.version} after this transaction "
                f"read version {self._version}; retry the transaction"
            )
        with self._cond:  # a compaction changed how the same version is stored
            self._manifest, self._manifest_raw, self._etag = current, blob.data, blob.etag
            self._save_state()

    def _release_lease(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None and self.lock is not None:
            try:
                self.lock.release(lease)
            except LambdaliteError as exc:
                log.warning("could not release the lock (it will expire): %s", exc)

    def abort_write(self, token: int) -> None:
        """The writer rolled back: nothing was committed locally."""
        if self._writer == token:
            self._writer = None
            self._release_lease()
            self._writer_mutex.release()

    def commit_write(
        self, token: int, raw: sqlite3.Connection, timeout: float, *, committed: bool = False
    ) -> None:
        """Commit connection ``token``'s transaction locally and publish it; raise on failure.

        ``committed``: the statement committed by itself (VACUUM); only publish.
        """
        assert self._writer == token
        try:
            with self._cond:
                deadline = time.monotonic() + timeout
                self._busy = True
                while self._gate_active:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._busy = False
                        self._cond.notify_all()
                        raise BusyError("database is locked: a statement is still starting")
                    self._cond.wait(remaining)
            try:
                if not committed:
                    raw.execute("COMMIT")
            except BaseException:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                raise
            try:
                self._publish()
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            self._maybe_compact()
        finally:
            self._writer = None
            self._release_lease()
            self._writer_mutex.release()

    def _publish(self) -> None:
        wal = read_wal(self.cache.wal_path)
        ours = wal.since(self._write_pos)
        if not ours:
            return  # the transaction changed nothing
        page_size = wal.page_size
        new_count = ours[-1].commit_size
        try:
            pages = frame_pages(self.cache.wal_path, ours, page_size)
            pages = {p: data for p, data in pages.items() if p <= new_count}
            undo = self._pre_images(wal.before(self._write_pos), pages, new_count, page_size)
            new_checksum = checksum_after_commit(
                self._checksum, undo.pages, undo.page_count, pages, new_count, page_size
            )
        except BaseException:
            # the local commit cannot be undone page by page: pull the remote again
            self._reset_local()
            raise
        try:
            _crash_point("before-push")
            if self._lease is not None and self.lock is not None:
                self._lease = self.lock.ensure(self._lease, min_remaining=5.0)
            manifest, raw_manifest, etag = self._push(pages, new_count, page_size, new_checksum)
        except BaseException as exc:
            self._undo(undo)
            if isinstance(exc, PreconditionFailedError):
                raise ConflictError(
                    "another instance committed first; the transaction was rolled back, retry it"
                ) from exc
            raise
        # Durable from here on: nothing below may turn the commit into an error.
        self._version, self._etag = manifest.version, etag
        self._manifest, self._manifest_raw = manifest, raw_manifest
        self._checksum, self._page_size, self._page_count = new_checksum, page_size, new_count
        self._confirmed_at = time.monotonic()
        try:
            self._checkpoint(required=False)
            self._save_state()
        except (OSError, sqlite3.Error) as exc:
            log.warning(
                "version %d is durable, but the cache state was not saved: %s", self._version, exc
            )

    def _pre_images(
        self,
        before: tuple[WalFrame, ...],
        pages: Mapping[int, bytes],
        new_count: int,
        page_size: int,
    ) -> _Undo:
        """The base version's content of every page the commit changed or cut off."""
        base_count = self._page_count
        wanted = {p for p in pages if p <= base_count} | set(range(new_count + 1, base_count + 1))
        from_wal = frame_pages(self.cache.wal_path, before, page_size) if before else {}
        out: dict[int, bytes] = {}
        with open(self.cache.db_path, "rb") as f:
            for p in wanted:
                out[p] = from_wal[p] if p in from_wal else read_page(f, p, page_size)
        return _Undo(out, base_count, self._checksum)

    def _push(
        self, pages: Mapping[int, bytes], page_count: int, page_size: int, checksum: int
    ) -> tuple[fmt.Manifest, bytes, str]:
        encoded = fmt.encode_delta(page_size, page_count, pages)
        version = self._version + 1
        nonce = fmt.new_nonce()
        ref = fmt.DeltaRef(
            version=version,
            committed_at=self._clock(),
            base_checksum=checksum_hex(self._checksum),
            checksum=checksum_hex(checksum),
            page_count=page_count,
            pages=len(pages),
            size=len(encoded),
            sha256=hashlib.sha256(encoded).hexdigest(),
        )
        base = self._manifest
        inline_used = sum(d.size for d in base.deltas if d.inline) if base else 0
        if (
            len(encoded) <= self.options.inline_delta_max
            and inline_used + len(encoded) <= _INLINE_BUDGET
        ):
            ref = _with(ref, inline=base64.b64encode(encoded).decode())
        else:
            key = f"deltas/{version:020d}-{nonce}"
            self.storage.put(key, encoded, if_none_match=True)
            ref = _with(ref, key=key)
            _crash_point("after-delta-upload")
        etag = self._etag
        for _attempt in range(5):
            manifest = self._next_manifest(base, ref, nonce, page_size, page_count, checksum)
            raw = fmt.encode_manifest(manifest)
            try:
                if etag is None:
                    new_etag = self.storage.put(fmt.MANIFEST_KEY, raw, if_none_match=True)
                else:
                    new_etag = self.storage.put(fmt.MANIFEST_KEY, raw, if_match=etag)
                _crash_point("after-manifest")
                return manifest, raw, new_etag
            except PreconditionFailedError:
                current = self._read_manifest()
                if current is None or not self._only_compacted(current[0]):
                    self._forget_delta(ref)
                    raise
                base, etag = current[0], current[1]  # a compaction moved the ETag only: retry
            except TransientStorageError as exc:
                try:
                    current = self._read_manifest()
                except StorageError as again:
                    raise CommitOutcomeUnknownError(
                        f"publishing version {ref.version} failed ({exc}) and the manifest could "
                        f"not be read to learn whether it landed ({again})",
                        remote=self.remote,
                        key=fmt.MANIFEST_KEY,
                    ) from exc
                verdict = settle(current, nonce, ref, etag)
                if verdict == "landed":
                    assert current is not None
                    if current[0].nonce == nonce:
                        return current[0], current[2], current[1]
                    # ours landed and another commit followed: the next refresh catches up
                    return manifest, raw, _UNKNOWN_ETAG
                if verdict == "absent":
                    time.sleep(0.05)
                    continue  # it did not land and nothing moved: try again
                self._forget_delta(ref)
                if verdict == "moved":
                    raise ConflictError(
                        "another instance committed first (after a failed write); the "
                        "transaction was rolled back, retry it"
                    ) from exc
                raise CommitOutcomeUnknownError(
                    f"publishing version {ref.version} failed ({exc}) and the history was "
                    "compacted since, so whether it landed cannot be told",
                    remote=self.remote,
                    key=fmt.MANIFEST_KEY,
                ) from exc
        raise TransientStorageError(
            "could not publish the manifest after several attempts", remote=self.remote
        )

    def _next_manifest(
        self,
        base: fmt.Manifest | None,
        ref: fmt.DeltaRef,
        nonce: str,
        page_size: int,
        page_count: int,
        checksum: int,
    ) -> fmt.Manifest:
        return fmt.Manifest(
            lineage=base.lineage if base else fmt.new_nonce(),
            version=ref.version,
            nonce=nonce,
            committed_at=ref.committed_at,
            writer=self._writer_id,
            page_size=page_size,
            page_count=page_count,
            checksum=checksum_hex(checksum),
            snapshot=base.snapshot if base else None,
            deltas=(base.deltas if base else ()) + (ref,),
            previous=base.previous if base else None,
            base=base.base if base else None,
        )

    def _only_compacted(self, current: fmt.Manifest) -> bool:
        return (
            self._manifest is not None
            and current.lineage == self._manifest.lineage
            and current.version == self._version
            and current.checksum == checksum_hex(self._checksum)
        )

    def _read_manifest(self) -> tuple[fmt.Manifest, str, bytes] | None:
        try:
            blob = self.storage.get(fmt.MANIFEST_KEY)
        except NotFoundError:
            return None
        assert blob is not None
        return fmt.decode_manifest(blob.data), blob.etag, blob.data

    def _forget_delta(self, ref: fmt.DeltaRef) -> None:
        if ref.key is not None:
            with contextlib.suppress(StorageError):
                self.storage.delete(ref.key)

    def _undo(self, undo: _Undo) -> None:
        """Put the local copy back to the version before the failed push."""
        with self._cond:
            self._pending_undo = undo
            if not self._try_heal(exclude=self._writer):
                log.info("undo of a failed commit waits for open cursors to finish")

    def _try_heal(self, exclude: int | None) -> bool:
        """Apply a pending undo if no connection holds a snapshot (``_cond`` held)."""
        undo = self._pending_undo
        if undo is None:
            return True
        others = [t for t in self._holders if t != exclude]
        if others or self._gate_active:
            return False
        try:
            self._save_state(clean=False)
            self._checkpoint(required=True)
            write_pages(self.cache.db_path, undo.pages, undo.page_count, self._page_size_of_file())
            self._invalidate_caches()
            self._checksum = undo.checksum
            self._save_state()
        except (OSError, sqlite3.Error) as exc:
            log.error(
                "could not undo a failed commit locally (%s); the local copy will be pulled again",
                exc,
            )
            self._reset_local()
        self._pending_undo = None
        self._confirmed_at = float("-inf")
        self._cond.notify_all()
        return True

    def _reset_local(self) -> None:
        """Forget the local copy's version so the next refresh pulls a full image."""
        self._version, self._etag, self._manifest, self._manifest_raw = 0, None, None, None
        self._checksum = -1  # matches nothing: forces an image download
        self._confirmed_at = float("-inf")
        with contextlib.suppress(OSError):
            os.unlink(self.cache.state_path)

    # ------------------------------------------------------------------ compaction

    def _maybe_compact(self) -> None:
        """After a commit: keep the manifest short, and snapshot when it pays off.

        A new snapshot costs the whole database, so it is only written when the
        deltas since the last one add up to a quarter of its size (at least
        ``compact_after_bytes``) or a cold start would walk too many archived
        segments: its cost per commit stays proportional to the commits' own.
        Otherwise a manifest with ``compact_after_deltas`` deltas, or larger
        than 24 KiB, is rolled over: archived, and continued by a short
        manifest at the same version, so that every commit (which rewrites the
        manifest) moves a small, bounded number of bytes besides its own pages.
        """
        m = self._manifest
        if m is None or not m.deltas:
            return
        snapshot_size = m.snapshot.size if m.snapshot is not None else 0
        try:
            if (
                m.bytes_since_snapshot()
                >= max(self.options.compact_after_bytes, snapshot_size // 4)
                or m.segments_since_snapshot() >= _MAX_SEGMENTS
            ):
                self.compact()
            elif (
                len(m.deltas) >= self.options.compact_after_deltas
                or len(self._manifest_raw or b"") > _ROLLOVER_BYTES
            ):
                self.roll_over()
        except (StorageError, OSError, sqlite3.Error) as exc:
            log.warning("compaction of %s skipped: %s", self.remote, exc)

    def roll_over(self) -> bool:
        """Archive the manifest and continue with an empty delta list (writer held)."""
        m, raw, etag = self._manifest, self._manifest_raw, self._etag
        if m is None or raw is None or etag is None:
            return False
        archive = f"manifests/{m.version:020d}-{m.nonce}"
        with contextlib.suppress(PreconditionFailedError):
            self.storage.put(archive, raw, if_none_match=True)
        new = m.next(
            deltas=(),
            previous=archive,
            base=fmt.BaseRef(
                version=m.version,
                checksum=m.checksum,
                page_count=m.page_count,
                archive=archive,
                segments=m.segments_since_snapshot() + 1,
                delta_bytes=m.bytes_since_snapshot(),
            ),
        )
        return self._publish_same_version(new, etag, "rolled over")

    def _publish_same_version(self, new: fmt.Manifest, etag: str, what: str) -> bool:
        new_raw = fmt.encode_manifest(new)
        try:
            new_etag = self.storage.put(fmt.MANIFEST_KEY, new_raw, if_match=etag)
        except PreconditionFailedError:
            log.info("%s of %s lost to a newer commit", what, self.remote)
            return False
        with self._cond:
            if self._etag == etag:
                self._manifest, self._manifest_raw, self._etag = new, new_raw, new_etag
                self._save_state()
        log.info("%s %s at version %d", what, self.remote, new.version)
        return True

    def compact(self) -> bool:
        """Fold the deltas into a new snapshot of the current version (writer held).

        The commit it follows is already durable; compaction only changes how
        the same version is stored, so losing its conditional write to another
        writer just means that writer's manifest wins.
        """
        m, raw, etag = self._manifest, self._manifest_raw, self._etag
        if m is None or raw is None or etag is None or not self._checkpoint(required=False):
            return False
        checksum, count = file_checksum(self.cache.db_path, m.page_size)
        if checksum != self._checksum or count != m.page_count:
            log.error("local copy does not match version %d; not compacting", m.version)
            return False
        packed = self.cache.tmp_path("snapshot")
        try:
            size, sha = fmt.write_snapshot(self.cache.db_path, packed, m.page_size)
            nonce = fmt.new_nonce()
            snap_key = f"snapshots/{m.version:020d}-{nonce}"
            self.storage.put_file(snap_key, packed)
            _crash_point("after-snapshot-upload")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(packed)
        archive = f"manifests/{m.version:020d}-{m.nonce}"
        with contextlib.suppress(PreconditionFailedError):
            self.storage.put(archive, raw, if_none_match=True)
        new = m.next(
            nonce=nonce,
            snapshot=fmt.SnapshotRef(
                version=m.version,
                key=snap_key,
                size=size,
                sha256=sha,
                page_count=m.page_count,
                checksum=checksum_hex(checksum),
                created_at=self._clock(),
            ),
            deltas=(),
            previous=archive,
            base=None,
        )
        return self._publish_same_version(new, etag, f"compacted ({size} bytes)")

    def close(self) -> None:
        with self._cond:
            self.cache.close()
            self._opened = False


def _crash_point(name: str) -> None:
    if crash_hook is not None:
        crash_hook(name)


def _with(ref: fmt.DeltaRef, **changes: object) -> fmt.DeltaRef:
    from dataclasses import replace

    return replace(ref, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- registry

_registry: dict[tuple[str, str], Replica] = {}
_registry_lock = threading.Lock()


def get_replica(remote: str, cache_dir: str, factory: Callable[[], Replica]) -> Replica:
    """The process's one :class:`Replica` for ``(remote, cache_dir)`` (``factory`` makes it)."""
    key = (remote, os.path.abspath(cache_dir))
    with _registry_lock:
        replica = _registry.get(key)
        if replica is None:
            replica = factory()
            _registry[key] = replica
        return replica


def forget_replicas() -> None:
    """Close every replica of this process (tests; a forked child must not reuse its parent's)."""
    with _registry_lock:
        for replica in _registry.values():
            replica.close()
        _registry.clear()
