"""The local cache: one folder per remote, holding the local copy and its state.

``<cache_dir>/<slug>-<hash>/`` contains ``db.sqlite`` (the local copy, in WAL
mode), ``state.json`` (which version of the remote it holds, with the manifest
and the database checksum) and ``.lock``. When a local copy is discarded while
connections still have it open, the next one is a new file
(``db.<generation>.sqlite``), so nothing SQLite does with the old one (its
connections close, checkpoint and delete their WAL by name) can touch it.
A process holds the folder's lock (``fcntl.flock``) for as long as it uses
it; a second process that finds the folder taken uses a sibling folder of its
own instead, so processes never share a local copy.

The state file is written *before* the local copy is modified (``clean:
false``) and again after, so a crash in between is detected on the next start
and the local copy is pulled again: the cache heals itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from typing import IO, Any

__all__ = ["CacheDir", "LocalState"]

log = logging.getLogger("lambdalite.replica.cache")


@dataclass(frozen=True, slots=True)
class LocalState:
    remote: str
    version: int
    etag: str | None
    checksum: str
    page_size: int
    page_count: int
    manifest: str | None  # the manifest's text, as read (None: the remote has none yet)
    clean: bool = True
    generation: int = 0  # which db file holds the local copy (see CacheDir.db_path)


class CacheDir:
    """The folder of one remote's local copy, exclusively held by this process."""

    def __init__(self, cache_dir: str, remote: str) -> None:
        digest = hashlib.sha256(remote.encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", remote.split("://", 1)[-1])[-40:].strip("_")
        self._base = os.path.join(cache_dir, f"{slug or 'db'}-{digest}")
        self.path = self._base
        self.remote = remote
        self.generation = 0
        self._lock_file: IO[bytes] | None = None

    @property
    def db_path(self) -> str:
        return self.db_path_of(self.generation)

    def db_path_of(self, generation: int) -> str:
        name = "db.sqlite" if generation == 0 else f"db.{generation}.sqlite"
        return os.path.join(self.path, name)

    def remove_generation(self, generation: int) -> None:
        """Delete the files of a discarded local copy that no connection uses any more."""
        if generation == self.generation:
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                os.unlink(self.db_path_of(generation) + suffix)

    @property
    def wal_path(self) -> str:
        return self.db_path + "-wal"

    @property
    def state_path(self) -> str:
        return os.path.join(self.path, "state.json")

    def tmp_path(self, name: str) -> str:
        return os.path.join(self.path, f".tmp-{os.getpid()}-{name}")

    def open(self) -> None:
        """Create and lock the folder (or a private sibling if another process has it)."""
        if self._lock_file is not None:
            return
        for attempt in range(100):
            path = self._base if attempt == 0 else f"{self._base}.{attempt}"
            os.makedirs(path, exist_ok=True)
            f = open(os.path.join(path, ".lock"), "a+b")  # noqa: SIM115 - held for the process
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            if attempt:
                log.info("cache folder %s is in use by another process; using %s", self._base, path)
            self.path = path
            self._lock_file = f
            self._clean_temp_files()
            return
        raise OSError(f"could not lock any cache folder under {self._base}")

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def still_locked(self) -> bool:
        """Whether the folder's lock file is still the one this process locked.

        False when the folder (or the file) was deleted or replaced while the
        process ran: another process could then take the folder for itself.
        """
        if self._lock_file is None:
            return False
        try:
            ours = os.fstat(self._lock_file.fileno())
            there = os.stat(os.path.join(self.path, ".lock"))
        except OSError:
            return False
        return (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino)

    def reopen(self) -> None:
        """Take a folder again after this one was deleted under the running process."""
        self.close()
        self.path = self._base
        self.open()

    def _clean_temp_files(self) -> None:
        for name in os.listdir(self.path):
            if name.startswith(".tmp-"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, name))

    def load_state(self) -> LocalState | None:
        try:
            with open(self.state_path, encoding="utf-8") as f:
                raw: dict[str, Any] = json.load(f)
            state = LocalState(**raw)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable cache state %s: %s", self.state_path, exc)
            return None
        if state.remote != self.remote:
            return None
        return state

    def save_state(self, state: LocalState) -> None:
        tmp = self.tmp_path("state")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(state), f)
        os.replace(tmp, self.state_path)

    def discard(self) -> None:
        """Forget the local copy entirely (it will be pulled again)."""
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.db_path + suffix)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.state_path)

    def remove_other_generations(self) -> None:
        """Delete the files of local copies this folder no longer uses (at open only)."""
        current = os.path.basename(self.db_path)
        for name in os.listdir(self.path):
            if re.fullmatch(r"db(\.\d+)?\.sqlite(-wal|-shm|-journal)?", name) and not (
                name == current or name.startswith(current + "-")
            ):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.path, name))

    def abandon(self) -> None:
        """In a forked child: drop the inherited handle on the folder's lock without touching it.

        The lock belongs to the parent's open file description; closing the
        child's descriptor leaves it with the parent.
        """
        f, self._lock_file = self._lock_file, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
