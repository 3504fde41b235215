"""Schema creation at cold start from many instances at once (issue 9 item 5)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

sa = pytest.importorskip("sqlalchemy")

from lambdalite.replica.engine import forget_replicas  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh() -> None:
    forget_replicas()


def test_create_all_from_many_instances_at_once(tmp_path: Path) -> None:
    remote = (tmp_path / "remote").as_uri()
    metadata = sa.MetaData()
    sa.Table("users", metadata, sa.Column("id", sa.Integer, primary_key=True))
    sa.Table("notes", metadata, sa.Column("id", sa.Integer, primary_key=True))
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def cold_start(n: int) -> None:
        url = sa.URL.create(
            "sqlite+lambdalite",
            query={"remote": remote, "cache_dir": str(tmp_path / f"instance-{n}")},
        )
        engine = sa.create_engine(
            url.render_as_string(hide_password=False).replace("://?", ":///?")
        )
        try:
            start.wait()
            metadata.create_all(engine)  # unmodified: no retry around it
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT count(*) FROM users")).scalar_one()
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=cold_start, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
