"""SQLAlchemy dialects for lambdalite: ``sqlite+lambdalite://`` and ``s3sqlite://``.

Both are registered through the ``sqlalchemy.dialects`` entry point: installing
lambdalite is enough, no ``registry.register`` call is needed::

    from sqlalchemy import create_engine

    # replica mode: the truth lives in S3 (or a folder), each instance keeps a local copy
    engine = create_engine("sqlite+lambdalite:///?remote=s3://my-bucket/app&max_staleness=1s")

    # shared-file mode: the database file itself, on EFS, written under a lock
    engine = create_engine("sqlite+lambdalite:////mnt/efs/app.db?lock=dynamodb://app-locks")

    # the sqlalchemy-s3sqlite form: the bucket comes from $S3SQLite_bucket
    engine = create_engine("s3sqlite:///quickstart_app.sqlite")

The URL query takes every lambdalite option (``docs/configuration.md``) and:

* ``remote``: the remote URL in replica mode (``s3://bucket/prefix``, ``file:///abs/folder``);
* ``check_same_thread``, ``detect_types``, ``cached_statements``: as in the ``sqlite3`` module
  (``check_same_thread`` defaults to false: a pooled connection is used by one thread at a time);
* ``vfs``: SQLite's VFS in shared-file mode;
* for ``s3sqlite://`` only: ``bucket`` (default: ``$S3SQLite_bucket``), ``persist`` (false: a
  plain local SQLite file, nothing pushed) and ``legacy_tmp_rule`` (true: a path containing
  ``/tmp/`` is not persisted, as sqlalchemy-s3sqlite's README promised).

``uri`` and ``isolation_level`` are refused: lambdalite opens the local copy itself, and the
dialect owns transaction control. An unknown key or a bad value raises
:class:`sqlalchemy.exc.ArgumentError` from ``create_engine`` naming the key.

Transactions. The stock pysqlite dialect lets the ``sqlite3`` module delay ``BEGIN`` until the
first write, so a read followed by a write in one SQLAlchemy transaction is not protected. This
dialect sends ``BEGIN`` (``BEGIN IMMEDIATE`` with ``transaction_mode=IMMEDIATE``) before the
first statement of every SQLAlchemy transaction, so every ``engine.begin()`` block and every
``Session`` transaction is one SQLite transaction: it reads one version, and its ``COMMIT`` is
published only if nobody committed since, else it raises. ``begin_nested()`` uses SAVEPOINTs;
``isolation_level="AUTOCOMMIT"`` makes every statement its own transaction. Persistence happens
at ``COMMIT`` only, never on pool check-in, connection close or ``engine.dispose()``, so the
default ``QueuePool`` is safe.

Errors. A lambdalite error reaches the application as an instance of both the
:class:`sqlalchemy.exc.OperationalError` SQLAlchemy would raise (with the lambdalite error as
``.orig``) and of the lambdalite error's own class, so ``except sqlalchemy.exc.OperationalError``
and :func:`lambdalite.retry_on_conflict` both work::

    @lambdalite.retry_on_conflict
    def add_visit(Session):
        with Session.begin() as session:          # one unit of work, re-run on conflict
            session.get(Counter, 1).n += 1
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from typing import Any, cast

from sqlalchemy import event, exc, pool, util
from sqlalchemy.dialects.sqlite.base import SQLiteExecutionContext
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.engine.interfaces import (
    ConnectArgsType,
    DBAPIConnection,
    DBAPICursor,
    DBAPIModule,
    ExceptionContext,
)
from sqlalchemy.pool import PoolProxiedConnection

from lambdalite import dbapi, errors
from lambdalite.config import OPTIONS, Settings, parse_duration
from lambdalite.errors import ConfigurationError, LambdaliteError

_REFLECTION = re.compile(
    r"\s*(PRAGMA\s+(\w+\.)?(table_x?info|index_list|index_x?info|foreign_key_list)\b"
    r"|SELECT\b.*\bsqlite_(master|schema)\b)",
    re.IGNORECASE | re.DOTALL,
)
__all__ = ["LambdaliteDialect", "S3SQLiteDialect", "dialect"]

log = logging.getLogger("lambdalite.contrib.sqlalchemy")

_OPTION_NAMES = frozenset(option.name for option in OPTIONS)
# Query keys handed to the connection itself, with their types (as the pysqlite dialect does).
_CONNECTION_ARGS: dict[str, Callable[[str], Any]] = {
    "check_same_thread": util.asbool,
    "detect_types": int,
    "cached_statements": int,
    "vfs": str,
}
_REFUSED = {
    "uri": "lambdalite opens the local copy itself; SQLite URI filenames do not apply",
    "isolation_level": "the dialect controls transactions; use create_engine("
    "isolation_level='AUTOCOMMIT') for autocommit, or the transaction_mode option",
}
_S3SQLITE_ARGS = frozenset({"bucket", "persist", "legacy_tmp_rule"})
_BUCKET_ENV = "S3SQLite_bucket"
_CREDENTIALS = re.compile(r"(://)[^/@?&]*@")  # user:password@ in a URL inside the query


class _ExecutionContext(SQLiteExecutionContext):
    _lastrowid: int | None = None

    def post_exec(self) -> None:
        super().post_exec()  # type: ignore[no-untyped-call]
        if self.isinsert:
            # CursorResult.lastrowid is read after the cursor was closed; sqlite3's cursor
            # keeps it, lambdalite's (as of this writing) does not: keep it here.
            self._lastrowid = self.cursor.lastrowid

    def get_lastrowid(self) -> int:
        if self._lastrowid is not None:
            return self._lastrowid
        return super().get_lastrowid()


class LambdaliteDialect(SQLiteDialect_pysqlite):
    """``sqlite+lambdalite://``: SQLite through :mod:`lambdalite.dbapi` (see the module doc)."""

    driver = "lambdalite"
    supports_statement_cache = True
    execution_ctx_cls = _ExecutionContext
    _extra_args: frozenset[str] = frozenset({"remote"})

    @classmethod
    def import_dbapi(cls) -> DBAPIModule:
        return cast("DBAPIModule", dbapi)

    @classmethod
    def load_provisioning(cls) -> None:
        # SQLAlchemy's test provisioning for "sqlite" (the compliance suite) lives beside the
        # pysqlite dialect, not beside this module.
        SQLiteDialect_pysqlite.load_provisioning()  # type: ignore[no-untyped-call]

    @classmethod
    def get_pool_class(cls, url: URL) -> type[pool.Pool]:
        return pool.QueuePool  # safe: nothing is persisted on check-in, close or dispose

    @classmethod
    def engine_created(cls, engine: Engine) -> None:
        event.listen(engine, "handle_error", _as_lambdalite_error, retval=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # DB-API connections whose SQLAlchemy transaction has begun but sent no BEGIN yet.
        self._pending_begin: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pending_lock = threading.Lock()

    def create_connect_args(self, url: URL) -> ConnectArgsType:
        if url.username or url.password or url.host or url.port:
            raise _url_error(url, "a lambdalite URL has no user, password, host or port")
        query = _single_values(url)
        _check_keys(url, query, self._extra_args)
        connect_kwargs = _connection_args(url, query)
        target = self._target(url, query)
        options = {key: value for key, value in query.items() if key in _OPTION_NAMES}
        if isinstance(target, _LocalFile):
            if "timeout" in options:
                connect_kwargs["timeout"] = _local_timeout(url, options["timeout"])
            connect_kwargs.pop("vfs", None)
            log.debug("s3sqlite: %s is a local file, never pushed", target)
            return [target], connect_kwargs
        try:
            settings = Settings.build(target, options)
        except ConfigurationError as error:
            raise _url_error(url, str(error)) from error
        log.debug("engine on %s (%s mode)", settings.remote, settings.mode)
        return [target], {**options, **connect_kwargs}

    def _target(self, url: URL, query: dict[str, str]) -> str:
        remote = query.get("remote")
        path = url.database
        if remote and path:
            raise _url_error(url, "give either a database path or ?remote=..., not both")
        if remote:
            return remote
        if not path or path == ":memory:":
            raise _url_error(
                url,
                "no database: use sqlite+lambdalite:///?remote=s3://bucket/prefix "
                "(replica mode) or sqlite+lambdalite:////abs/path/app.db (shared-file mode)",
            )
        if not os.path.isabs(path):
            raise _url_error(
                url,
                f"the database path {path!r} is relative; give an absolute one "
                "(four slashes: sqlite+lambdalite:////abs/path/app.db)",
            )
        return path

    def connect(self, *cargs: Any, **cparams: Any) -> DBAPIConnection:
        if cargs and isinstance(cargs[0], _LocalFile):
            return cast("DBAPIConnection", sqlite3.connect(str(cargs[0]), **cparams))
        return super().connect(*cargs, **cparams)

    # Transactions. The DB-API connection's isolation_level is None only in AUTOCOMMIT (set by
    # the pysqlite dialect's set_isolation_level). Otherwise SQLAlchemy's transaction is made a
    # real SQLite transaction: BEGIN is sent just before its first statement, which is when a
    # deferred SQLite transaction takes its snapshot, so every read in it is protected and an
    # empty transaction costs nothing. transaction_mode=IMMEDIATE is applied to this BEGIN by
    # the connection itself.

    def do_begin(self, dbapi_connection: PoolProxiedConnection) -> None:
        if dbapi_connection.isolation_level is None:
            return
        driver = dbapi_connection.driver_connection
        if not isinstance(driver, dbapi.Connection):  # s3sqlite persist=false: plain sqlite3,
            cursor = dbapi_connection.cursor()  # whose BEGIN takes no snapshot by itself
            try:
                cursor.execute("BEGIN")
            finally:
                cursor.close()
            return
        with self._pending_lock:
            self._pending_begin.add(driver)

    def _begin_if_pending(self, cursor: DBAPICursor, statement: str) -> None:
        driver = cursor.connection
        if not isinstance(driver, dbapi.Connection):
            return
        with self._pending_lock:
            if driver not in self._pending_begin:
                return
            self._pending_begin.discard(driver)
        if not driver.in_transaction:
            # A transaction that starts by reflecting the schema is a DDL script deciding what
            # to create (metadata.create_all(), Alembic): it waits for the write lease before
            # it reads, so several instances starting at once run it one after the other, each
            # on the schema the one before left, instead of conflicting.
            cursor.execute("BEGIN IMMEDIATE" if _REFLECTION.match(statement) else "BEGIN")

    def _end(self, dbapi_connection: PoolProxiedConnection) -> None:
        driver = dbapi_connection.driver_connection
        if isinstance(driver, dbapi.Connection):
            with self._pending_lock:
                self._pending_begin.discard(driver)

    def do_execute(
        self, cursor: DBAPICursor, statement: str, parameters: Any, context: Any = None
    ) -> None:
        self._begin_if_pending(cursor, statement)
        super().do_execute(cursor, statement, parameters, context)  # type: ignore[no-untyped-call]

    def do_executemany(
        self, cursor: DBAPICursor, statement: str, parameters: Any, context: Any = None
    ) -> None:
        self._begin_if_pending(cursor, statement)
        super().do_executemany(cursor, statement, parameters, context)  # type: ignore[no-untyped-call]

    def do_execute_no_params(
        self, cursor: DBAPICursor, statement: str, context: Any = None
    ) -> None:
        self._begin_if_pending(cursor, statement)
        super().do_execute_no_params(cursor, statement, context)  # type: ignore[no-untyped-call]

    def do_commit(self, dbapi_connection: PoolProxiedConnection) -> None:
        self._end(dbapi_connection)
        super().do_commit(dbapi_connection)  # type: ignore[no-untyped-call]

    def do_rollback(self, dbapi_connection: PoolProxiedConnection) -> None:
        self._end(dbapi_connection)
        super().do_rollback(dbapi_connection)  # type: ignore[no-untyped-call]

    def _get_table_pragma(
        self, connection: Connection, pragma: str, table_name: str, schema: str | None = None
    ) -> Any:
        # Reflection (has_table, create_all, Alembic) runs "PRAGMA temp.table_info(...)". On
        # SQLite 3.40 the statement classifier's EXPLAIN of it fails ("SQL logic error") until
        # the connection has touched its temp schema, so touch it first (a no-op read).
        if schema is None or schema.lower() == "temp":
            connection.exec_driver_sql("SELECT 1 FROM temp.sqlite_master LIMIT 0")
        return super()._get_table_pragma(  # type: ignore[no-untyped-call]
            connection, pragma, table_name, schema
        )


class S3SQLiteDialect(LambdaliteDialect):
    """``s3sqlite:///name.sqlite``: sqlalchemy-s3sqlite's URL form, in replica mode.

    The remote is ``s3://$S3SQLite_bucket/<path as written>`` (an absolute path is made
    relative to the working directory, as sqlalchemy-s3sqlite did; it must lie below it).
    """

    _extra_args = _S3SQLITE_ARGS

    def _target(self, url: URL, query: dict[str, str]) -> str:
        path = url.database
        if not path or path == ":memory:":
            raise _url_error(url, "no database: use s3sqlite:///name.sqlite")
        persist = _flag(url, query, "persist", default=True)
        if _flag(url, query, "legacy_tmp_rule", default=False) and "/tmp/" in f"/{path}":
            persist = False  # the path as written contains /tmp/ (whatever the cwd)
        if not persist:
            return _LocalFile(os.path.abspath(path))
        bucket = query.get("bucket") or os.environ.get(_BUCKET_ENV, "")
        if not bucket:
            raise _url_error(
                url,
                f"no bucket: set the {_BUCKET_ENV} environment variable or add "
                "?bucket=NAME (or persist=false for a local scratch database)",
            )
        key = os.path.normpath(os.path.relpath(path) if os.path.isabs(path) else path)
        if key == "." or key.startswith(".."):
            raise _url_error(
                url,
                f"{path!r} is not below the working directory {os.getcwd()!r}, so it has "
                "no S3 key; use a relative path, or sqlite+lambdalite:///?remote=s3://...",
            )
        return f"s3://{bucket}/{key}"


dialect = LambdaliteDialect


class _LocalFile(str):
    """The target of an ``s3sqlite://`` URL that is not persisted: a plain SQLite file."""


# ---------------------------------------------------------------------------- URL helpers


def _url_error(url: URL, why: str) -> exc.ArgumentError:
    shown = _CREDENTIALS.sub(r"\1***@", urllib.parse.unquote(url.render_as_string()))
    return exc.ArgumentError(f"invalid lambdalite URL {shown!r}: {why}")


def _single_values(url: URL) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in url.query.items():
        if not isinstance(value, str):
            raise _url_error(url, f"option {key!r} appears more than once")
        query[key] = value
    return query


def _check_keys(url: URL, query: Mapping[str, str], extra: frozenset[str]) -> None:
    accepted = _OPTION_NAMES | set(_CONNECTION_ARGS) | extra
    for key in query:
        if key in _REFUSED:
            raise _url_error(url, f"option {key!r} is not supported: {_REFUSED[key]}")
        if key not in accepted:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise _url_error(
                url,
                f"unknown option {key!r} in the URL query{hint} (accepted: "
                + ", ".join(sorted(accepted))
                + ")",
            )


def _connection_args(url: URL, query: Mapping[str, str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"check_same_thread": False}
    for key, convert in _CONNECTION_ARGS.items():
        if key in query:
            try:
                kwargs[key] = convert(query[key])
            except ValueError as error:
                raise _url_error(url, f"invalid value for {key}: {query[key]!r}") from error
    return kwargs


def _flag(url: URL, query: Mapping[str, str], key: str, *, default: bool) -> bool:
    if key not in query:
        return default
    try:
        return bool(util.asbool(query[key]))
    except ValueError as error:
        raise _url_error(
            url, f"invalid value for {key}: {query[key]!r}; expected true or false"
        ) from error


def _local_timeout(url: URL, value: str) -> float:
    try:
        return parse_duration(value, key="timeout")
    except ConfigurationError as error:
        raise _url_error(url, str(error)) from error


# ---------------------------------------------------------------------------- errors


def _wrapper_classes() -> dict[type[BaseException], type[exc.OperationalError]]:
    """For each lambdalite DB-API error, a class that is also SQLAlchemy's OperationalError.

    They are module attributes (``SAConflictError`` ...) so that they pickle.
    """
    bases: list[type[BaseException]] = [LambdaliteError]
    for value in vars(errors).values():
        if (
            isinstance(value, type)
            and issubclass(value, LambdaliteError)
            and issubclass(value, sqlite3.Error)
        ):
            bases.append(value)
    classes: dict[type[BaseException], type[exc.OperationalError]] = {}
    for base in bases:
        name = "SA" + base.__name__
        cls = type(name, (exc.OperationalError, base), {"__module__": __name__})
        cls.__doc__ = f"``sqlalchemy.exc.OperationalError`` and ``lambdalite.{base.__name__}``."
        globals()[name] = cls
        classes[base] = cls
    return classes


_WRAPPERS = _wrapper_classes()


def _as_lambdalite_error(context: ExceptionContext) -> BaseException | None:
    """``handle_error``: re-raise SQLAlchemy's wrapper of a lambdalite error as a dual class."""
    orig = context.original_exception
    wrapped = context.sqlalchemy_exception
    if (
        getattr(context, "chained_exception", None) is not None
        or not isinstance(orig, LambdaliteError)
        or type(wrapped) is not exc.OperationalError
    ):
        return None
    cls = next(_WRAPPERS[base] for base in type(orig).__mro__ if base in _WRAPPERS)
    dual = cls(
        wrapped.statement,
        wrapped.params,
        orig,
        hide_parameters=wrapped.hide_parameters,
        connection_invalidated=wrapped.connection_invalidated,
        code=wrapped.code,
        ismulti=wrapped.ismulti,
    )
    dual.detail = list(wrapped.detail)
    return dual
