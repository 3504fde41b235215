"""The Django backend (``ENGINE = "lambdalite.contrib.django"``) against folder remotes.

Django's settings are process-global: this module configures them once (module fixture) with
the project in ``tests/integration/djangoproj``, and is the only module of the suite that sets
up Django in the pytest process. Two aliases on one remote with separate cache dirs
(``default`` and ``twin``) are two simulated instances inside this process; tests that need
real concurrency run instances as subprocesses (:mod:`tests.integration.djangoproj.worker`).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

django = pytest.importorskip("django")

from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

from lambdalite.errors import ConflictError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
PROJECT = "tests.integration.djangoproj.settings"


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.remote = (root / "remote").as_uri()
        self.snapshot: dict[str, Any] = {}


def _entry(name: str, cache: Path, **options: Any) -> dict[str, Any]:
    return {
        "ENGINE": "lambdalite.contrib.django",
        "NAME": name,
        "OPTIONS": {"cache_dir": str(cache), **options},
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if settings.configured:
        pytest.skip("Django settings were configured by another module of this process")
    import tests.integration.djangoproj.settings as project

    root = tmp_path_factory.mktemp("django-backend")
    e = Env(root)
    values = {key: getattr(project, key) for key in dir(project) if key.isupper()}
    values["DATABASES"] = {
        "default": _entry(e.remote, root / "cache-a"),
        "twin": _entry(e.remote, root / "cache-b", init_command="PRAGMA cache_size = -4000;"
                       "PRAGMA temp_store = MEMORY"),
        "immediate": _entry(e.remote, root / "cache-c", transaction_mode="IMMEDIATE"),
        # a second remote with a file lock, two instances
        "lock_a": _entry((root / "locked").as_uri(), root / "cache-la", lock="file",
                         transaction_mode="IMMEDIATE"),
        "lock_b": _entry((root / "locked").as_uri(), root / "cache-lb", lock="file",
                         timeout=0.5),
        # shared-file mode: one database file, written in place under a file lock
        "efs_a": _entry(str(root / "efs" / "app.db"), root / "unused", lock="file"),
        "efs_b": _entry(str(root / "efs" / "app.db"), root / "unused", lock="file", timeout=0.1),
    }
    (root / "efs").mkdir()
    settings.configure(**values)
    django.setup()
    from django.db import connections

    connections.settings  # noqa: B018 - Django fills in its defaults here, before any connect
    e.snapshot = copy.deepcopy(settings.DATABASES)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    yield e
    connections.close_all()


@pytest.fixture
def twin(env: Env) -> Any:
    """The second instance's connection (same remote, its own local copy)."""
    from django.db import connections

    return connections["twin"]


def _names(using: str, prefix: str) -> set[str]:
    from tests.integration.djangoproj.testapp.models import Item

    return set(
        Item.objects.using(using).filter(name__startswith=prefix).values_list("name", flat=True)
    )


# -- the basics ---------------------------------------------------------------------------------


def test_backend_is_djangos_sqlite_on_lambdalite(env: Env) -> None:
    from django.db import connection

    from lambdalite import dbapi
    from lambdalite.dbapi import Connection

    assert connection.vendor == "sqlite"
    assert connection.Database is dbapi
    connection.ensure_connection()
    assert isinstance(connection.connection, Connection)
    assert connection.features.supports_json_field
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s || %s", ["a", "b"])
        assert cursor.fetchone() == ("ab",)


def test_init_command_runs_at_connect(env: Env, twin: Any) -> None:
    with twin.cursor() as cursor:
        assert cursor.execute("PRAGMA cache_size").fetchone() == (-4000,)
        assert cursor.execute("PRAGMA temp_store").fetchone() == (2,)
        assert cursor.execute("PRAGMA foreign_keys").fetchone() == (1,)  # Django's own


def test_migrations_applied_and_visible_to_another_instance(env: Env, twin: Any) -> None:
    from django.db.migrations.recorder import MigrationRecorder

    tables = set(twin.introspection.table_names())
    assert {"testapp_counter", "auth_user", "django_session", "django_admin_log"} <= tables
    applied = MigrationRecorder(twin).applied_migrations()
    assert ("testapp", "0001_initial") in applied
    assert ("auth", "0001_initial") in applied


def test_admin_user_login_and_session(env: Env, twin: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.contrib.auth.models import User
    from django.contrib.sessions.models import Session
    from django.core.management import call_command
    from django.test import Client

    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "s3cret-pw")
    call_command("createsuperuser", interactive=False, username="boss", email="b@example.com",
                 verbosity=0)
    assert User.objects.using("twin").get(username="boss").is_superuser
    client = Client()
    assert client.login(username="boss", password="s3cret-pw")
    response = client.get("/admin/")
    assert response.status_code == 200
    key = client.session.session_key
    assert Session.objects.using("twin").filter(session_key=key).exists()
    response = client.get("/admin/testapp/counter/")
    assert response.status_code == 200


def test_session_store(env: Env) -> None:
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store["cart"] = [1, 2, 3]
    store.save()
    again = SessionStore(session_key=store.session_key)
    assert again["cart"] == [1, 2, 3]


def test_atomic_with_savepoints(env: Env) -> None:
    from django.db import transaction

    from tests.integration.djangoproj.testapp.models import Item

    with transaction.atomic():
        Item.objects.create(name="sp-outer")
        with pytest.raises(RuntimeError), transaction.atomic():
            Item.objects.create(name="sp-inner-rolled-back")
            raise RuntimeError("undo the savepoint")
        with transaction.atomic():
            Item.objects.create(name="sp-inner-kept")
            create = getattr(transaction, "savepoint_create", None) or transaction.savepoint
            sid = create()  # Django 6.1 renamed savepoint() to savepoint_create()
            Item.objects.create(name="sp-manual-rolled-back")
            transaction.savepoint_rollback(sid)
    with pytest.raises(RuntimeError), transaction.atomic():
        Item.objects.create(name="sp-outer-rolled-back")
        raise RuntimeError("undo everything")
    assert _names("twin", "sp-") == {"sp-outer", "sp-inner-kept"}


def test_autocommit_write_is_published_at_once(env: Env) -> None:
    from tests.integration.djangoproj.testapp.models import Item

    item = Item.objects.create(name="auto-1")
    assert item.pk is not None  # INSERT ... RETURNING in autocommit
    assert _names("twin", "auto-") == {"auto-1"}
    Item.objects.filter(name="auto-1").update(qty=7)
    assert Item.objects.using("twin").get(name="auto-1").qty == 7


def test_select_for_update_is_a_no_op_as_on_sqlite(env: Env) -> None:
    from django.db import transaction

    from tests.integration.djangoproj.testapp.models import Counter

    Counter.objects.create(name="sfu", value=1)
    with transaction.atomic():
        counter = Counter.objects.select_for_update().get(name="sfu")
        counter.value += 1
        counter.save()
    assert Counter.objects.using("twin").get(name="sfu").value == 2


def test_bulk_create_and_bulk_update(env: Env) -> None:
    from django.db.models import Sum

    from tests.integration.djangoproj.testapp.models import Item, Tag

    n = 600
    items = Item.objects.bulk_create(
        [Item(name=f"bulk-{i}", qty=i) for i in range(n)], batch_size=250
    )
    assert all(item.pk is not None for item in items)
    for item in items:
        item.qty *= 2
    Item.objects.bulk_update(items, ["qty"], batch_size=200)
    Tag.objects.bulk_create([Tag(item=item, label="x") for item in items[:30]])
    twin_items = Item.objects.using("twin").filter(name__startswith="bulk-")
    assert twin_items.count() == n
    assert twin_items.aggregate(total=Sum("qty"))["total"] == 2 * sum(range(n))
    assert Tag.objects.using("twin").filter(item__name__startswith="bulk-").count() == 30
    Item.objects.filter(name__startswith="bulk-").delete()  # cascades to the tags
    assert Tag.objects.using("twin").filter(label="x").count() == 0


def test_warm_instance_after_a_large_commit(tmp_path: Path) -> None:
    """A regression test for a core bug found through this backend (fixed in the engine): a
    warm instance failed to apply a larger delta ("database disk image is malformed")."""
    import lambdalite

    remote = (tmp_path / "remote").as_uri()
    a = lambdalite.connect(remote, cache_dir=str(tmp_path / "a"), isolation_level=None)
    b = lambdalite.connect(remote, cache_dir=str(tmp_path / "b"), isolation_level=None)
    a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    a.execute("INSERT INTO t(v) VALUES ('x')")
    b.execute("SELECT count(*) FROM t").fetchall()
    a.execute("UPDATE t SET v = 'y'")
    b.execute("SELECT count(*) FROM t").fetchall()
    a.execute("BEGIN")
    a.executemany("INSERT INTO t(v) VALUES (?)", [("x" * 60,)] * 200)
    a.execute("COMMIT")
    try:
        assert b.execute("SELECT count(*) FROM t").fetchall() == [(201,)]
    finally:
        a.close()
        b.close()


def test_aggregates_dates_and_functions(env: Env) -> None:
    from django.db.models import Count
    from django.db.models.functions import Lower, TruncDay

    from tests.integration.djangoproj.testapp.models import Item

    Item.objects.create(name="FN-Mixed")
    row = (
        Item.objects.filter(name="FN-Mixed")
        .annotate(low=Lower("name"), day=TruncDay("created"))
        .values("low", "day")
        .get()
    )
    assert row["low"] == "fn-mixed"
    assert row["day"] is not None
    assert Item.objects.filter(name__regex=r"^FN-").aggregate(n=Count("id"))["n"] == 1


# -- conflicts and retries ----------------------------------------------------------------------


def _bump_on_twin(name: str) -> None:
    from django.db import transaction

    from tests.integration.djangoproj.testapp.models import Counter

    with transaction.atomic(using="twin"):
        counter = Counter.objects.using("twin").get(name=name)
        counter.value += 100
        counter.save(using="twin")


def test_conflict_surfaces_as_django_operational_error(env: Env) -> None:
    from django.db import OperationalError, transaction

    from tests.integration.djangoproj.testapp.models import Counter

    Counter.objects.create(name="conflict", value=0)
    with pytest.raises(OperationalError) as info, transaction.atomic():
        counter = Counter.objects.get(name="conflict")  # the snapshot is taken here
        _bump_on_twin("conflict")  # another instance commits first
        counter.value += 1
        counter.save()
    assert isinstance(info.value.__cause__, ConflictError)
    from lambdalite.contrib.django import is_conflict

    assert is_conflict(info.value)
    assert Counter.objects.get(name="conflict").value == 100  # no trace of the loser


def test_retrying_atomic_reruns_the_block(env: Env) -> None:
    from lambdalite.contrib.django import retrying_atomic
    from tests.integration.djangoproj.testapp.models import Counter

    Counter.objects.create(name="retry", value=0)
    calls = []

    @retrying_atomic
    def increment() -> int:
        counter = Counter.objects.get(name="retry")
        if not calls:
            _bump_on_twin("retry")  # the first attempt loses
        calls.append(counter.value)
        counter.value += 1
        counter.save()
        return counter.value

    assert increment() == 101
    assert calls == [0, 100]
    assert Counter.objects.using("twin").get(name="retry").value == 101


def test_retrying_atomic_options_and_nesting(env: Env) -> None:
    from django.db import OperationalError, transaction

    from lambdalite.contrib.django import retrying_atomic
    from tests.integration.djangoproj.testapp.models import Counter

    Counter.objects.create(name="nest", value=0)
    attempts = []

    @retrying_atomic(using="default", attempts=2, base_delay=0)
    def always_loses() -> None:
        attempts.append(1)
        counter = Counter.objects.get(name="nest")
        _bump_on_twin("nest")
        counter.value += 1
        counter.save()

    with pytest.raises(OperationalError):
        always_loses()
    assert len(attempts) == 2

    attempts.clear()
    with pytest.raises(OperationalError), transaction.atomic():
        Counter.objects.get(name="nest")
        always_loses()  # nested: a plain atomic(), the outer block owns the transaction
    assert len(attempts) == 1

    @retrying_atomic("default")
    def not_a_conflict() -> None:
        attempts.append(1)
        raise ValueError("no retry for this")

    attempts.clear()
    with pytest.raises(ValueError):
        not_a_conflict()
    assert attempts == [1]


def test_transaction_mode_immediate_reads_the_newest_version(env: Env) -> None:
    from django.db import connections, transaction

    from tests.integration.djangoproj.testapp.models import Counter

    Counter.objects.create(name="imm", value=5)
    conn = connections["immediate"]
    with transaction.atomic(using="immediate"):
        counter = Counter.objects.using("immediate").get(name="imm")
        assert conn.transaction_mode == "IMMEDIATE"
        assert conn.connection._writing  # the writer role was taken at BEGIN
        counter.value += 1
        counter.save(using="immediate")
    assert Counter.objects.get(name="imm").value == 6


# -- locks and shared-file mode -----------------------------------------------------------------


def test_lock_timeout_surfaces_as_django_operational_error(env: Env) -> None:
    from django.db import OperationalError, connections, transaction

    from lambdalite.errors import LockTimeoutError

    with connections["lock_a"].cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
    with transaction.atomic(using="lock_a"):  # BEGIN IMMEDIATE: holds the lock until COMMIT
        connections["lock_a"].cursor().execute("INSERT INTO t VALUES (1)")
        with pytest.raises(OperationalError) as info:
            connections["lock_b"].cursor().execute("INSERT INTO t VALUES (2)")
    assert isinstance(info.value.__cause__, LockTimeoutError)
    with connections["lock_b"].cursor() as cursor:  # the lock is free again
        cursor.execute("INSERT INTO t VALUES (3)")
        cursor.execute("SELECT v FROM t ORDER BY v")
        assert cursor.fetchall() == [(1,), (3,)]


def test_shared_file_mode(env: Env) -> None:
    from django.core.management import call_command
    from django.db import OperationalError, connections, transaction

    from lambdalite.contrib.django import retrying_atomic
    from tests.integration.djangoproj.testapp.models import Counter

    call_command("migrate", "testapp", database="efs_a", verbosity=0)
    assert connections["efs_a"].lambdalite_resolve().settings.mode == "shared-file"
    Counter.objects.using("efs_a").create(name="efs", value=1)
    assert Counter.objects.using("efs_b").get(name="efs").value == 1

    with transaction.atomic(using="efs_a"):
        counter = Counter.objects.using("efs_a").get(name="efs")
        counter.value = 10
        counter.save(using="efs_a")
        # a writer waits for the writer's SQLite lock, then gives up, as on stock SQLite
        with pytest.raises(OperationalError, match="database is locked"):
            Counter.objects.using("efs_b").filter(name="efs").update(value=99)
    assert Counter.objects.using("efs_b").get(name="efs").value == 10

    @retrying_atomic("efs_a")
    def add_one() -> None:
        counter = Counter.objects.using("efs_a").get(name="efs")
        counter.value += 1
        counter.save(using="efs_a")

    add_one()
    assert Counter.objects.using("efs_b").get(name="efs").value == 11


@pytest.mark.slow
def test_efs_engine_with_a_dynamodb_lock_loses_no_update(
    tmp_path: Path, dynamodb_table: str
) -> None:
    """django-sqlite-efs settings, unchanged but for ENGINE, from several processes."""
    efs = {"LL_DJANGO_ENGINE": "lambdalite.contrib.django.efs",
           "SQLITE_LOCK_DYNAMODB_TABLE": dynamodb_table, "SQLITE_LOCK_EXPIRATION": "30"}
    name = str(tmp_path / "efs" / "app.db")
    (tmp_path / "efs").mkdir()
    assert _result(_spawn({**_instance(tmp_path, name, 0, tmp_path), **efs}, "migrate"))["ok"]
    go = tmp_path / "go"
    procs = [_spawn({**_instance(tmp_path, name, i + 1, go), **efs}, "increment", "efs", "6")
             for i in range(3)]
    go.touch()
    for proc in procs:
        _result(proc)
    final = _spawn({**_instance(tmp_path, name, 0, tmp_path), **efs}, "read", "efs")
    assert _result(final)["value"] == 18


# -- settings -----------------------------------------------------------------------------------


def _wrapper(entry: dict[str, Any], alias: str = "probe") -> Any:
    from lambdalite.contrib.django.base import DatabaseWrapper

    full = {
        "ENGINE": "lambdalite.contrib.django",
        "OPTIONS": {},
        "TEST": {"NAME": None},
        "TIME_ZONE": None,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "AUTOCOMMIT": True,
        "ATOMIC_REQUESTS": False,
        **entry,
    }
    return DatabaseWrapper(full, alias)


def test_no_io_at_construction_and_no_mutation(env: Env, tmp_path: Path) -> None:
    entries = [
        {"NAME": (tmp_path / "r").as_uri(), "OPTIONS": {"cache_dir": str(tmp_path / "c")}},
        {"NAME": "s3://bucket-nowhere/app",
         "OPTIONS": {"endpoint_url": "http://127.0.0.1:9", "cache_dir": str(tmp_path / "c")}},
        {"NAME": "db.sqlite3", "BUCKET": "bucket-nowhere", "SIGNATURE_VERSION": "s3v4",
         "OPTIONS": {"cache_dir": str(tmp_path / "c"), "init_command": "PRAGMA cache_size=100",
                     "transaction_mode": "immediate"}},
    ]
    for entry in entries:
        before = copy.deepcopy(entry)
        wrapper = _wrapper(entry)
        params = wrapper.get_connection_params()
        wrapper.lambdalite_resolve()
        assert "target" in params
        assert entry == before
    assert list(tmp_path.iterdir()) == []  # no folder, no cache dir, no file


def test_settings_databases_never_mutated(env: Env) -> None:
    from django.db import connections

    for alias in ("default", "twin", "immediate"):
        connections[alias].ensure_connection()
    assert env.snapshot == settings.DATABASES


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"OPTIONS": {"max_stalenes": 1}},
         "settings.DATABASES['probe']['OPTIONS']['max_stalenes']: unknown option "
         "'max_stalenes'; did you mean 'max_staleness'?"),
        ({"OPTIONS": {"max_staleness": "soon"}},
         "settings.DATABASES['probe']['OPTIONS']['max_staleness']: invalid value"),
        ({"OPTIONS": {"lock": "dynamo"}},
         "settings.DATABASES['probe']['OPTIONS']['lock']: invalid value"),
        ({"OPTIONS": {"remote": "s3://b/x"}},
         "settings.DATABASES['probe']['OPTIONS']['remote']: put the remote URL in"),
        ({"OPTIONS": {"transaction_mode": "LATER"}},
         "settings.DATABASES['probe']['OPTIONS']['transaction_mode'] is improperly configured"),
        ({"NAME": "relative.db"},
         "settings.DATABASES['probe']['NAME'] = 'relative.db' is relative"),
        ({"NAME": "s3://Bad_Bucket/x"}, "settings.DATABASES['probe']['NAME']: invalid remote"),
        ({"NAME": "db.sqlite3", "BUCKET": "b-ok", "AWS_S3_ACCESS_KEY": "AKIA-SECRET-VALUE"},
         "settings.DATABASES['probe']['AWS_S3_ACCESS_KEY'] is set: lambdalite never takes "
         "credentials from settings"),
        ({"NAME": "/abs/db.sqlite3", "BUCKET": "b-ok"}, "with BUCKET, NAME is the object key"),
    ],
)
def test_config_errors_name_the_settings_path(
    env: Env, tmp_path: Path, entry: dict[str, Any], expected: str
) -> None:
    base = {"NAME": (tmp_path / "r").as_uri()}
    with pytest.raises(ImproperlyConfigured) as info:
        _wrapper({**base, **entry}).get_connection_params()
    assert expected in str(info.value)
    assert "AKIA-SECRET-VALUE" not in str(info.value)


def test_config_errors_from_django_settings_and_environment(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.test import override_settings

    entry = {"NAME": str(tmp_path / "efs" / "app.db")}
    with override_settings(SQLITE_LOCK_EXPIRATION="forever"), pytest.raises(
        ImproperlyConfigured, match=r"^settings\.SQLITE_LOCK_EXPIRATION: invalid value"
    ):
        _wrapper(entry).get_connection_params()
    monkeypatch.setenv("LAMBDALITE_MAX_STALENES", "1")
    with pytest.raises(ImproperlyConfigured, match="environment variable LAMBDALITE_MAX_STALENES"):
        _wrapper(entry).get_connection_params()


@pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")
def test_system_check_reports_typos(env: Env) -> None:
    from django.core import checks
    from django.test import override_settings

    from lambdalite.contrib.django.checks import check_databases

    assert check_databases() == []
    bad = copy.deepcopy(settings.DATABASES)
    bad["twin"]["OPTIONS"]["cache_dri"] = "/tmp"
    with override_settings(DATABASES=bad):
        errors = check_databases()
    assert [e.id for e in errors] == ["lambdalite.E001"]
    assert isinstance(errors[0], checks.Error)
    assert "['twin']['OPTIONS']['cache_dri']" in errors[0].msg


# -- legacy settings ----------------------------------------------------------------------------


def test_s3sqlite_settings_map_to_replica_mode(env: Env, tmp_path: Path) -> None:
    from lambdalite.contrib.django.s3sqlite.base import DatabaseWrapper as S3SqliteWrapper

    entry = {"NAME": Path("db.sqlite3"), "BUCKET": "my-bucket", "SIGNATURE_VERSION": "s3v4",
             "OPTIONS": {"cache_dir": str(tmp_path)}}
    for wrapper in (_wrapper(entry), S3SqliteWrapper({**_wrapper(entry).settings_dict}, "s")):
        resolved = wrapper.lambdalite_resolve()
        assert resolved.settings.mode == "replica"
        assert resolved.settings.remote == "s3://my-bucket/db.sqlite3"
    with pytest.raises(ImproperlyConfigured, match=r"\['s'\]\['BUCKET'\] is required"):
        S3SqliteWrapper(_wrapper({"NAME": "db.sqlite3"}).settings_dict, "s").lambdalite_resolve()


def test_efs_settings_map_to_shared_file_mode(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.test import override_settings

    from lambdalite.contrib.django.efs.base import DatabaseWrapper as EfsWrapper

    path = str(tmp_path / "efs" / "app.db")
    entry = _wrapper({"NAME": path, "OPTIONS": {"timeout": 1}}).settings_dict
    with override_settings(SQLITE_LOCK_DYNAMODB_TABLE="locks", SQLITE_LOCK_EXPIRATION=60,
                           SQLITE_LOCK_MAX_ATTEMPTS=4):
        for cls in (type(_wrapper({"NAME": path})), EfsWrapper):
            s = cls(entry, "efs").lambdalite_resolve().settings
            assert (s.mode, s.database, s.lock) == ("shared-file", path, "dynamodb://locks")
            assert (s.lock_expiration, s.lock_max_attempts, s.timeout) == (60.0, 4, 3.0)
        # OPTIONS win over Django settings, which win over the environment
        monkeypatch.setenv("SQLITE_LOCK_MAX_ATTEMPTS", "9")
        over = {**entry, "OPTIONS": {"lock_max_attempts": 2}}
        assert EfsWrapper(over, "efs").lambdalite_resolve().settings.lock_max_attempts == 2
        assert EfsWrapper(entry, "efs").lambdalite_resolve().settings.lock_max_attempts == 4
    monkeypatch.setenv("SQLITE_LOCK_DYNAMODB_TABLE", "env-locks")
    s = EfsWrapper({**entry, "OPTIONS": {}}, "efs").lambdalite_resolve().settings
    assert (s.lock, s.lock_max_attempts, s.timeout) == ("dynamodb://env-locks", 9, 3.0)
    monkeypatch.delenv("SQLITE_LOCK_DYNAMODB_TABLE")
    with pytest.raises(ImproperlyConfigured, match="SQLITE_LOCK_DYNAMODB_TABLE"):
        EfsWrapper(entry, "efs").lambdalite_resolve()


# -- management commands ------------------------------------------------------------------------


def test_management_commands(env: Env) -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("lambdalite_status", "--json", stdout=out)
    info = json.loads(out.getvalue())
    assert info["remote"] == env.remote
    assert info["mode"] == "replica"
    assert info["version"] >= 1
    for name in ("lambdalite_vacuum", "s3_sqlite_vacuum", "s3sqlite_vacuum"):
        out = StringIO()
        call_command(name, stdout=out)
        assert "VACUUM of 'default' done" in out.getvalue()
    from tests.integration.djangoproj.testapp.models import Item

    assert Item.objects.using("twin").filter(name="auto-1").exists()


# -- threads ------------------------------------------------------------------------------------


def _threads_insert(using: str, prefix: str, n: int = 4) -> list[BaseException]:
    from django.db import connections

    from lambdalite.contrib.django import retrying_atomic
    from tests.integration.djangoproj.testapp.models import Item

    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(3):
                name = f"{prefix}{i}-{k}"
                retrying_atomic(using)(
                    lambda name=name: Item.objects.using(using).create(name=name)
                )()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections[using].close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


@pytest.mark.parametrize("using", [
    "default",  # a pull racing a local commit used to fail: fixed in the engine
    "immediate",
])
def test_threads_each_get_their_own_connection(env: Env, using: str) -> None:
    # a regression test too: a commit's checkpoint used to wait for other threads' DEFERRED
    # transactions, which waited for the writer (fixed in the engine)
    assert _threads_insert(using, f"thread-{using}-") == []
    expected = {f"thread-{using}-{i}-{k}" for i in range(4) for k in range(3)}
    assert _names("twin", f"thread-{using}-") == expected


# -- several processes --------------------------------------------------------------------------


def _spawn(env_vars: dict[str, str], *args: str) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("LAMBDALITE_", "SQLITE_LOCK_", "DJANGO_"))}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.djangoproj.worker", *args],
        cwd=ROOT,
        env={**clean, "PYTHONPATH": _pythonpath(), "DJANGO_SETTINGS_MODULE": PROJECT, **env_vars},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def _instance(tmp: Path, name: str, i: int, go: Path) -> dict[str, str]:
    return {"LL_DJANGO_NAME": name, "LL_DJANGO_CACHE": str(tmp / f"cache-{i}"),
            "LL_DJANGO_GO": str(go)}


@pytest.mark.slow
def test_concurrent_migrate_one_applies_the_other_sees_it(tmp_path: Path) -> None:
    remote = (tmp_path / "remote").as_uri()
    go = tmp_path / "go"
    procs = [_spawn(_instance(tmp_path, remote, i, go), "migrate") for i in range(2)]
    go.touch()
    results = [_result(p) for p in procs]
    assert any(r["ok"] for r in results), results
    for r in results:
        if not r["ok"]:  # the loser: a conflict, or the table the winner created first
            assert r["conflict"] or "already exists" in r["error"], r
    # a loser's rerun (and any later instance) finds everything applied
    again = [_spawn(_instance(tmp_path, remote, i, tmp_path), "migrate") for i in range(2)]
    assert [_result(p)["ok"] for p in again] == [True, True]
    check = _spawn(_instance(tmp_path, remote, 9, tmp_path), "read", "nothing")
    assert _result(check) == {"ok": True, "value": None}


@pytest.mark.slow
def test_read_modify_write_from_several_processes_loses_no_update(tmp_path: Path) -> None:
    remote = (tmp_path / "remote").as_uri()
    setup = _spawn(_instance(tmp_path, remote, 0, tmp_path), "migrate")
    assert _result(setup)["ok"]
    go = tmp_path / "go"
    workers, per_worker = 3, 12
    procs = [
        _spawn(_instance(tmp_path, remote, i + 1, go), "increment", "hits", str(per_worker))
        for i in range(workers)
    ]
    go.touch()
    results = [_result(p) for p in procs]
    final = _result(_spawn(_instance(tmp_path, remote, 0, tmp_path), "read", "hits"))
    assert final["value"] == workers * per_worker
    assert sum(r["attempts"] for r in results) >= workers * per_worker
