"""Who is signed in to the pages.

The signed session cookie (Flask's, HttpOnly) holds the user id and a fingerprint of the
password hash, so a password change or disabling the user ends every session of theirs.
Forms carry a CSRF token (Flask-WTF). The pages' scripts call the management API with an
access token they get from POST /ui/token: a POST with the page's CSRF token in a header,
so another site can neither trigger nor read it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Flask, Response, abort, flash, g, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, ValidationError

from aivonx.admin.blueprint import bp
from aivonx.extensions import db
from aivonx.models import User
from aivonx.security import authenticate, issue_tokens

F = TypeVar("F", bound=Callable[..., Any])
PUBLIC_ENDPOINTS = {"admin.login", "admin.static"}


def fingerprint(user: User) -> str:
    return hashlib.sha256(user.password_hash.encode()).hexdigest()[:16]


def sign_in(user: User) -> None:
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    session["fingerprint"] = fingerprint(user)


def signed_in_user() -> User | None:
    user_id = session.get("user_id")
    if not isinstance(user_id, int):
        return None
    user = db.session.get(User, user_id)
    if user is None or not user.active or session.get("fingerprint") != fingerprint(user):
        return None
    return user


@bp.before_request
def require_sign_in() -> Response | None:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    user = signed_in_user()
    if user is None:
        session.clear()
        return redirect(url_for("admin.login", next=request.full_path.rstrip("?") if request.method == "GET" else None))
    g.ui_user = user
    return None


@bp.app_context_processor
def page_context() -> dict[str, Any]:
    user = g.get("ui_user")
    return {"ui_user": user, "is_admin": user is not None and user.role == "admin"}


def admin_required(view: F) -> F:
    """Writes are for admins; viewers see the read-only pages."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.ui_user.role != "admin":
            abort(403, description="this needs the admin role")
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired()])
    password = PasswordField("Password", validators=[DataRequired()])


def safe_next(target: str | None) -> str:
    """Only a path of this site (no open redirect to another host)."""
    if target and target.startswith("/ui") and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("admin.dashboard")


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    form = LoginForm()
    if form.validate_on_submit():
        user = authenticate(form.username.data or "", form.password.data or "")
        if user is not None:
            sign_in(user)
            return redirect(safe_next(request.args.get("next")))
        form.password.errors.append("wrong username or password, or the account is disabled")
    status = 200 if not form.errors else 400
    return render_template("admin/login.html", form=form), status


class LogoutForm(FlaskForm):
    pass


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    if LogoutForm().validate_on_submit():
        session.clear()
        flash("Signed out.")
        return redirect(url_for("admin.login"))
    abort(400, description="the form expired; reload the page and try again")


@bp.route("/token", methods=["POST"])
def token() -> Any:
    """An access token for the pages' scripts (the management API wants a bearer token)."""
    try:
        validate_csrf(request.headers.get("X-CSRFToken"))
    except ValidationError as error:
        raise CSRFError(str(error)) from None
    response = {"access": issue_tokens(g.ui_user, refresh=False)["access"], "role": g.ui_user.role}
    return response, 200, {"Cache-Control": "no-store"}


def wants_html() -> bool:
    """A browser asking for a page (Ollama clients and curl never list text/html)."""
    return request.method == "GET" and "text/html" in request.accept_mimetypes.values()


def send_browsers_to_ui(app: Flask) -> None:
    """`/` answers `Ollama is running` to clients, and sends a browser to the pages.

    The proxy's own view stays as it is (its request log and hooks run as before); this
    only wraps it.
    """
    root = app.view_functions["ollama.root"]

    @wraps(root)
    def root_or_pages() -> Any:
        if wants_html():
            return redirect(url_for("admin.dashboard"))
        return root()

    app.view_functions["ollama.root"] = root_or_pages
