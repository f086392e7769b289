"""API keys for the Ollama and /v1 routes (admins): create (shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_jwt_extended import get_current_user
from flask_smorest import Blueprint

from aivonx import accounts
from aivonx.api.api_keys.schemas import ApiKeyCreateSchema, ApiKeySchema, NewApiKeySchema
from aivonx.api.common import ADMIN, abort_field, authorized
from aivonx.models import ApiKey

blp = Blueprint("api_keys", __name__, url_prefix="/api/keys", description="API keys for the Ollama and /v1 routes")


@blp.route("")
class ApiKeys(MethodView):
    @authorized(blp, ADMIN)
    @blp.response(200, ApiKeySchema(many=True))
    def get(self) -> list[ApiKey]:
        """Every key, revoked ones too; never the key itself."""
        return accounts.list_api_keys()

    @authorized(blp, ADMIN)
    @blp.arguments(ApiKeyCreateSchema)
    @blp.response(201, NewApiKeySchema)
    def post(self, fields: dict[str, str]) -> dict[str, Any]:
        """Create a key. The answer is the only place the key appears: store it now.

        Every proxy process accepts it within a sync interval (when require_api_key is on).
        """
        api_key, key = accounts.create_api_key(fields["name"], get_current_user())
        return {
            "id": api_key.id,
            "name": api_key.name,
            "prefix": api_key.prefix,
            "key": key,
            "created_at": api_key.created_at,
        }


@blp.route("/<int:key_id>")
class ApiKeyById(MethodView):
    @authorized(blp, ADMIN)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, key_id: int) -> None:
        """Revoke a key: every proxy process refuses it within a sync interval.

        The key stays listed with `revoked_at` for audit. Unknown or already revoked: 404.
        """
        if not accounts.revoke_api_key(key_id):
            message = f"no unrevoked API key with id {key_id}"
            abort_field(404, "key_id", message)
