"""One smoke test of the admin commands on a real S3 server (SeaweedFS)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import lambdalite
from lambdalite.admin import compact, gc, list_versions, pull, restore, status, verify
from lambdalite.config import Settings
from tests.admin.conftest import dump, dump_file
from tests.servers.seaweedfs import S3Remote


def test_admin_on_s3(s3_remote: S3Remote, tmp_path: Path) -> None:
    conn = lambdalite.connect(
        s3_remote.url,
        endpoint_url=s3_remote.endpoint_url,
        cache_dir=str(tmp_path / "writer"),
        compact_after_deltas=3,
        inline_delta_max=0,
    )
    model = {}
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.commit()
    model[conn.replica.version] = dump(conn)
    for i in range(6):
        conn.execute("INSERT INTO t(v) VALUES (?)", (f"row {i}" * 200,))
        conn.commit()
        model[conn.replica.version] = dump(conn)
    settings = Settings.build(
        s3_remote.url,
        {"endpoint_url": s3_remote.endpoint_url, "cache_dir": str(tmp_path / "admin")},
    )
    info = status(settings)
    assert info["version"] == 7 and info["archived_manifests"] == 2
    assert [v.version for v in list_versions(settings)] == list(range(1, 8))
    report = verify(settings)
    assert report.ok, report.to_dict()
    assert restore(settings, to_version=2, output=tmp_path / "v2.sqlite").restored_version == 2
    assert dump_file(tmp_path / "v2.sqlite") == model[2]
    assert compact(settings).compacted
    pulled = pull(settings, tmp_path / "latest.sqlite")
    assert pulled.version == 7
    plain = sqlite3.connect(tmp_path / "latest.sqlite")
    assert plain.execute("SELECT count(*) FROM t").fetchone()[0] == 6
    plain.close()
    assert gc(settings).deleted == []  # within the default retention
    assert restore(settings, to_version=3, in_place=True).published_version == 8
    assert dump(conn) == model[3]
    conn.close()
