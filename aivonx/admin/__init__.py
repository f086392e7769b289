"""Admin pages under /ui/: sign-in, dashboard, nodes, settings, models, users, API keys and
the log viewer. Jinja templates and a few hand-written scripts (no build step, no CDN).

Pages read and change state through the same functions as the management API (store,
accounts, the API modules' helpers); the scripts call the management API itself with a
short-lived access token that the signed-in page asks for (see auth.py).
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Request
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from flask_wtf.csrf import generate_csrf

from aivonx.admin import auth, views
from aivonx.admin.blueprint import bp


class AdminOnlySessions(SecureCookieSessionInterface):
    """Sessions exist only for the admin pages. Opening one verifies a signed cookie, work
    that every proxied request would otherwise pay for nothing."""

    def open_session(self, app: Flask, request: Request) -> SessionMixin | None:
        if not request.path.startswith("/ui"):
            return self.make_null_session(app)
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    app.session_interface = AdminOnlySessions()
    # The session cookie carries who is signed in: HttpOnly and SameSite=Lax always,
    # Secure when AIVONX_COOKIE_SECURE is on (behind HTTPS).
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = app.config["AIVONX_COOKIE_SECURE"]
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(hours=app.config["AIVONX_SESSION_HOURS"])
    # A form's CSRF token lives as long as the session (a page left open for an hour still submits).
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    # Forms check their token themselves (FlaskForm); no app-wide CSRFProtect, which would
    # also demand a token from API and Ollama clients. Templates still need csrf_token().
    app.jinja_env.globals["csrf_token"] = generate_csrf
    app.register_blueprint(bp)
    auth.send_browsers_to_ui(app)


__all__ = ["auth", "bp", "init_app", "views"]
