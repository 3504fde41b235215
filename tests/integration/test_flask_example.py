"""The Flask example (examples/flask_app) run as two instances: two app objects, each with its own
cache dir, on one folder remote, driven through Flask's test client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from examples.flask_app import create_app
from examples.flask_app.models import User, db
from examples.flask_app.views import register_user
from flask import Flask
from flask.testing import FlaskClient

from lambdalite.replica.engine import forget_replicas

PASSWORD = "correct horse battery"


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[tuple[Flask, Flask]]:
    remote = (tmp_path / "remote").as_uri()
    apps = []
    for name in ("a", "b"):
        url = sa.URL.create(
            "sqlite+lambdalite",
            query={"remote": remote, "cache_dir": str(tmp_path / f"cache-{name}")},
        )
        apps.append(
            create_app(
                {
                    "SQLALCHEMY_DATABASE_URI": url.render_as_string(hide_password=False),
                    "SECRET_KEY": f"test-{name}",
                    "TESTING": True,
                }
            )
        )
    yield apps[0], apps[1]
    for app in apps:
        with app.app_context():
            db.engine.dispose()
    forget_replicas()


def _login(client: FlaskClient, username: str) -> str:
    page = client.post(
        "/login", data={"username": username, "password": PASSWORD}, follow_redirects=True
    )
    assert page.status_code == 200
    return page.get_data(as_text=True)


def test_a_user_registered_on_one_instance_logs_in_on_the_other(
    instances: tuple[Flask, Flask],
) -> None:
    a, b = (app.test_client() for app in instances)
    page = a.post(
        "/register", data={"username": "ada", "password": PASSWORD}, follow_redirects=True
    )
    assert "Registered: now log in." in page.get_data(as_text=True)
    assert "Your notes" in _login(b, "ada")
    taken = b.post("/register", data={"username": "ada", "password": PASSWORD})
    assert "That user name is taken." in taken.get_data(as_text=True)
    wrong = a.post("/login", data={"username": "ada", "password": "not the password"})
    assert "Wrong user name or password." in wrong.get_data(as_text=True)


def test_notes_written_on_both_instances_appear_on_both(instances: tuple[Flask, Flask]) -> None:
    a, b = (app.test_client() for app in instances)
    for client, name in ((a, "ada"), (b, "grace")):
        client.post("/register", data={"username": name, "password": PASSWORD})
    _login(a, "ada")
    _login(b, "ada")
    a.post("/notes", data={"text": "written on a"})
    b.post("/notes", data={"text": "written on b"})
    a.post("/notes", data={"text": "again on a"})
    for client in (a, b):
        page = client.get("/notes").get_data(as_text=True)
        assert page.index("written on a") < page.index("written on b") < page.index("again on a")
    grace = instances[1].test_client()
    assert "No notes yet." in _login(grace, "grace")  # per-user data


def test_pages_need_a_login(instances: tuple[Flask, Flask]) -> None:
    client = instances[0].test_client()
    response = client.get("/notes")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/").headers["Location"].endswith("/login")


def test_a_racing_registration_is_retried_and_sees_the_winner(
    instances: tuple[Flask, Flask],
) -> None:
    a, b = instances
    with a.app_context():
        # Instance a's session opens its transaction (an earlier read in the same request) ...
        assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 0
        # ... instance b registers the same name and commits first ...
        b.test_client().post("/register", data={"username": "ada", "password": PASSWORD})
        # ... so a's first attempt conflicts at COMMIT; the retry sees b's user.
        assert register_user("ada", PASSWORD) is False
        assert db.session.scalars(sa.select(User.username)).all() == ["ada"]
