"""What the benchmark scripts share: logging, the backends they run on, matplotlib."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def backend_remote(
    backend: str, work: Path, *, name: str
) -> Iterator[tuple[str, str | None] | None]:
    """Yield (remote URL, endpoint) for ``backend``, or None if it is unavailable.

    ``folder``: the folder ``work/name``. ``s3``: a SeaweedFS server started for
    the run, with a bucket ``name``; its keys are put in the environment (so
    worker processes and boto3's default chain find them) and restored after.
    """
    if backend == "folder":
        root = work / name
        root.mkdir(parents=True, exist_ok=True)
        yield root.as_uri(), None
        return
    try:
        from lambdalite.testing.seaweedfs import start_seaweedfs
    except ImportError as exc:
        log(f"s3: skipped ({exc})")
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(start_seaweedfs(work / "seaweedfs"))
        except Exception as exc:  # a missing binary skips the backend
            log(f"s3: skipped, SeaweedFS did not start ({exc})")
            yield None
            return
        saved = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)
        try:
            server.create_bucket(name)
            yield f"s3://{name}", server.endpoint_url
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def pyplot() -> Any | None:
    """matplotlib.pyplot on the Agg backend, or None (logged) without the ``bench`` extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return None
    return plt
