"""The SQLAlchemy dialects (``sqlite+lambdalite://``, ``s3sqlite://``) on the folder remote,
SeaweedFS and shared-file mode: registration, URL validation, transactions, pooling, errors,
several processes, Alembic."""

from __future__ import annotations

import importlib.metadata
import multiprocessing
import os
import pickle
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.dialects import registry
from sqlalchemy.orm import Session, sessionmaker

import lambdalite
from lambdalite.contrib.sqlalchemy import LambdaliteDialect, S3SQLiteDialect
from lambdalite.locks import open_lock
from lambdalite.replica.engine import forget_replicas
from tests.integration import sa_workers
from tests.integration.sa_workers import Base, Counter

ALEMBIC_INI = Path(__file__).parent / "alembic_project" / "alembic.ini"
MakeEngine = Callable[..., sa.Engine]


@pytest.fixture(autouse=True)
def _fresh_replicas() -> Iterator[None]:
    forget_replicas()
    yield
    forget_replicas()


def lambdalite_url(remote: str, **query: object) -> str:
    url = sa.URL.create(
        "sqlite+lambdalite",
        query={"remote": remote, **{key: str(value) for key, value in query.items()}},
    )
    return url.render_as_string(hide_password=False)


@pytest.fixture
def remote(tmp_path: Path) -> str:
    return (tmp_path / "remote").as_uri()


@pytest.fixture
def engines(tmp_path: Path, remote: str) -> Iterator[MakeEngine]:
    """``engines("a", **options)``: an engine as simulated instance "a" (its own cache dir)."""
    made: list[sa.Engine] = []

    def make(name: str = "a", **options: object) -> sa.Engine:
        engine = sa.create_engine(
            lambdalite_url(remote, cache_dir=tmp_path / f"cache-{name}", **options)
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.dispose()


def _table(engine: sa.Engine, *rows: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        for row in rows:
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", (row,))


def _rows(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return [x for (x,) in conn.exec_driver_sql("SELECT x FROM t ORDER BY x")]


def _driver(conn: sa.Connection) -> Any:
    return conn.connection.driver_connection


# ---------------------------------------------------------------------------- registration


def test_entry_points_name_both_dialects() -> None:
    group = importlib.metadata.entry_points(group="sqlalchemy.dialects")
    found = {ep.name: ep.value for ep in group}
    assert found["sqlite.lambdalite"] == "lambdalite.contrib.sqlalchemy:LambdaliteDialect"
    assert found["s3sqlite"] == "lambdalite.contrib.sqlalchemy:S3SQLiteDialect"


def test_create_engine_finds_the_dialect_and_caches_statements(engines: MakeEngine) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "will not make use of SQL compilation caching"
        engine = engines()
        _table(engine, 1)
        query = sa.text("SELECT x FROM t WHERE x > :low")
        for _ in range(2):
            with engine.connect() as conn:
                assert conn.execute(query, {"low": 0}).all() == [(1,)]
    assert type(engine.dialect) is LambdaliteDialect
    assert (engine.dialect.name, engine.dialect.driver) == ("sqlite", "lambdalite")
    assert engine.dialect.dbapi is lambdalite.dbapi
    assert isinstance(engine.pool, sa.pool.QueuePool)
    assert engine._compiled_cache is not None and len(engine._compiled_cache) > 0


def test_the_seed_tools_registry_line_is_harmless(monkeypatch: pytest.MonkeyPatch) -> None:
    # sqlalchemy-s3sqlite's README: the registry wins over entry points, so the module path it
    # names must import: lambdalite ships the shim package "sqlalchemy-s3sqlite".
    monkeypatch.setenv("S3SQLite_bucket", "my-bucket")
    registry.register("s3sqlite", "sqlalchemy-s3sqlite.dialect", "S3SQLiteDialect")
    try:
        engine = sa.create_engine("s3sqlite:///quickstart_app.sqlite")
    finally:
        registry.deregister("s3sqlite")
    assert type(engine.dialect) is S3SQLiteDialect
    assert engine.dialect.create_connect_args(engine.url)[0] == [
        "s3://my-bucket/quickstart_app.sqlite"
    ]


# ---------------------------------------------------------------------------- URL validation


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("sqlite+lambdalite:///?remote=file:///r&max_stalenes=1", "'max_stalenes'"),
        ("sqlite+lambdalite:///?remote=file:///r&max_staleness=soon", "max_staleness"),
        ("sqlite+lambdalite:///?remote=file:///r&transaction_mode=eager", "transaction_mode"),
        ("sqlite+lambdalite:///?remote=file:///r&lock=zookeeper", "lock"),
        ("sqlite+lambdalite:///?remote=file:///r&uri=true", "'uri'"),
        ("sqlite+lambdalite:///?remote=file:///r&isolation_level=IMMEDIATE", "'isolation_level'"),
        ("sqlite+lambdalite:///?remote=file:///r&detect_types=x", "detect_types"),
        ("sqlite+lambdalite:///?remote=file:///r&timeout=1&timeout=2", "'timeout'"),
        ("sqlite+lambdalite:///?remote=ftp://host/x", "remote"),
        ("sqlite+lambdalite:///?remote=s3://Bad_Bucket/x", "remote"),
        ("sqlite+lambdalite:///relative.db", "relative"),
        ("sqlite+lambdalite:////abs/app.db?remote=file:///r", "not both"),
        ("sqlite+lambdalite://", "no database"),
        ("sqlite+lambdalite://user:secret@host/?remote=file:///r", "no user"),
        ("s3sqlite:///app.sqlite?bucket=b&persist=maybe", "persist"),
        ("s3sqlite:///app.sqlite?bucket=b&max_stalenes=1", "'max_stalenes'"),
    ],
)
def test_bad_urls_raise_argument_error_naming_the_key(url: str, named: str) -> None:
    with pytest.raises(exc.ArgumentError, match="invalid lambdalite URL") as err:
        sa.create_engine(url)
    assert named in str(err.value)
    assert "secret" not in str(err.value)


def test_a_typo_suggests_the_option() -> None:
    with pytest.raises(exc.ArgumentError, match="did you mean 'max_staleness'"):
        sa.create_engine("sqlite+lambdalite:///?remote=file:///r&max_stalenes=1")


def test_a_bad_environment_variable_is_an_argument_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAMBDALITE_MAX_STALENES", "1")
    with pytest.raises(exc.ArgumentError, match="LAMBDALITE_MAX_STALENES"):
        sa.create_engine("sqlite+lambdalite:///?remote=file:///r")


def test_credentials_in_the_query_are_masked_in_errors() -> None:
    url = "sqlite+lambdalite:///?remote=s3://b1/x&endpoint_url=http://key:secret@h:1&bogus=1"
    with pytest.raises(exc.ArgumentError, match="bogus") as err:
        sa.create_engine(url)
    assert "secret" not in str(err.value)


def test_connection_arguments_are_typed_and_lambdalite_options_passed_on() -> None:
    engine = sa.create_engine(
        "sqlite+lambdalite:///?remote=file:///r&detect_types=3&cached_statements=7"
        "&check_same_thread=true&timeout=250ms&max_staleness=2s"
    )
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    assert cargs == ["file:///r"]
    assert cparams == {
        "detect_types": 3,
        "cached_statements": 7,
        "check_same_thread": True,
        "timeout": "250ms",
        "max_staleness": "2s",
    }
    default = sa.create_engine("sqlite+lambdalite:///?remote=file:///r")
    assert default.dialect.create_connect_args(default.url)[1] == {"check_same_thread": False}


def test_the_doc_lists_every_url_option() -> None:
    from lambdalite.config import OPTIONS
    from lambdalite.contrib import sqlalchemy as dialects

    doc = (Path(__file__).parents[2] / "docs" / "sqlalchemy.md").read_text()
    keys = ({option.name for option in OPTIONS} | set(dialects._CONNECTION_ARGS)
            | set(dialects._REFUSED) | dialects._S3SQLITE_ARGS | {"remote"})
    missing = sorted(key for key in keys if f"`{key}`" not in doc)
    assert not missing, f"add these URL options to docs/sqlalchemy.md: {missing}"


def test_no_io_at_create_engine(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    engine = sa.create_engine(lambdalite_url(remote.as_uri(), cache_dir=tmp_path / "cache"))
    assert not remote.exists() and not (tmp_path / "cache").exists()
    engine.dispose()


# ---------------------------------------------------------------------------- transactions


def test_a_transaction_is_a_sqlite_transaction_from_its_first_statement(
    engines: MakeEngine,
) -> None:
    engine = engines()
    _table(engine, 1)
    with engine.begin() as conn:
        conn.exec_driver_sql("SELECT x FROM t").all()
        assert _driver(conn).in_transaction  # the stock dialect would still be outside one
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1").all()
        assert _driver(conn).in_transaction
        conn.commit()
        assert not _driver(conn).in_transaction


def test_the_snapshot_is_taken_at_the_first_statement(engines: MakeEngine) -> None:
    a, b = engines("a"), engines("b")
    _table(a, 1)
    with a.connect() as conn, conn.begin():  # as SQLite's deferred BEGIN: no snapshot yet
        with b.begin() as other:
            other.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2
        with b.begin() as other:
            other.exec_driver_sql("INSERT INTO t VALUES (3)")
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == 2  # one snapshot


def test_read_then_write_in_engine_begin_is_protected(engines: MakeEngine) -> None:
    a, b = engines("a"), engines("b")
    _table(a, 1)
    with pytest.raises(exc.OperationalError) as err, a.begin() as conn:
        (n,) = conn.exec_driver_sql("SELECT count(*) FROM t").one()
        with b.begin() as other:  # another instance commits between the read and the write
            other.exec_driver_sql("INSERT INTO t VALUES (10)")
        conn.exec_driver_sql("INSERT INTO t VALUES (?)", (n + 1,))
    assert isinstance(err.value.orig, lambdalite.ConflictError)
    assert isinstance(err.value, lambdalite.ConflictError)  # so retry_on_conflict catches it
    assert _rows(engines("c")) == [1, 10]  # nothing of the losing transaction was published
    assert _rows(a) == [1, 10]  # and the loser's local copy was healed


def test_retry_on_conflict_reruns_an_engine_unit_of_work(engines: MakeEngine) -> None:
    a, b = engines("a"), engines("b")
    _table(a, 1)
    calls = 0

    @lambdalite.retry_on_conflict
    def append_next() -> None:
        nonlocal calls
        calls += 1
        with a.begin() as conn:
            (top,) = conn.exec_driver_sql("SELECT max(x) FROM t").one()
            if calls == 1:
                with b.begin() as other:
                    other.exec_driver_sql("INSERT INTO t VALUES (5)")
            conn.exec_driver_sql("INSERT INTO t VALUES (?)", (top + 1,))

    append_next()
    assert calls == 2
    assert _rows(b) == [1, 5, 6]


def test_savepoints_work(engines: MakeEngine) -> None:
    engine = engines()
    _table(engine, 1)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        with conn.begin_nested() as nested:
            conn.exec_driver_sql("INSERT INTO t VALUES (3)")
            nested.rollback()
        with conn.begin_nested():
            conn.exec_driver_sql("INSERT INTO t VALUES (4)")
    with Session(engine) as session, session.begin():
        session.execute(sa.text("INSERT INTO t VALUES (5)"))
        with pytest.raises(ZeroDivisionError), session.begin_nested():
            session.execute(sa.text("INSERT INTO t VALUES (6)"))
            raise ZeroDivisionError
    assert _rows(engines("other")) == [1, 2, 4, 5]


def test_autocommit_isolation_commits_each_statement(engines: MakeEngine) -> None:
    a = engines("a")
    _table(a, 1)
    with a.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert not _driver(conn).in_transaction
        assert _rows(engines("b")) == [1, 2]  # published without any commit()
    with a.connect() as conn:  # back to transactions on the pooled connection
        conn.exec_driver_sql("SELECT 1").all()
        assert _driver(conn).in_transaction


def test_rollback_publishes_nothing(engines: MakeEngine) -> None:
    a = engines("a")
    _table(a, 1)
    with a.connect() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        conn.rollback()
    assert _rows(engines("b")) == [1]


def test_commit_publishes_and_the_pool_never_pushes(engines: MakeEngine) -> None:
    engine = engines("a")
    _table(engine, 1)
    raw = engine.raw_connection()
    stats = raw.driver_connection.replica.stats  # type: ignore[union-attr]
    raw.close()
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    assert _rows(engines("b")) == [1, 2]  # durable once commit() returned
    puts = stats.puts
    for _ in range(3):  # check-outs, check-ins, reads, a pool reset and dispose push nothing
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT x FROM t").all()
    assert stats.puts == puts
    with engine.connect() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (3)")  # never committed: rolled back
    engine.dispose()
    assert stats.puts == puts  # the lease was free when it read: no claim, nothing to hand back
    assert _rows(engines("c")) == [1, 2]


def test_orm_session_and_create_all(engines: MakeEngine) -> None:
    engine = engines("a")
    Base.metadata.create_all(engine)
    Base.metadata.create_all(engine)  # checkfirst: reflection of main and temp schemas
    factory = sessionmaker(engine)
    with factory.begin() as session:
        session.add(Counter(id=1, n=41))
    with factory.begin() as session:
        counter = session.get(Counter, 1)
        assert counter is not None
        counter.n += 1
    with sessionmaker(engines("b"))() as session:
        assert session.get(Counter, 1).n == 42  # type: ignore[union-attr]
    assert sa.inspect(engine).get_table_names() == ["counter"]


def test_lambdalite_errors_are_operational_errors_and_pickle(engines: MakeEngine) -> None:
    a, b = engines("a"), engines("b")
    _table(a)
    with pytest.raises(exc.OperationalError) as err, a.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        with b.begin() as other:
            other.exec_driver_sql("INSERT INTO t VALUES (2)")
    copy = pickle.loads(pickle.dumps(err.value))
    assert type(copy) is type(err.value)
    assert isinstance(copy, lambdalite.ConflictError) and isinstance(copy, exc.OperationalError)
    assert isinstance(copy.orig, lambdalite.ConflictError)


def test_a_lock_timeout_is_an_operational_error(engines: MakeEngine) -> None:
    options = {"lock": "file", "transaction_mode": "IMMEDIATE", "timeout": "300ms"}
    a, b = engines("a", **options), engines("b", **options)
    _table(a, 1)
    with a.begin() as holder:
        holder.exec_driver_sql("SELECT 1").all()  # BEGIN IMMEDIATE: a holds the lock
        with pytest.raises(exc.OperationalError) as err, b.begin() as conn:
            conn.exec_driver_sql("SELECT 1").all()
    assert isinstance(err.value.orig, lambdalite.LockTimeoutError)
    assert isinstance(err.value, lambdalite.LockTimeoutError)
    with b.begin() as conn:  # released at a's commit
        conn.exec_driver_sql("INSERT INTO t VALUES (2)")
    assert _rows(a) == [1, 2]


# ---------------------------------------------------------------------------- processes


@pytest.mark.slow
def test_orm_read_modify_write_from_processes_loses_no_update(tmp_path: Path, remote: str) -> None:
    setup = sa.create_engine(lambdalite_url(remote, cache_dir=tmp_path / "setup"))
    Base.metadata.create_all(setup)
    with sessionmaker(setup).begin() as session:
        session.add(Counter(id=1, n=0))
    setup.dispose()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = [
            pool.apply_async(
                sa_workers.orm_increment, (lambdalite_url(remote, cache_dir=tmp_path / f"i{i}"), 25)
            )
            for i in range(4)
        ]
        retries = sum(r.get(timeout=300) for r in results)
    check = sa.create_engine(lambdalite_url(remote, cache_dir=tmp_path / "check"))
    with sessionmaker(check)() as session:
        assert session.get(Counter, 1).n == 100  # type: ignore[union-attr]
    check.dispose()
    print(f"conflicts retried: {retries}")


@pytest.mark.slow
def test_concurrent_alembic_upgrades_apply_once(tmp_path: Path, remote: str) -> None:
    log = tmp_path / "attempts"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), "upgrade", "head"],
            env={
                **os.environ,
                "ALEMBIC_TEST_URL": lambdalite_url(remote, cache_dir=tmp_path / f"deploy-{i}"),
                "ALEMBIC_ATTEMPTS_LOG": str(log),
                "MIGRATION_DELAY": "1",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    attempts = log.read_text().split()
    assert len(set(attempts)) == 2 and len(attempts) in (2, 3)  # 3: one lost and re-ran
    check = sa.create_engine(lambdalite_url(remote, cache_dir=tmp_path / "check"))
    with check.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").all() == [("0002",)]
        assert conn.exec_driver_sql("SELECT author FROM notes").all() == [("alembic",)]
    assert "ix_notes_author" in {ix["name"] for ix in sa.inspect(check).get_indexes("notes")}
    check.dispose()


# ---------------------------------------------------------------------------- s3sqlite


def test_s3sqlite_needs_a_bucket() -> None:
    with pytest.raises(exc.ArgumentError, match="S3SQLite_bucket"):
        sa.create_engine("s3sqlite:///quickstart_app.sqlite")


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("quickstart_app.sqlite", "quickstart_app.sqlite"),
        ("sub/dir/app.sqlite", "sub/dir/app.sqlite"),
        ("./x/../app.sqlite", "app.sqlite"),
    ],
)
def test_s3sqlite_key_is_the_path_as_written(
    monkeypatch: pytest.MonkeyPatch, path: str, key: str
) -> None:
    monkeypatch.setenv("S3SQLite_bucket", "my-bucket")
    engine = sa.create_engine(f"s3sqlite:///{path}")
    assert engine.dialect.create_connect_args(engine.url)[0] == [f"s3://my-bucket/{key}"]


def test_s3sqlite_absolute_paths_are_relative_to_the_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = sa.create_engine(f"s3sqlite:///{tmp_path}/data/app.sqlite?bucket=b1b")
    assert engine.dialect.create_connect_args(engine.url)[0] == ["s3://b1b/data/app.sqlite"]
    with pytest.raises(exc.ArgumentError, match="not below the working directory"):
        sa.create_engine("s3sqlite:////elsewhere/app.sqlite?bucket=b1b")


def test_s3sqlite_persist_false_is_a_plain_local_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = sa.create_engine("s3sqlite:///scratch.sqlite?persist=false")  # no bucket needed
    _table(engine, 1, 2)
    with engine.connect() as conn:  # a stock SQLite connection, with our transaction control
        assert type(_driver(conn)).__module__ == "sqlite3"
        assert conn.exec_driver_sql("SELECT x FROM t").all() == [(1,), (2,)]
        assert _driver(conn).in_transaction
    engine.dispose()
    assert (tmp_path / "scratch.sqlite").exists()


def test_s3sqlite_legacy_tmp_rule(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("S3SQLite_bucket", "b1b")
    monkeypatch.chdir(tmp_path)
    scratch = tmp_path / "tmp" / "scratch.sqlite"  # the path as written contains /tmp/
    legacy = sa.create_engine(f"s3sqlite:///{scratch}?legacy_tmp_rule=true")
    assert legacy.dialect.create_connect_args(legacy.url)[0] == [str(scratch)]
    kept = sa.create_engine("s3sqlite:///data/app.sqlite?legacy_tmp_rule=true")
    assert kept.dialect.create_connect_args(kept.url)[0] == ["s3://b1b/data/app.sqlite"]
    plain = sa.create_engine(f"s3sqlite:///{scratch}")  # without the rule: persisted
    assert plain.dialect.create_connect_args(plain.url)[0] == ["s3://b1b/tmp/scratch.sqlite"]


@pytest.mark.s3
def test_s3sqlite_on_seaweedfs(
    s3_remote: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("S3SQLite_bucket", s3_remote.bucket)  # AWS_ENDPOINT_URL_S3 is set too
    monkeypatch.chdir(tmp_path)
    a = sa.create_engine(f"s3sqlite:///quickstart_app.sqlite?cache_dir={tmp_path}/cache-a")
    b = sa.create_engine(f"s3sqlite:///quickstart_app.sqlite?cache_dir={tmp_path}/cache-b")
    try:
        _table(a, 1)
        with b.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert _rows(a) == [1, 2]
        keys = {
            o["Key"]
            for o in s3_remote.server.client().list_objects_v2(Bucket=s3_remote.bucket)["Contents"]
        }
        assert "quickstart_app.sqlite/manifest" in keys
        assert not (tmp_path / "quickstart_app.sqlite").exists()  # the local copy is in cache_dir
    finally:
        a.dispose()
        b.dispose()


# ---------------------------------------------------------------------------- shared-file mode


def test_shared_file_mode(tmp_path: Path) -> None:
    database = tmp_path / "efs" / "app.db"
    database.parent.mkdir()
    url = f"sqlite+lambdalite:///{database}?lock=file&timeout=0"  # shared-file raises it to 3 s
    a, b = sa.create_engine(url), sa.create_engine(url)
    try:
        _table(a, 1)
        with b.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (2)")
        assert _rows(a) == [1, 2]
        other_instance = open_lock("file", key=f"{database}.lock")
        lease = other_instance.acquire(1.0)
        try:
            with pytest.raises(exc.OperationalError) as err, a.begin() as conn:
                conn.exec_driver_sql("INSERT INTO t VALUES (3)")
        finally:
            other_instance.release(lease)
        assert isinstance(err.value.orig, lambdalite.LockTimeoutError)
        assert isinstance(err.value, lambdalite.LockTimeoutError)
        assert _rows(b) == [1, 2]
    finally:
        a.dispose()
        b.dispose()
