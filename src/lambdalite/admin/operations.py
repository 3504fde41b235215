"""The remote administration commands, as functions (the CLI in :mod:`.cli` wraps them).

Each takes the :class:`~lambdalite.config.Settings` of a replica-mode remote. None of them
touches a local copy of the engine: they read the remote directly, build images in
temporary files (under ``settings.cache_dir``) and publish with the same conditional writes
as the engine, so they are safe to run while instances are committing:

* :func:`status`: what the manifest says, plus the oldest restorable version and the lock.
* :func:`pull`: the newest version into a standalone SQLite file.
* :func:`import_database`: an existing SQLite file becomes version 1 of a new lineage.
* :func:`restore`: an old version into a file, or published in place as a *new* version.
* :func:`compact`: fold the deltas since the snapshot into a new one now (the engine's own
  protocol).
* :func:`verify` (:mod:`.verify`) and :func:`gc` (:mod:`.gc`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lambdalite.admin.gc import GcItem, GcReport, gc
from lambdalite.admin.history import (
    History,
    ManifestRecord,
    Plan,
    ProgressFactory,
    VersionInfo,
    build_image,
    load_history,
    no_progress,
    open_remote,
)
from lambdalite.admin.publish import archive_manifest, discard_snapshot, upload_snapshot, writer_id
from lambdalite.admin.sqlitefile import copy_for_import, set_journal_format
from lambdalite.admin.verify import ObjectCheck, VerifyReport, verify
from lambdalite.config import Settings
from lambdalite.errors import (
    ConfigurationError,
    ConflictError,
    CorruptionError,
    LambdaliteError,
    LockError,
    NotFoundError,
    PreconditionFailedError,
)
from lambdalite.replica import format as fmt
from lambdalite.storage.base import Storage

__all__ = [
    "CompactResult",
    "DatabaseExistsError",
    "GcItem",
    "GcReport",
    "ImportResult",
    "ObjectCheck",
    "PullResult",
    "RestoreResult",
    "VerifyReport",
    "compact",
    "gc",
    "import_database",
    "list_versions",
    "pull",
    "resolve_version",
    "restore",
    "status",
    "verify",
]

log = logging.getLogger("lambdalite.admin")


class DatabaseExistsError(LambdaliteError, ValueError):
    """``import`` found a database at the remote and was not told to replace it."""


@dataclass(frozen=True, slots=True)
class PullResult:
    remote: str
    path: str
    version: int
    lineage: str
    committed_at: float
    size: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class ImportResult:
    remote: str
    source: str
    version: int
    lineage: str
    page_size: int
    page_count: int
    snapshot: str
    snapshot_size: int
    replaced_version: int | None  # the version --force replaced, if any
    archive: str | None  # where the replaced manifest was archived

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class RestoreResult:
    remote: str
    restored_version: int
    committed_at: float
    output: str | None  # the file written, or None (in place)
    published_version: int | None  # in place: the new version now holding the old state
    snapshot: str | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class CompactResult:
    remote: str
    version: int
    compacted: bool
    folded_deltas: int
    snapshot: str | None
    snapshot_size: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _workdir(settings: Settings) -> Iterator[str]:
    """A private temporary folder under the cache dir (images can be large: not in memory)."""
    os.makedirs(settings.cache_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="admin-", dir=settings.cache_dir) as path:
        yield path


def _check_output(path: str, overwrite: bool) -> str:
    path = os.path.abspath(path)
    for suffix in ("-wal", "-journal"):
        if os.path.exists(path + suffix):
            raise FileExistsError(
                f"{path}{suffix} exists: the file is in use or was not closed cleanly; "
                "write to another file"
            )
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; give a file name")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; use --force to replace it")
    return path


def _write_standalone(
    storage: Storage, plan: Plan, path: str, progress: ProgressFactory, remote: str
) -> int:
    """Build ``plan``'s image next to ``path``, make it a rollback-journal file, move it there."""
    tmp = f"{path}.{fmt.new_nonce()}.lambdalite-tmp"
    try:
        with progress(f"downloading version {plan.version}", plan.transfer_bytes) as tick:
            build_image(storage, plan, tmp, progress=tick, remote=remote)
        if os.path.getsize(tmp):
            set_journal_format(tmp, "rollback")
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return os.path.getsize(path)


def _read_current(storage: Storage) -> tuple[ManifestRecord | None, bytes | None, str | None]:
    """(the current manifest, or None if absent; its raw bytes and ETag even when corrupt)."""
    try:
        blob = storage.get(fmt.MANIFEST_KEY)
    except NotFoundError:
        return None, None, None
    assert blob is not None
    try:
        m = fmt.decode_manifest(blob.data)
    except CorruptionError:
        return None, blob.data, blob.etag
    return ManifestRecord(fmt.MANIFEST_KEY, m, blob.data, blob.etag), blob.data, blob.etag


# ---------------------------------------------------------------------------- status


def status(settings: Settings) -> dict[str, Any]:
    """A JSON-able description of the remote's current state."""
    storage = open_remote(settings)
    try:
        history = load_history(storage, remote=settings.remote)
        record = history.current
        m = record.manifest
        inline = [d for d in m.deltas if d.inline is not None]
        objects = [d for d in m.deltas if d.key is not None]
        lineage = history.current_lineage
        versions = lineage.restorable()
        return {
            "remote": settings.remote,
            "version": m.version,
            "lineage": m.lineage,
            "committed_at": m.committed_at,
            "writer": m.writer,
            "page_size": m.page_size,
            "page_count": m.page_count,
            "size": m.page_size * m.page_count,
            "checksum": m.checksum,
            "manifest_etag": record.etag,
            "manifest_size": len(record.raw),
            "snapshot": (
                {"version": m.snapshot.version, "key": m.snapshot.key, "size": m.snapshot.size}
                if m.snapshot is not None
                else None
            ),
            "deltas": {
                "count": len(m.deltas),
                "bytes": m.delta_bytes(),
                "inline": len(inline),
                "inline_bytes": sum(d.size for d in inline),
                "objects": len(objects),
                "object_bytes": sum(d.size for d in objects),
            },
            "base": (
                {"version": m.base.version, "archive": m.base.archive}
                if m.base is not None
                else None
            ),
            "since_snapshot": {
                "deltas": m.version - _snapshot_version(m),
                "bytes": m.bytes_since_snapshot(),
                "segments": m.segments_since_snapshot(),
            },
            "oldest_restorable_version": versions[0] if versions else None,
            "oldest_restorable_at": lineage.committed_at(versions[0])[0] if versions else None,
            "archived_manifests": len(history.records) - 1,
            "history_end": history.end_key,
            "lock": _lock_status(settings, storage, m),
        }
    finally:
        storage.close()


def _snapshot_version(m: fmt.Manifest) -> int:
    """The version of the manifest's snapshot (0: none, its history starts empty)."""
    return m.snapshot.version if m.snapshot is not None else 0


def _lock_status(settings: Settings, storage: Storage, m: fmt.Manifest) -> dict[str, Any] | None:
    """The configured lock's holder (None: no lock configured); a lock error is reported."""
    if settings.lock == "none":
        return None
    if settings.lock == "manifest":  # the write lease, in the manifest just read
        write_lease = m.lease
        if write_lease is None:
            return {"kind": "manifest", "held": False, "waiting": 0}
        return {
            "kind": "manifest",
            "held": write_lease.expires_at >= time.time(),
            "owner": write_lease.owner,
            "expires_at": write_lease.expires_at,
            "waiting": len(write_lease.queue),
        }
    from lambdalite.locks import lock_for_settings

    try:
        lock = lock_for_settings(settings, storage=storage)
        try:
            lease = lock.inspect()
        finally:
            lock.close()
    except LockError as exc:
        log.warning("could not inspect the lock of %s: %s", settings.remote, exc)
        return {"kind": settings.lock, "error": str(exc)}
    if lease is None:
        return {"kind": settings.lock, "held": False}
    return {
        "kind": settings.lock,
        "held": not lease.expired(time.time()),
        "owner": lease.owner,
        "generation": lease.generation,
        "expires_at": lease.expires_at,
    }


def resolve_version(
    settings: Settings, *, to_version: int | None = None, to_time: float | None = None
) -> tuple[VersionInfo, int]:
    """(the retained version ``to_version`` names, or the newest committed at or before
    ``to_time``; the current version)."""
    storage = open_remote(settings)
    try:
        history = load_history(storage, remote=settings.remote)
    finally:
        storage.close()
    return _resolve(history, to_version, to_time), history.current.manifest.version


def _resolve(history: History, to_version: int | None, to_time: float | None) -> VersionInfo:
    if (to_version is None) == (to_time is None):
        raise ConfigurationError("give exactly one of to_version and to_time", key="to_version")
    if to_time is not None:
        return history.version_at(to_time)
    assert to_version is not None
    return history.version_info(to_version)


def list_versions(settings: Settings) -> list[VersionInfo]:
    """Every restorable version of the current lineage, oldest first."""
    storage = open_remote(settings)
    try:
        return load_history(storage, remote=settings.remote).versions()
    finally:
        storage.close()


# ---------------------------------------------------------------------------- pull


def pull(
    settings: Settings,
    dest: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: ProgressFactory = no_progress,
) -> PullResult:
    """Write the newest version into ``dest``, a standalone rollback-journal SQLite file.

    The file is built next to ``dest`` and moved into place only once every object and
    checksum verified, so ``dest`` is never left half written.
    """
    path = _check_output(os.fspath(dest), overwrite)
    storage = open_remote(settings)
    try:
        history = load_history(storage, remote=settings.remote)
        m = history.current.manifest
        plan = history.latest_plan()
        size = _write_standalone(storage, plan, path, progress, settings.remote)
    finally:
        storage.close()
    log.info("pulled version %d of %s into %s", m.version, settings.remote, path)
    return PullResult(settings.remote, path, m.version, m.lineage, m.committed_at, size)


# ---------------------------------------------------------------------------- import


def import_database(
    settings: Settings,
    src: str | os.PathLike[str],
    *,
    force: bool = False,
    progress: ProgressFactory = no_progress,
) -> ImportResult:
    """Upload SQLite file ``src`` as version 1 of a new lineage.

    ``src`` must pass ``PRAGMA integrity_check``; it is copied (never modified), the copy set
    to WAL format and uploaded as a snapshot. The manifest is created with ``If-None-Match``,
    so an existing database is never overwritten unless ``force``: then the current manifest
    is archived (its history stays reachable until gc's retention expires it) and replaced
    with ``If-Match`` on its ETag.
    """
    source = os.path.abspath(os.fspath(src))
    storage = open_remote(settings)
    try:
        record, raw, etag = _read_current(storage)
        if raw is not None and not force:
            what = f"version {record.manifest.version}" if record else "an unreadable manifest"
            raise DatabaseExistsError(
                f"a database exists at {settings.remote} ({what}); use --force to replace it"
            )
        with _workdir(settings) as work:
            image = os.path.join(work, "import.sqlite")
            page_size = copy_for_import(source, image)
            nonce = fmt.new_nonce()
            snap = upload_snapshot(storage, image, 1, page_size, progress, nonce=nonce)
        try:
            archive = _archive_for_replace(storage, record, raw)
            manifest = fmt.Manifest(
                lineage=fmt.new_nonce(),
                version=1,
                nonce=nonce,
                committed_at=time.time(),
                writer=writer_id(),
                page_size=page_size,
                page_count=snap.page_count,
                checksum=snap.checksum,
                snapshot=snap,
                previous=archive if record is not None else None,
                extra={"imported_from": os.path.basename(source)},
                base=None,  # a new snapshot: the deltas after it start from it
            )
            body = fmt.encode_manifest(manifest)
            if etag is None:
                storage.put(fmt.MANIFEST_KEY, body, if_none_match=True)
            else:
                storage.put(fmt.MANIFEST_KEY, body, if_match=etag)
        except PreconditionFailedError as exc:
            discard_snapshot(storage, snap, exc)
            if etag is None:
                raise DatabaseExistsError(
                    f"a database was created at {settings.remote} while importing; nothing "
                    "was replaced (use --force to replace it)"
                ) from exc
            raise ConflictError(
                f"{settings.remote} changed while importing; nothing was replaced, run the "
                "import again"
            ) from exc
    finally:
        storage.close()
    log.info("imported %s into %s as lineage %s", source, settings.remote, manifest.lineage)
    return ImportResult(
        remote=settings.remote,
        source=source,
        version=1,
        lineage=manifest.lineage,
        page_size=page_size,
        page_count=snap.page_count,
        snapshot=snap.key,
        snapshot_size=snap.size,
        replaced_version=record.manifest.version if record else None,
        archive=archive,
    )


def _archive_for_replace(
    storage: Storage, record: ManifestRecord | None, raw: bytes | None
) -> str | None:
    """Archive the manifest ``import --force`` replaces (an unreadable one as is, unlinked)."""
    if record is not None:
        return archive_manifest(storage, record)
    if raw is None:
        return None
    key = f"manifests/unreadable-{fmt.new_nonce()}"
    storage.put(key, raw, if_none_match=True)
    log.warning("kept the unreadable manifest being replaced as %s", key)
    return key


# ---------------------------------------------------------------------------- restore


def restore(
    settings: Settings,
    *,
    to_version: int | None = None,
    to_time: float | None = None,
    output: str | os.PathLike[str] | None = None,
    in_place: bool = False,
    overwrite: bool = False,
    progress: ProgressFactory = no_progress,
) -> RestoreResult:
    """Bring back an old version: ``to_version`` N, or the newest committed at or before the
    POSIX time ``to_time``.

    With ``output`` the image goes into a standalone file (as :func:`pull`). With
    ``in_place`` it is published as a *new* version (current + 1) on top of the current
    one: history is never rewritten, the versions in between stay restorable. The publish
    is conditional on the manifest the restore started from; if a commit landed meanwhile,
    :class:`~lambdalite.errors.ConflictError` and nothing changed.
    """
    if (to_version is None) == (to_time is None):
        raise ConfigurationError("give exactly one of to_version and to_time", key="to_version")
    if (output is None) == (not in_place):
        raise ConfigurationError("give exactly one of output and in_place", key="output")
    path = _check_output(os.fspath(output), overwrite) if output is not None else None
    storage = open_remote(settings)
    try:
        history = load_history(storage, remote=settings.remote)
        info = _resolve(history, to_version, to_time)
        plan = history.plan(info.version)
        if path is not None:
            _write_standalone(storage, plan, path, progress, settings.remote)
            log.info("restored version %d of %s into %s", info.version, settings.remote, path)
            return RestoreResult(settings.remote, info.version, info.committed_at, path, None, None)
        published, snapshot = _publish_restore(settings, storage, history, plan, progress)
    finally:
        storage.close()
    log.info(
        "restored version %d of %s in place as version %d", info.version, settings.remote, published
    )
    return RestoreResult(
        settings.remote, info.version, info.committed_at, None, published, snapshot
    )


def _publish_restore(
    settings: Settings, storage: Storage, history: History, plan: Plan, progress: ProgressFactory
) -> tuple[int, str]:
    current = history.current
    m = current.manifest
    version = m.version + 1
    nonce = fmt.new_nonce()
    with _workdir(settings) as work:
        image = os.path.join(work, "restore.sqlite")
        with progress(f"downloading version {plan.version}", plan.transfer_bytes) as tick:
            build_image(storage, plan, image, progress=tick, remote=settings.remote)
        snap = upload_snapshot(
            storage,
            image,
            version,
            plan.page_size,
            progress,
            nonce=nonce,
            checksum=int(plan.checksum, 16),
        )
    try:
        archive = archive_manifest(storage, current)
        new = fmt.Manifest(
            lineage=m.lineage,
            version=version,
            nonce=nonce,
            committed_at=time.time(),
            writer=writer_id(),
            page_size=plan.page_size,
            page_count=snap.page_count,
            checksum=snap.checksum,
            snapshot=snap,
            previous=archive,
            extra={"restored_from": plan.version},
            base=None,  # a new snapshot: the deltas after it start from it
        )
        storage.put(fmt.MANIFEST_KEY, fmt.encode_manifest(new), if_match=current.etag)
    except PreconditionFailedError as exc:
        discard_snapshot(storage, snap, exc)
        raise ConflictError(
            f"{settings.remote} moved past version {m.version} while restoring; nothing was "
            "published, run the restore again"
        ) from exc
    return version, snap.key


# ---------------------------------------------------------------------------- compact


def compact(settings: Settings, *, progress: ProgressFactory = no_progress) -> CompactResult:
    """Fold the deltas since the snapshot into a new snapshot of the same version, now.

    Those deltas may span several manifests (rollovers): the image is built across them.
    The engine's protocol: upload the snapshot, archive the manifest, publish the
    compacted manifest (same version, no deltas, no ``base``, ``previous`` = the archive)
    with ``If-Match``. Losing that race to a commit is not an error: the result says so.
    """
    storage = open_remote(settings)
    try:
        history = load_history(storage, remote=settings.remote)
        current = history.current
        m = current.manifest
        folded = m.version - _snapshot_version(m)
        if not folded:
            return CompactResult(
                settings.remote,
                m.version,
                False,
                0,
                None,
                None,
                "nothing to fold: the snapshot is of the current version",
            )
        plan = history.latest_plan()
        nonce = fmt.new_nonce()
        with _workdir(settings) as work:
            image = os.path.join(work, "compact.sqlite")
            with progress(f"downloading version {m.version}", plan.transfer_bytes) as tick:
                build_image(storage, plan, image, progress=tick, remote=settings.remote)
            snap = upload_snapshot(
                storage,
                image,
                m.version,
                m.page_size,
                progress,
                nonce=nonce,
                checksum=int(m.checksum, 16),
            )
        try:
            archive = archive_manifest(storage, current)
            new = m.next(nonce=nonce, snapshot=snap, deltas=(), previous=archive, base=None)
            storage.put(fmt.MANIFEST_KEY, fmt.encode_manifest(new), if_match=current.etag)
        except PreconditionFailedError as exc:
            discard_snapshot(storage, snap, exc)
            log.info("compaction of %s lost to a newer commit", settings.remote)
            return CompactResult(
                settings.remote,
                m.version,
                False,
                0,
                None,
                None,
                "a commit landed meanwhile; run compact again",
            )
    finally:
        storage.close()
    log.info("compacted %s at version %d (%d deltas)", settings.remote, m.version, folded)
    return CompactResult(settings.remote, m.version, True, folded, snap.key, snap.size, "compacted")
