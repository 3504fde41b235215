"""Run an engine test on the folder remote and on SeaweedFS."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import lambdalite
from lambdalite.storage import open_storage
from lambdalite.storage.base import Storage


@dataclass
class Remote:
    url: str
    tmp: Path
    options: dict[str, Any] = field(default_factory=dict)

    def connect(self, name: str, **kwargs: Any) -> lambdalite.Connection:
        return lambdalite.connect(
            self.url, cache_dir=str(self.tmp / f"cache-{name}"), **{**self.options, **kwargs}
        )

    def cache_dir(self, name: str) -> str:
        return str(self.tmp / f"cache-{name}")

    def storage(self) -> Storage:
        return open_storage(self.url, endpoint_url=self.options.get("endpoint_url"))

    def objects(self) -> dict[str, bytes]:
        st = self.storage()
        out = {}
        for info in st.list(""):
            blob = st.get(info.key)
            assert blob is not None
            out[info.key] = blob.data
        return out


@pytest.fixture(params=["folder", pytest.param("s3", marks=pytest.mark.s3)])
def any_remote(request: pytest.FixtureRequest, tmp_path: Path) -> Remote:
    if request.param == "folder":
        return Remote((tmp_path / "remote").as_uri(), tmp_path)
    s3 = request.getfixturevalue("s3_remote")
    return Remote(s3.url, tmp_path, {"endpoint_url": s3.endpoint_url})
