"""Users of the management API: list, create, change role, disable, set a password (admins)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from aivonx import accounts
from aivonx.api.common import ADMIN, abort_field, authorized
from aivonx.api.users.schemas import PasswordSetSchema, UserSchema, UserUpdateSchema
from aivonx.models import User

blp = Blueprint("users", __name__, url_prefix="/api/users", description="Users of the management API (admins)")


def user_or_404(user_id: int) -> User:
    user = accounts.get_user(user_id)
    if user is None:
        abort_field(404, "user_id", f"no user with id {user_id}")
    return user


@blp.route("")
class Users(MethodView):
    @authorized(blp, ADMIN)
    @blp.response(200, UserSchema(many=True))
    def get(self) -> list[User]:
        """Every user, disabled ones too."""
        return accounts.list_users()

    @authorized(blp, ADMIN)
    @blp.arguments(UserSchema)
    @blp.response(201, UserSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, fields: dict[str, Any]) -> User:
        """Create a user; the role defaults to `viewer`. A taken username is a conflict."""
        try:
            user = accounts.create_user(fields["username"], fields["password"], fields["role"])
        except accounts.AccountConflict as error:
            abort_field(409, error.field, error.message)
        return user


@blp.route("/<int:user_id>")
class UserById(MethodView):
    @authorized(blp, ADMIN)
    @blp.response(200, UserSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, user_id: int) -> User:
        """One user."""
        return user_or_404(user_id)

    @authorized(blp, ADMIN)
    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def patch(self, changes: dict[str, Any], user_id: int) -> User:
        """Change a user's role, or disable (`active: false`) or enable them.

        A disabled user cannot log in and their tokens stop working at once. The last
        active admin can be neither demoted nor disabled.
        """
        user = user_or_404(user_id)
        try:
            accounts.update_user(user, role=changes.get("role"), active=changes.get("active"))
        except accounts.AccountConflict as error:
            abort_field(409, error.field, error.message)
        return user


@blp.route("/<int:user_id>/password")
class UserPassword(MethodView):
    @authorized(blp, ADMIN)
    @blp.arguments(PasswordSetSchema)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def put(self, change: dict[str, str], user_id: int) -> None:
        """Set a user's password (no current password needed: for admins resetting one)."""
        accounts.set_password(user_or_404(user_id), change["password"])
