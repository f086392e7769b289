import marshmallow as ma
from marshmallow.validate import Length

from aivonx.api.common import EncodableText, PlainText
from aivonx.security import MIN_PASSWORD_LENGTH


class LoginSchema(ma.Schema):
    username = ma.fields.String(
        required=True, validate=[Length(min=1, max=80), PlainText()], metadata={"example": "admin"}
    )
    password = ma.fields.String(required=True, load_only=True, validate=[Length(min=1, max=1024), EncodableText()])


class TokensSchema(ma.Schema):
    access = ma.fields.String(required=True, metadata={"description": "Access token (JWT), send as Bearer"})
    refresh = ma.fields.String(metadata={"description": "Refresh token (JWT) for POST /api/account/refresh"})
    token_type = ma.fields.String(metadata={"example": "Bearer"})
    expires_in = ma.fields.Integer(metadata={"description": "Seconds the access token is valid"})


class AccountSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    username = ma.fields.String(dump_only=True)
    role = ma.fields.String(dump_only=True, metadata={"example": "admin"})
    active = ma.fields.Boolean(dump_only=True)
    created_at = ma.fields.DateTime(dump_only=True)


class PasswordChangeSchema(ma.Schema):
    current_password = ma.fields.String(required=True, load_only=True, validate=EncodableText())
    new_password = ma.fields.String(
        required=True, load_only=True, validate=[Length(min=MIN_PASSWORD_LENGTH, max=1024), EncodableText()]
    )
