"""Who may do what: passwords, JWTs and roles for the management API, API keys for the proxy."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Response
from flask_jwt_extended import create_access_token, create_refresh_token, get_current_user, verify_jwt_in_request
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from aivonx.errors import problem
from aivonx.extensions import db, jwt
from aivonx.models import User

API_KEY_PREFIX = "aivonx_"
MIN_PASSWORD_LENGTH = 8

F = TypeVar("F", bound=Callable[..., Any])


def hash_password(password: str) -> str:
    return generate_password_hash(password)  # werkzeug's salted scrypt


def verify_password(user: User | None, password: str) -> bool:
    if user is None:
        # Same work as for a real user, so timing does not reveal which usernames exist.
        check_password_hash(_DUMMY_HASH, password)
        return False
    return check_password_hash(user.password_hash, password)


_DUMMY_HASH = generate_password_hash(secrets.token_urlsafe(16))


def authenticate(username: str, password: str) -> User | None:
    user = db.session.scalar(select(User).where(User.username == username))
    if not verify_password(user, password) or user is None or not user.active:
        return None
    return user


def issue_tokens(user: User, *, refresh: bool = True) -> dict[str, str]:
    tokens = {"access": create_access_token(identity=str(user.id), additional_claims={"role": user.role})}
    if refresh:
        tokens["refresh"] = create_refresh_token(identity=str(user.id))
    return tokens


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def roles_required(*roles: str) -> Callable[[F], F]:
    """A valid access token of an active user whose role is one of `roles`; else 401/403."""

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            verify_jwt_in_request()
            user = get_current_user()
            if user.role not in roles:
                return problem(403, f"this needs the {' or '.join(roles)} role", title="Forbidden")
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def _unauthorized(message: str) -> Response:
    response = problem(401, message, title="Unauthorized")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def init_app(app: Flask) -> None:
    app.config.setdefault("JWT_ACCESS_TOKEN_EXPIRES", timedelta(minutes=app.config["AIVONX_ACCESS_TOKEN_MINUTES"]))
    app.config.setdefault("JWT_REFRESH_TOKEN_EXPIRES", timedelta(days=app.config["AIVONX_REFRESH_TOKEN_DAYS"]))
    jwt.init_app(app)

    @jwt.user_lookup_loader
    def load_user(_header: dict, payload: dict) -> User | None:
        try:
            user = db.session.get(User, int(payload["sub"]))
        except (TypeError, ValueError):
            return None
        return user if user is not None and user.active else None

    jwt.user_lookup_error_loader(lambda _h, _p: _unauthorized("the user of this token is unknown or disabled"))
    jwt.unauthorized_loader(lambda reason: _unauthorized(f"missing credentials: {reason}"))
    jwt.invalid_token_loader(lambda reason: _unauthorized(f"invalid token: {reason}"))
    jwt.expired_token_loader(lambda _h, _p: _unauthorized("token has expired"))
    jwt.revoked_token_loader(lambda _h, _p: _unauthorized("token has been revoked"))
    jwt.needs_fresh_token_loader(lambda _h, _p: _unauthorized("fresh token required"))
    jwt.token_verification_failed_loader(lambda _h, _p: _unauthorized("token verification failed"))
