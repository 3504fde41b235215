"""Write detection asks SQLite (EXPLAIN), never the SQL text: a table of statements."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import lambdalite
from lambdalite.statements import Kind, classify, split_script


@pytest.fixture
def raw() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t(a INTEGER PRIMARY KEY, b)")
    conn.execute("CREATE TABLE log(msg)")
    conn.execute("CREATE VIEW v AS SELECT a, b FROM t")
    conn.execute(
        "CREATE TRIGGER v_ins INSTEAD OF INSERT ON v BEGIN INSERT INTO t VALUES (NEW.a, NEW.b); END"
    )
    conn.execute("CREATE TEMP TABLE scratch(x)")
    return conn


CASES = [
    ("SELECT * FROM t", Kind.READ),
    ("  \n\t-- a comment\n/* another */ SELECT 1", Kind.READ),
    ("WITH x AS (SELECT 1) SELECT * FROM x", Kind.READ),
    ("SELECT 1 UNION SELECT 2", Kind.READ),
    ("VALUES (1), (2)", Kind.READ),
    ("EXPLAIN SELECT * FROM t", Kind.READ),
    ("EXPLAIN QUERY PLAN SELECT * FROM t", Kind.READ),
    ("INSERT INTO t VALUES (1, 2)", Kind.DML),
    ("insert into t values (1, 2)", Kind.DML),
    ("/* c */ -- x\n   INSERT INTO t VALUES (3, 4)", Kind.DML),
    ("UPDATE t SET b = 1", Kind.DML),
    ("DELETE FROM t", Kind.DML),
    ("REPLACE INTO t VALUES (1, 2)", Kind.DML),
    ("INSERT OR REPLACE INTO t VALUES (1, 2)", Kind.DML),
    ("INSERT INTO t VALUES (1, 2) ON CONFLICT(a) DO UPDATE SET b = excluded.b", Kind.DML),
    ("WITH x AS (SELECT 5 AS a) INSERT INTO t SELECT a, a FROM x", Kind.DML),
    ("WITH x AS (SELECT 1 AS a) UPDATE t SET b = 2 WHERE a IN (SELECT a FROM x)", Kind.DML),
    ("WITH x AS (SELECT 1 AS a) DELETE FROM t WHERE a IN (SELECT a FROM x)", Kind.DML),
    ("INSERT INTO v VALUES (9, 9)", Kind.DML),  # through an INSTEAD OF trigger
    ("INSERT INTO t VALUES (1, 2) RETURNING a", Kind.DML),
    ("INSERT INTO scratch VALUES (1)", Kind.READ),  # TEMP only: nothing to publish
    ("CREATE TABLE u(x)", Kind.DDL),
    ("CREATE INDEX i ON t(b)", Kind.DDL),
    ("DROP TABLE log", Kind.DDL),
    ("ALTER TABLE t ADD COLUMN c", Kind.DDL),
    ("CREATE VIEW w AS SELECT 1", Kind.DDL),
    ("CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END", Kind.DDL),
    ("PRAGMA user_version = 7", Kind.DDL),
    ("PRAGMA application_id = 7", Kind.DDL),
    ("PRAGMA user_version", Kind.READ),
    ("PRAGMA table_info(t)", Kind.READ),
    ("PRAGMA foreign_keys = ON", Kind.READ),  # connection setting, not the database
    ("PRAGMA journal_mode = WAL", Kind.READ),
    ("VACUUM", Kind.VACUUM),
    ("ANALYZE", Kind.DDL),
    ("BEGIN", Kind.BEGIN),
    ("BEGIN IMMEDIATE", Kind.BEGIN),
    ("COMMIT", Kind.COMMIT),
    ("END TRANSACTION", Kind.COMMIT),
    ("ROLLBACK", Kind.ROLLBACK),
    ("SAVEPOINT sp", Kind.SAVEPOINT),
    ("RELEASE sp", Kind.RELEASE),
    ("RELEASE SAVEPOINT sp", Kind.RELEASE),
    ("ROLLBACK TO sp", Kind.ROLLBACK_TO),
    ("ATTACH ':memory:' AS aux", Kind.READ),
]


@pytest.mark.parametrize(("sql", "kind"), CASES)
def test_classification(raw: sqlite3.Connection, sql: str, kind: Kind) -> None:
    assert classify(raw, sql).kind is kind


def test_begin_immediate_is_flagged(raw: sqlite3.Connection) -> None:
    assert classify(raw, "BEGIN IMMEDIATE").immediate
    assert classify(raw, "BEGIN EXCLUSIVE").immediate
    assert not classify(raw, "BEGIN DEFERRED").immediate


def test_changing_the_journal_mode_is_refused(raw: sqlite3.Connection) -> None:
    assert classify(raw, "PRAGMA journal_mode = DELETE").forbidden


def test_parameters_are_bound_for_classification(raw: sqlite3.Connection) -> None:
    assert classify(raw, "INSERT INTO t VALUES (?, ?)", (1, 2)).kind is Kind.DML
    assert classify(raw, "SELECT * FROM t WHERE a = :a", {"a": 1}).kind is Kind.READ


def test_split_script_keeps_triggers_and_strings_whole() -> None:
    script = (
        "CREATE TABLE a(x); CREATE TRIGGER tr AFTER INSERT ON a BEGIN INSERT INTO a VALUES (1); "
        "END; INSERT INTO a VALUES ('x;y'); -- trailing comment"
    )
    assert split_script(script) == [
        "CREATE TABLE a(x);",
        "CREATE TRIGGER tr AFTER INSERT ON a BEGIN INSERT INTO a VALUES (1); END;",
        "INSERT INTO a VALUES ('x;y');",
    ]


def test_repeated_execution_of_a_cached_statement_still_publishes(tmp_path: Path) -> None:
    remote = (tmp_path / "remote").as_uri()
    a = lambdalite.connect(remote, cache_dir=str(tmp_path / "a"), isolation_level=None)
    b = lambdalite.connect(remote, cache_dir=str(tmp_path / "b"))
    a.execute("CREATE TABLE t(x)")
    for i in range(5):
        a.execute("INSERT INTO t VALUES (?)", (i,))
        assert b.execute("SELECT count(*) FROM t").fetchone() == (i + 1,)
    a.close()
    b.close()


def test_classifying_returning_after_schema_changes_does_not_crash(tmp_path: Path) -> None:
    """SQLite 3.40 segfaults re-preparing a cached EXPLAIN of INSERT ... RETURNING after these
    schema changes; classification must never reuse a prepared EXPLAIN."""
    conn = sqlite3.connect(tmp_path / "rt.db", isolation_level=None)
    ddl = "CREATE TABLE autoinc_pk (id INTEGER PRIMARY KEY AUTOINCREMENT, data VARCHAR(50))"
    conn.execute(ddl)
    sql = "INSERT INTO autoinc_pk (data) VALUES (?) RETURNING autoinc_pk.id"
    assert classify(conn, sql, ("x",)).kind is Kind.DML
    conn.execute("CREATE TABLE other(x)")
    assert classify(conn, sql, ("x",)).kind is Kind.DML
    other = sqlite3.connect(tmp_path / "rt.db", isolation_level=None)
    other.execute("CREATE TABLE other2(x)")
    other.close()
    assert classify(conn, sql, ("x",)).kind is Kind.DML
    conn.execute("DROP TABLE autoinc_pk")
    conn.execute(ddl)
    assert classify(conn, sql, ("x",)).kind is Kind.DML
    conn.close()
