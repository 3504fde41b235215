"""The pages: register, log in, log out, and the notes of the logged-in user.

Each write is one unit of work decorated with :func:`lambdalite.retry_on_conflict`: when
another instance committed first, the commit raises ``ConflictError`` (as a
``sqlalchemy.exc.OperationalError``), the session is rolled back and the whole unit of work
runs again on the fresh database.
"""

from __future__ import annotations

from examples.flask_app.models import Note, User, db
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

import lambdalite

bp = Blueprint("notes", __name__)


@lambdalite.retry_on_conflict
def register_user(username: str, password: str) -> bool:
    """Create the user unless the name is taken; False if it is. Re-run on conflict."""
    try:
        if db.session.scalar(select(User).where(User.username == username)) is not None:
            db.session.rollback()
            return False
        db.session.add(User(username=username, password_hash=generate_password_hash(password)))
        db.session.commit()
        return True
    except Exception:
        db.session.rollback()  # the next attempt starts a new transaction on fresh data
        raise


@lambdalite.retry_on_conflict
def add_note(user_id: int, text: str) -> None:
    try:
        db.session.add(Note(user_id=user_id, text=text))
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise


@bp.get("/")
def index() -> Response:
    return redirect(url_for("notes.notes" if current_user.is_authenticated else "notes.login"))


@bp.route("/register", methods=["GET", "POST"])
def register() -> str | Response:
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        if not username or len(password) < 8:
            flash("Choose a user name and a password of at least 8 characters.")
        elif register_user(username, password):
            flash("Registered: now log in.")
            return redirect(url_for("notes.login"))
        else:
            flash("That user name is taken.")
    return render_template("register.html")


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | Response:
    if request.method == "POST":
        username = request.form.get("username", "")
        user = db.session.scalar(select(User).where(User.username == username))
        if user is not None and check_password_hash(user.password_hash, request.form.get(
                "password", "")):
            login_user(user)
            return redirect(url_for("notes.notes"))
        flash("Wrong user name or password.")
    return render_template("login.html")


@bp.post("/logout")
def logout() -> Response:
    logout_user()
    return redirect(url_for("notes.login"))


@bp.route("/notes", methods=["GET", "POST"])
@login_required
def notes() -> str | Response:
    if request.method == "POST":
        text = request.form.get("text", "").strip()
        if text:
            add_note(current_user.id, text)
        return redirect(url_for("notes.notes"))
    mine = db.session.scalars(
        select(Note).where(Note.user_id == current_user.id).order_by(Note.id)
    ).all()
    return render_template("notes.html", notes=mine)
