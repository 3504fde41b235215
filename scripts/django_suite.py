"""Run Django's own test apps against lambdalite's backend and against stock sqlite3.

Used by ``scripts/django-suite``. It downloads the source distribution of the installed Django
version (``pip download --no-binary :all: --no-deps django==X``: Django's test suite is only in
the sdist), writes one settings module per backend into its ``tests/`` folder, runs
``runtests.py`` on the chosen apps with each, and prints the counts side by side. Each app runs
in its own ``runtests.py`` process, so one crash does not hide the rest.

    scripts/django-suite                       # the default apps
    scripts/django-suite basic transactions    # some apps
    scripts/django-suite --backend lambdalite --keep-going -- queries
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

DEFAULT_APPS = [
    "basic",
    "transactions",
    "transaction_hooks",
    "select_for_update",
    "bulk_create",
    "update",
    "delete",
    "get_or_create",
    "model_fields",
    "expressions",
    "aggregation",
    "queries",
    "backends",
    "schema",
    "migrations",
]

SETTINGS = {
    "sqlite3": """
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3"},
    "other": {"ENGINE": "django.db.backends.sqlite3"},
}
""",
    "lambdalite": """
import os
_root = os.environ["LLSUITE_ROOT"]
DATABASES = {
    alias: {
        "ENGINE": "lambdalite.contrib.django",
        "NAME": "file://" + os.path.join(_root, alias),
        "OPTIONS": {"cache_dir": os.path.join(_root, "cache")},
    }
    for alias in ("default", "other")
}
""",
}
COMMON = """
SECRET_KEY = "django_tests_secret_key"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
"""


@dataclass
class Counts:
    ran: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    expected_failures: int = 0
    unexpected_successes: int = 0
    crashed: bool = False
    seconds: float = 0.0

    @property
    def passed(self) -> int:
        bad = self.failures + self.errors + self.skipped
        return max(self.ran - bad - self.expected_failures - self.unexpected_successes, 0)

    def add(self, other: Counts) -> None:
        for name in ("ran", "failures", "errors", "skipped", "expected_failures",
                     "unexpected_successes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.crashed = self.crashed or other.crashed
        self.seconds += other.seconds


def parse(output: str) -> Counts:
    counts = Counts()
    ran = re.findall(r"^Ran (\d+) tests? in", output, re.M)
    if not ran:
        counts.crashed = True
        return counts
    counts.ran = int(ran[-1])
    status = re.findall(r"^(?:FAILED|OK)(?: \((.*)\))?\s*$", output, re.M)
    for part in (status[-1] if status else "").split(","):
        if "=" in part:
            key, value = part.strip().split("=")
            key = key.replace(" ", "_")
            if hasattr(counts, key):
                setattr(counts, key, int(value))
    return counts


def django_source(version: str, cache: Path) -> Path:
    tests = cache / f"django-{version}" / "tests"
    if tests.is_dir():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
         f"django=={version}", "-d", str(cache)],
        check=True,
    )
    archive = next(p for p in cache.iterdir()
                   if p.name.lower().startswith(f"django-{version}") and p.name.endswith(".tar.gz"))
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/tests/" in m.name or m.name.endswith("/tests")]
        tar.extractall(cache, members=members, filter="data")
    found = [p for p in cache.iterdir() if p.is_dir() and p.name.lower() == f"django-{version}"]
    if found and found[0] != cache / f"django-{version}":
        found[0].rename(cache / f"django-{version}")
    return tests


def run_app(tests: Path, backend: str, app: str, timeout: float, verbose: bool) -> Counts:
    root = Path(tempfile.mkdtemp(prefix=f"django-suite-{backend}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMBDALITE_", "DJANGO_"))}
    env["LLSUITE_ROOT"] = str(root)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tests), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "runtests.py", f"--settings=test_{backend}_suite", "--parallel=1",
           "--noinput", "-v", "1", app]
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=tests, env=env, capture_output=True, text=True,
                              timeout=timeout)
        output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        output = f"TIMEOUT after {timeout}s\n" + str(exc.stderr or "")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    counts = parse(output)
    counts.seconds = time.monotonic() - started
    if verbose or counts.crashed:
        log = Path(tempfile.gettempdir()) / f"django-suite-{backend}-{app}.log"
        log.write_text(output)
        print(f"    ({backend} {app}: full output in {log})", file=sys.stderr)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("apps", nargs="*", default=DEFAULT_APPS)
    parser.add_argument("--backend", action="append", choices=sorted(SETTINGS),
                        help="run only this backend (repeatable); default: both")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per app")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "lambdalite-django-suite")
    parser.add_argument("--json", type=Path, help="also write the counts to this file")
    parser.add_argument("--verbose", action="store_true", help="keep every app's output")
    args = parser.parse_args()

    import django

    version = django.get_version()
    tests = django_source(version, args.cache)
    for backend, text in SETTINGS.items():
        (tests / f"test_{backend}_suite.py").write_text(text + COMMON)
    backends = args.backend or ["lambdalite", "sqlite3"]
    print(f"Django {version}, SQLite {__import__('sqlite3').sqlite_version}; apps: "
          + " ".join(args.apps))
    results: dict[str, dict[str, Counts]] = {b: {} for b in backends}
    header = f"{'app':<20}" + "".join(f"{b + ' pass/fail/error/skip':>36}" for b in backends)
    print(header)
    for app in args.apps:
        row = f"{app:<20}"
        for backend in backends:
            counts = run_app(tests, backend, app, args.timeout, args.verbose)
            results[backend][app] = counts
            cell = ("CRASHED" if counts.crashed else
                    f"{counts.passed}/{counts.failures}/{counts.errors}/{counts.skipped}")
            row += f"{cell + f' ({counts.seconds:.0f}s)':>36}"
        print(row, flush=True)
    totals = {b: Counts() for b in backends}
    for backend in backends:
        for counts in results[backend].values():
            totals[backend].add(counts)
    print("-" * len(header))
    print(f"{'total':<20}" + "".join(
        f"{f'{t.passed}/{t.failures}/{t.errors}/{t.skipped} ({t.seconds:.0f}s)':>36}"
        for t in totals.values()))
    for backend, t in totals.items():
        print(f"{backend}: {t.ran} tests, {t.passed} passed, {t.failures} failed, {t.errors} "
              f"errors, {t.skipped} skipped, {t.expected_failures} expected failures"
              + (" (some apps crashed)" if t.crashed else ""))
    if args.json:
        args.json.write_text(json.dumps(
            {b: {app: asdict(c) for app, c in r.items()} for b, r in results.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
