"""Log in, refresh the access token, see and change your own account."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_jwt_extended import get_current_user, jwt_required
from flask_smorest import Blueprint, abort

from aivonx.api.auth.schemas import AccountSchema, LoginSchema, PasswordChangeSchema, TokensSchema
from aivonx.api.common import authorized
from aivonx.extensions import db
from aivonx.security import authenticate, hash_password, issue_tokens, verify_password

blp = Blueprint("account", __name__, url_prefix="/api/account", description="Log in and manage your own account")


def _token_answer(tokens: dict[str, str]) -> dict[str, Any]:
    lifetime = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]
    return {**tokens, "token_type": "Bearer", "expires_in": int(lifetime.total_seconds())}


@blp.route("/login")
class Login(MethodView):
    @blp.arguments(LoginSchema)
    @blp.response(200, TokensSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    def post(self, credentials: dict[str, str]) -> dict[str, Any]:
        """Exchange a username and password for an access and a refresh token."""
        user = authenticate(credentials["username"], credentials["password"])
        if user is None:
            abort(401, message="wrong username or password, or the account is disabled")
        return _token_answer(issue_tokens(user))


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.doc(security=[{"bearerAuth": []}])
    @blp.response(200, TokensSchema)
    @blp.alt_response(401, response="UNAUTHORIZED")
    @jwt_required(refresh=True)
    def post(self) -> dict[str, Any]:
        """A new access token for the refresh token sent as Bearer."""
        return _token_answer(issue_tokens(get_current_user(), refresh=False))


@blp.route("/me")
class Me(MethodView):
    @authorized(blp)
    @blp.response(200, AccountSchema)
    def get(self) -> Any:
        """The account the token belongs to."""
        return get_current_user()


@blp.route("/password")
class Password(MethodView):
    @authorized(blp)
    @blp.arguments(PasswordChangeSchema)
    @blp.response(204)
    @blp.alt_response(400, response="BAD_REQUEST")
    def post(self, change: dict[str, str]) -> None:
        """Change your own password (needs the current one)."""
        user = get_current_user()
        if not verify_password(user, change["current_password"]):
            abort(400, message="current password is wrong", errors={"current_password": ["is wrong"]})
        user.password_hash = hash_password(change["new_password"])
        db.session.commit()
