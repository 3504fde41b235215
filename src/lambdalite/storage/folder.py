"""``file:///absolute/path``: a local folder as the remote (the embedded default).

Objects are plain files under the root folder; a key with ``/`` becomes
subfolders (``snapshots/0001`` is ``<root>/snapshots/0001``). The semantics are
those of S3, so code tested here behaves the same on S3:

* ETag = hex MD5 of the bytes (like a single-part S3 upload).
* Every write and delete of a key runs under an exclusive ``fcntl.flock`` on a
  lock file for that key (``<root>/.lambdalite/locks/``; keys are spread over
  256 lock files by hash, so the folder stays bounded and two keys that share a
  lock file only wait for each other). Under the lock the condition is
  compared, then the new bytes, already written to a temporary file in
  ``<root>/.lambdalite/tmp/`` and fsynced, are moved into place with
  ``os.replace`` and the folder is fsynced. So conditional writes are atomic
  across threads and processes on one host (and on any filesystem whose
  ``flock`` is shared between hosts; NFS and EFS are not safe here).
* Readers take no lock: a rename is atomic, so a reader sees the old or the new
  object, never a torn one.
* A crash can leave temporary files behind. ``get`` and ``list`` never see them
  (``list`` skips ``.lambdalite``), and :meth:`FolderStorage.clean_temp_files`
  removes those no live writer holds; each instance runs it once, on its first
  write.
* The root is created on first write. A root that is an existing regular file is
  a :class:`~lambdalite.errors.ConfigurationError` at first use (the constructor
  does no I/O).
* Unlike S3, a key cannot be both an object and a folder: writing ``a/b`` when
  object ``a`` exists (or ``a`` when ``a/b`` exists) raises
  :class:`~lambdalite.errors.StorageError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

from lambdalite.errors import (
    ConfigurationError,
    NotFoundError,
    PreconditionFailedError,
    StorageError,
)
from lambdalite.storage._common import check_key, url_error
from lambdalite.storage.base import Blob, ObjectInfo, ProgressCallback

__all__ = ["FolderStorage"]

logger = logging.getLogger("lambdalite.storage.folder")

_FORM = "file:///absolute/path/to/folder"
_HIDDEN = ".lambdalite"
_LOCK_STRIPES = 256
_CHUNK = 1 << 20


class FolderStorage:
    """A remote kept in a local folder (see the module docstring for the semantics)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        path = os.fspath(root)
        if not os.path.isabs(path):
            raise url_error(f"file://{path}", "is not an absolute path", _FORM)
        self._root = os.path.normpath(path)
        self._hidden = os.path.join(self._root, _HIDDEN)
        self._root_checked = False
        self._swept = False

    @classmethod
    def from_url(
        cls, url: str, *, endpoint_url: str | None = None, region: str | None = None
    ) -> FolderStorage:
        """Parse ``file:///absolute/path``; ``endpoint_url`` and ``region`` are ignored."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "file":
            raise url_error(url, "is not a file:// URL", _FORM)
        if parts.netloc:
            raise url_error(
                url,
                f"has a host part {parts.netloc!r} (a relative path needs to be made "
                "absolute, with three slashes after 'file:')",
                _FORM,
            )
        if parts.query or parts.fragment:
            raise url_error(url, "has a query or fragment", _FORM)
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise url_error(url, "is not an absolute path", _FORM)
        return cls(path)

    @property
    def url(self) -> str:
        return "file://" + quote(self._root)

    @property
    def root(self) -> str:
        """The folder holding the objects."""
        return self._root

    # -- reading ---------------------------------------------------------------------------

    def get(self, key: str, *, if_none_match: str | None = None) -> Blob | None:
        path = self._path(key)
        with self._translating("get", key):
            data = self._read(path, key)
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if if_none_match is not None and etag == if_none_match:
            return None
        return Blob(data, etag)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._translating("list", prefix):
            if not self._root_exists():
                return
            base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
            if base and not _is_valid_key(base):
                return  # no valid key starts with it (and never walk outside the root)
            keys = sorted(k for k in self._walk(base) if k.startswith(prefix))
        for key in keys:
            path = os.path.join(self._root, key)
            try:
                with open(path, "rb") as f:
                    st = os.fstat(f.fileno())
                    etag = _md5_of(f)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue  # deleted since the walk
            except OSError as exc:
                raise self._translate(exc, "list", key) from exc
            yield ObjectInfo(key, st.st_size, etag, st.st_mtime)

    def get_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        source = self._path(key)
        with self._translating("get_file", key):
            src = self._open(source, key)
        with src:
            directory = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=".lambdalite-", suffix=".partial", dir=directory)
            try:
                with os.fdopen(fd, "wb") as dst:
                    etag = _copy(src, dst, progress)
                os.replace(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise
        return etag

    # -- writing ---------------------------------------------------------------------------

    def put(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        return self._write(key, [bytes(data)], None, if_match, if_none_match, "put")

    def put_file(self, key: str, path: str, *, progress: ProgressCallback | None = None) -> str:
        with open(path, "rb") as src:
            chunks = iter(lambda: src.read(_CHUNK), b"")
            return self._write(key, chunks, progress, None, False, "put_file")

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        path = self._path(key)
        with self._translating("delete", key):
            if not self._root_exists():
                if if_match is not None:
                    raise self._precondition(key, if_match)
                return
            self._prepare()
            with self._locked(key):
                if if_match is not None and _etag_or_none(path) != if_match:
                    raise self._precondition(key, if_match)
                try:
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    return  # S3 semantics: deleting a missing object is not an error
                _fsync_dir(os.path.dirname(path))

    def clean_temp_files(self, older_than: float = 60.0) -> int:
        """Remove temporary files older than ``older_than`` seconds that no writer holds.

        Returns how many were removed. A live writer holds a lock on its temporary
        file, so it is never removed from under it.
        """
        tmp_dir = os.path.join(self._hidden, "tmp")
        removed = 0
        try:
            names = os.listdir(tmp_dir)
        except (FileNotFoundError, NotADirectoryError):
            return 0
        deadline = time.time() - older_than
        for name in names:
            path = os.path.join(tmp_dir, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                if os.fstat(fd).st_mtime > deadline:
                    continue
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
                removed += 1
            except (BlockingIOError, FileNotFoundError):
                continue
            finally:
                os.close(fd)
        if removed:
            logger.info("removed %d leftover temporary file(s) from %s", removed, tmp_dir)
        return removed

    def close(self) -> None:
        """Nothing to release (no file stays open between calls)."""

    # -- internals -------------------------------------------------------------------------

    def _path(self, key: str) -> str:
        return os.path.join(self._root, *check_key(key).split("/"))

    def _write(
        self,
        key: str,
        chunks: Iterable[bytes],
        progress: ProgressCallback | None,
        if_match: str | None,
        if_none_match: bool,
        op: str,
    ) -> str:
        path = self._path(key)
        with self._translating(op, key):
            self._prepare()
            with self._temp_file() as (tmp, f):
                etag = _copy_chunks(chunks, f, progress)
                with self._locked(key):
                    if if_none_match or if_match is not None:
                        current = _etag_or_none(path)
                        if if_none_match and current is not None:
                            raise PreconditionFailedError(
                                f"{key!r} already exists in {self.url}", remote=self.url, key=key
                            )
                        if if_match is not None and current != if_match:
                            raise self._precondition(key, if_match)
                    self._install(tmp, path)
        return etag

    def _precondition(self, key: str, etag: str) -> PreconditionFailedError:
        return PreconditionFailedError(
            f"{key!r} in {self.url} is not at ETag {etag!r}", remote=self.url, key=key
        )

    def _root_exists(self) -> bool:
        """Whether the root folder exists; a root that is not a folder is a ConfigurationError."""
        if self._root_checked:
            return True
        try:
            st = os.stat(self._root)  # one stat: no window between "exists" and "is a folder"
        except FileNotFoundError:
            return False
        except OSError:  # pragma: no cover - stat failures other than ENOENT are rare
            return False
        is_dir = stat.S_ISDIR(st.st_mode)
        if not is_dir:
            raise url_error(self.url, "points at an existing file, not a folder", _FORM)
        self._root_checked = is_dir
        return is_dir

    def _prepare(self) -> None:
        """Create the root and its hidden folders on first write; sweep old temporary files."""
        if not self._root_exists():
            _makedirs_durably(self._root)
            logger.info("created remote folder %s", self._root)
            self._root_checked = True
        for sub in ("locks", "tmp"):
            os.makedirs(os.path.join(self._hidden, sub), exist_ok=True)
        if not self._swept:
            self._swept = True
            self.clean_temp_files()

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        stripe = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % _LOCK_STRIPES
        lock_path = os.path.join(self._hidden, "locks", f"{stripe:03d}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    @contextlib.contextmanager
    def _temp_file(self) -> Iterator[tuple[str, BinaryIO]]:
        """A locked temporary file in the hidden folder, removed unless it was moved into place."""
        fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=os.path.join(self._hidden, "tmp"))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # tells clean_temp_files that a writer is alive
            with os.fdopen(fd, "wb", closefd=False) as f:
                yield tmp, f
        finally:
            os.close(fd)
            _unlink_quietly(tmp)

    def _install(self, tmp: str, path: str) -> None:
        parent = os.path.dirname(path)
        _makedirs_durably(parent)
        os.replace(tmp, path)
        _fsync_dir(parent)

    def _read(self, path: str, key: str) -> bytes:
        with self._open(path, key) as f:
            return f.read()

    def _open(self, path: str, key: str) -> BinaryIO:
        try:
            return open(path, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            self._root_exists()  # a root that is a regular file is a ConfigurationError
            message = f"no object {key!r} in {self.url}"
            raise NotFoundError(message, remote=self.url, key=key) from exc

    def _walk(self, base: str) -> Iterator[str]:
        """Yield the keys of every regular file under ``base`` (a key prefix up to a '/')."""
        start = os.path.join(self._root, *base.split("/")) if base else self._root
        stack = [(start, base + "/" if base else "")]
        while stack:
            directory, rel = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if not rel and entry.name == _HIDDEN:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, rel + entry.name + "/"))
                elif entry.is_file():
                    yield rel + entry.name

    @contextlib.contextmanager
    def _translating(self, op: str, key: str) -> Iterator[None]:
        try:
            yield
        except (StorageError, ConfigurationError):
            raise
        except OSError as exc:
            raise self._translate(exc, op, key) from exc

    def _translate(self, exc: OSError, op: str, key: str) -> StorageError:
        """The one place where an OS error of this backend becomes a lambdalite error."""
        where = f"{op} {key!r} in {self.url}"
        if isinstance(exc, (NotADirectoryError, IsADirectoryError, FileExistsError)):
            return StorageError(
                f"{where}: the key clashes with a folder or an object of the same name "
                f"(a folder remote cannot hold both 'a' and 'a/b'): {exc}",
                remote=self.url,
                key=key,
            )
        if isinstance(exc, PermissionError):
            return StorageError(f"{where}: permission denied: {exc}", remote=self.url, key=key)
        if exc.errno == errno.ENOSPC:
            return StorageError(f"{where}: no space left on device", remote=self.url, key=key)
        return StorageError(f"{where}: {exc}", remote=self.url, key=key)


def _copy(src: BinaryIO, dst: BinaryIO, progress: ProgressCallback | None) -> str:
    return _copy_chunks(iter(lambda: src.read(_CHUNK), b""), dst, progress)


def _copy_chunks(chunks: Iterable[bytes], dst: BinaryIO, progress: ProgressCallback | None) -> str:
    """Write ``chunks`` to ``dst``, fsync it, and return the hex MD5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    for chunk in chunks:
        dst.write(chunk)
        digest.update(chunk)
        if progress is not None:
            progress(len(chunk))
    dst.flush()
    os.fsync(dst.fileno())
    return digest.hexdigest()


def _md5_of(f: BinaryIO) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    while chunk := f.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _is_valid_key(key: str) -> bool:
    try:
        check_key(key)
    except ConfigurationError:
        return False
    return True


def _etag_or_none(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return _md5_of(f)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _makedirs_durably(path: str) -> None:
    """Create ``path`` and its missing parents, fsyncing each parent that got a new entry."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory)
        _fsync_dir(os.path.dirname(directory))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
