"""Remote administration: history, status, pull, import, restore, verify, compact, gc.

These functions work on a remote directly (no engine local copy) and are what the
``lambdalite`` command line runs (:mod:`lambdalite.admin.cli` registers the commands)::

    from lambdalite.admin import restore, verify
    from lambdalite.config import Settings

    settings = Settings.build("s3://my-bucket/app")
    report = verify(settings)
    if report.ok:
        restore(settings, to_version=41, output="app-v41.sqlite")

The user documentation is ``docs/operations.md``.
"""

from __future__ import annotations

from lambdalite.admin.gc import GcItem, GcReport, gc
from lambdalite.admin.history import (
    History,
    Lineage,
    NoDatabaseError,
    Plan,
    PlanStep,
    ProgressFactory,
    VersionInfo,
    VersionNotAvailableError,
    build_image,
    load_history,
)
from lambdalite.admin.operations import (
    CompactResult,
    DatabaseExistsError,
    ImportResult,
    PullResult,
    RestoreResult,
    compact,
    import_database,
    list_versions,
    pull,
    restore,
    status,
)
from lambdalite.admin.sqlitefile import NotADatabaseError
from lambdalite.admin.verify import ObjectCheck, VerifyReport, verify

__all__ = [
    "CompactResult",
    "DatabaseExistsError",
    "GcItem",
    "GcReport",
    "History",
    "ImportResult",
    "Lineage",
    "NoDatabaseError",
    "NotADatabaseError",
    "ObjectCheck",
    "Plan",
    "PlanStep",
    "ProgressFactory",
    "PullResult",
    "RestoreResult",
    "VerifyReport",
    "VersionInfo",
    "VersionNotAvailableError",
    "build_image",
    "compact",
    "gc",
    "import_database",
    "list_versions",
    "load_history",
    "pull",
    "restore",
    "status",
    "verify",
]
