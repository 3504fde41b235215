"""A small Flask + Flask-SQLAlchemy + Flask-Login app on lambdalite: register, log in, notes.

Run it locally on the embedded default (a folder remote in the temporary directory)::

    python -m examples.flask_app            # http://127.0.0.1:5000

Every instance of the app (a Lambda container, a process) keeps its own local copy in its
``cache_dir``; they all share the remote, and every commit is published or raises. See
``README.md`` beside this file for Lambda.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from examples.flask_app.models import db, login_manager
from examples.flask_app.views import bp
from flask import Flask

from lambdalite.contrib.wsgi import LambdaliteMiddleware

__all__ = ["create_app", "default_database_url"]


def default_database_url(root: str | os.PathLike[str] | None = None) -> str:
    """``sqlite+lambdalite://`` on a folder remote under ``root`` (default: the temp dir)."""
    base = Path(root or os.path.join(tempfile.gettempdir(), "lambdalite-flask-example"))
    url = sa.URL.create(
        "sqlite+lambdalite",
        query={"remote": (base / "remote").as_uri(), "cache_dir": str(base / "cache")},
    )
    return url.render_as_string(hide_password=False).replace("://?", ":///?")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The app. ``DATABASE_URL`` and ``SECRET_KEY`` come from the environment (or ``config``)."""
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=os.environ.get("SECRET_KEY", "dev-only-secret"),
        SQLALCHEMY_DATABASE_URI=os.environ.get("DATABASE_URL") or default_database_url(),
    )
    if config:
        app.config.update(config)
    db.init_app(app)
    login_manager.init_app(app)
    app.register_blueprint(bp)
    # One freshness check per request, read-your-writes across instances (a bookmark cookie),
    # and a request re-run when another instance committed between its read and its write.
    app.wsgi_app = LambdaliteMiddleware(app.wsgi_app)  # type: ignore[method-assign]
    with app.app_context():
        # Safe from many cold starts at once: a transaction that starts by reflecting the
        # schema waits for the write lease, so each instance sees what the one before created.
        db.create_all()
    return app

