"""The test database: a fresh database of the same mode, in the local cache directory.

Django's SQLite backend tests on an in-memory database; lambdalite has none (every instance
works on a local copy of a remote), so the test database is, unless ``TEST['NAME']`` names one:

* replica mode: a folder remote ``file://<cache_dir>/django-test-databases/<alias>-<digest>``;
* shared-file mode: the file ``<cache_dir>/django-test-databases/<alias>-<digest>.sqlite3``,
  under the configured lock.

``<digest>`` is derived from the real remote, so two aliases never share a test database. The
name is stable (``--keepdb`` works); an old one is erased first (after asking, as Django does,
unless ``--noinput``). Destroying it removes the folder (or file) and this process's local
copy. A ``TEST['NAME']`` that is an ``s3://`` or ``memory://`` URL is used as is and never
erased: point it at a prefix reserved for tests.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import shutil
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from django.db import NotSupportedError
from django.db.backends.sqlite3 import creation as sqlite_creation

import lambdalite
from lambdalite.config import Settings
from lambdalite.replica.cache import CacheDir

__all__ = ["TEST_DIR", "DatabaseCreation"]

log = logging.getLogger("lambdalite.contrib.django")

#: Folder (under ``cache_dir``) of the default test databases.
TEST_DIR = "django-test-databases"
# Test databases destroyed by this process: a new one gets a new name, so that the engine
# of the old one (which this process may still hold) is never reused.
_generation: dict[str, int] = {}
_stems: dict[str, str] = {}  # default test database name -> its stem (key of _generation)


def _folder_of(target: str) -> str | None:
    """The folder of a ``file://`` remote, or None."""
    parts = urllib.parse.urlsplit(target)
    if parts.scheme.lower() != "file":
        return None
    return urllib.parse.unquote(parts.path)


class DatabaseCreation(sqlite_creation.DatabaseCreation):  # type: ignore[misc]
    """Creates, clones and destroys the test database (see the module docstring)."""

    @staticmethod
    def is_in_memory_db(database_name: Any) -> bool:
        return False

    def _settings(self, name: object | None = None) -> Settings:
        resolved = self.connection.lambdalite_resolve(name)
        settings: Settings = resolved.settings
        return settings

    def _get_test_db_name(self) -> str:
        test_name = self.connection.settings_dict["TEST"]["NAME"]
        if test_name:
            return str(os.fspath(test_name))
        settings = self._settings()
        digest = hashlib.sha256(settings.remote.encode()).hexdigest()[:10]
        stem = f"{self.connection.alias}-{digest}"
        generation = _generation.get(stem, 0)
        suffix = f"-{generation}" if generation else ""
        base = os.path.join(settings.cache_dir, TEST_DIR, stem + suffix)
        name = base + ".sqlite3" if settings.mode == "shared-file" else Path(base).as_uri()
        _stems[name] = stem
        return name

    def _create_test_db(self, verbosity: int, autoclobber: bool, keepdb: bool = False) -> str:
        name = self._get_test_db_name()
        if keepdb:
            return name
        if self._exists(name):
            if verbosity >= 1:
                self.log(
                    "Destroying old test database for alias "
                    f"{self._get_database_display_str(verbosity, name)}..."
                )
            confirm = "yes" if autoclobber else input(
                "Type 'yes' if you would like to try deleting the test "
                f"database '{name}', or 'no' to cancel: "
            )
            if confirm != "yes":
                self.log("Tests cancelled.")
                sys.exit(1)
            try:
                self._erase(name, own_engine=False)
            except Exception as exc:
                self.log(f"Got an error deleting the old test database: {exc}")
                sys.exit(2)
        parent = _folder_of(name) or name
        os.makedirs(os.path.dirname(parent.rstrip("/")), exist_ok=True)
        return name

    def _clone_test_db(self, suffix: str, verbosity: int, keepdb: bool = False) -> None:
        source = self.connection.settings_dict["NAME"]
        target = self.get_test_db_clone_settings(suffix)["NAME"]
        source_folder = _folder_of(os.fspath(source))
        if source_folder is None and "://" in os.fspath(source):
            raise NotSupportedError(
                f"cloning the test database {source!r} is not supported: only folder remotes "
                "(the default test database) and shared-file databases can be cloned"
            )
        if source_folder is None:
            super()._clone_test_db(suffix, verbosity, keepdb)
            return
        if self._exists(target):
            if keepdb:
                return
            self._erase(target, own_engine=False)
        target_folder = _folder_of(target)
        assert target_folder is not None
        try:
            shutil.copytree(source_folder, target_folder)
        except Exception as exc:
            self.log(f"Got an error cloning the test database: {exc}")
            sys.exit(2)

    def _destroy_test_db(self, test_database_name: str, verbosity: int) -> None:
        test_name = self.connection.settings_dict["TEST"]["NAME"]
        self._erase(os.fspath(test_database_name), own_engine=True)
        stem = _stems.pop(os.fspath(test_database_name), None)
        if not test_name and stem is not None:
            _generation[stem] = _generation.get(stem, 0) + 1

    def setup_worker_connection(self, _worker_id: int) -> None:
        settings_dict = self.get_test_db_clone_settings(_worker_id)
        self.connection.settings_dict.update(settings_dict)  # Django's own in-place update
        self.connection.close()

    # -- helpers --------------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        folder = _folder_of(name)
        if folder is not None:
            return os.path.exists(folder)
        if "://" in name:
            return False  # s3:// or memory://: used as is
        return os.path.exists(name)

    def _erase(self, name: str, *, own_engine: bool) -> None:
        """Remove the test database ``name`` and the local copies this process may remove."""
        folder = _folder_of(name)
        if folder is None and "://" in name:
            log.info("test database %s left in place (only folders and files are erased)", name)
            return
        settings = self._settings(name)
        if own_engine and settings.mode == "replica":
            # This process's engine of the test remote holds its local copy: close it, then
            # the copy can go. The closed engine is never used again (a new test database
            # gets a new name).
            replica = lambdalite.replica_for(settings)
            with contextlib.suppress(Exception):
                path = replica.cache.path
                replica.close()
                shutil.rmtree(path, ignore_errors=True)
        if settings.mode == "replica":
            _discard_free_copies(settings)
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            return
        for path in [name, *glob.glob(glob.escape(name) + "[-.]*")]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def _discard_free_copies(settings: Settings) -> None:
    """Remove the local copies of ``settings.remote`` in its cache dir that no process holds."""
    base = CacheDir(settings.cache_dir, settings.remote).path
    for path in [base, *glob.glob(glob.escape(base) + ".*")]:
        lock_path = os.path.join(path, ".lock")
        if not os.path.isdir(path):
            continue
        try:
            with open(lock_path, "a+b") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(path, ignore_errors=True)
        except BlockingIOError:
            log.info("local copy %s is in use by another process; left in place", path)
        except OSError:
            continue
