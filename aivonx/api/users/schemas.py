import marshmallow as ma
from marshmallow.validate import Length, OneOf

from aivonx.api.common import EncodableText, PlainText
from aivonx.models import ROLES
from aivonx.security import MIN_PASSWORD_LENGTH

PASSWORD_MAX_LENGTH = 1024


def password_field() -> ma.fields.String:
    return ma.fields.String(
        required=True,
        load_only=True,
        validate=[Length(min=MIN_PASSWORD_LENGTH, max=PASSWORD_MAX_LENGTH), EncodableText()],
        metadata={"description": f"At least {MIN_PASSWORD_LENGTH} characters", "example": "correct-horse-battery"},
    )


class UserSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True, metadata={"example": 2})
    username = ma.fields.String(
        required=True, validate=[Length(min=1, max=80), PlainText()], metadata={"example": "alice"}
    )
    password = password_field()
    role = ma.fields.String(
        load_default="viewer",
        validate=OneOf(ROLES),
        metadata={"description": "`viewer` reads, `admin` also writes", "example": "viewer"},
    )
    active = ma.fields.Boolean(dump_only=True, metadata={"description": "False: disabled", "example": True})
    created_at = ma.fields.DateTime(dump_only=True, metadata={"example": "2026-01-31T09:30:00+00:00"})
    updated_at = ma.fields.DateTime(dump_only=True, metadata={"example": "2026-01-31T09:30:00+00:00"})


class UserUpdateSchema(ma.Schema):
    role = ma.fields.String(validate=OneOf(ROLES), metadata={"example": "admin"})
    active = ma.fields.Boolean(
        metadata={"description": "False disables the user: no login, existing tokens stop working", "example": False}
    )


class PasswordSetSchema(ma.Schema):
    password = password_field()
