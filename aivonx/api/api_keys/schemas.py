import marshmallow as ma
from marshmallow.validate import Length

from aivonx.api.common import PlainText

TIME_EXAMPLE = "2026-01-31T09:30:00+00:00"


class ApiKeyCreateSchema(ma.Schema):
    name = ma.fields.String(
        required=True,
        validate=[Length(min=1, max=100), PlainText()],
        metadata={"description": "What the key is for", "example": "open-webui"},
    )


class NewApiKeySchema(ma.Schema):
    """A key just created: the only answer that contains the key itself."""

    id = ma.fields.Integer(metadata={"example": 3})
    name = ma.fields.String(metadata={"example": "open-webui"})
    prefix = ma.fields.String(metadata={"description": "Shown in lists to tell keys apart", "example": "aivonx_Zq4d9X"})
    key = ma.fields.String(
        metadata={
            "description": "Send as `Authorization: Bearer <key>` to the Ollama and /v1 routes. "
            "Shown only now: aivonx stores its SHA-256, not the key.",
            "example": "aivonx_Zq4d9XkR2v7mYp0cT3wLbN8sHf1jUe6aGi5oQxCzVdE",
        }
    )
    created_at = ma.fields.DateTime(metadata={"example": TIME_EXAMPLE})


class ApiKeySchema(ma.Schema):
    id = ma.fields.Integer(metadata={"example": 3})
    name = ma.fields.String(metadata={"example": "open-webui"})
    prefix = ma.fields.String(metadata={"description": "The key's first characters", "example": "aivonx_Zq4d9X"})
    created_at = ma.fields.DateTime(metadata={"example": TIME_EXAMPLE})
    last_used_at = ma.fields.DateTime(
        allow_none=True,
        metadata={"description": "Saved about once per sync interval, not per request", "example": TIME_EXAMPLE},
    )
    revoked_at = ma.fields.DateTime(allow_none=True, metadata={"description": "Null while the key works"})
    user = ma.fields.Function(
        lambda api_key: api_key.user.username if api_key.user is not None else None,
        allow_none=True,
        metadata={"type": "string", "description": "Username of the creator", "example": "admin"},
    )
