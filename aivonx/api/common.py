"""What every API module shares: the problem-details schema and the auth decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import marshmallow as ma
from flask_smorest import Blueprint, abort
from marshmallow.validate import Regexp, Validator

from aivonx.security import roles_required

F = TypeVar("F", bound=Callable[..., Any])

ADMIN = ("admin",)
ANY_ROLE = ("admin", "viewer")


# Names are printable text without surrounding spaces: no C0/C1 controls or DEL (PostgreSQL
# refuses NUL; the rest only makes trouble in logs and pages). Written so that JSON Schema
# (ECMA-262) and Python read the pattern the same way, so the OpenAPI document tells the truth.
_CONTROL = r"\x00-\x1f\x7f-\x9f"
PLAIN_TEXT_PATTERN = rf"^[^\s{_CONTROL}](?:[^{_CONTROL}]*[^\s{_CONTROL}])?$"


class EncodableText(Validator):
    """Text UTF-8 can encode: no lone surrogates (JSON can carry them, no database or hash can)."""

    def __call__(self, value: str) -> str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ma.ValidationError("must be valid Unicode text") from None
        return value


class Pattern(Regexp):
    """A regular expression the whole text must match, as JSON Schema's anchored `pattern`
    (Python's `$` also matches before a final newline), on encodable text."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return EncodableText()(value)


class PlainText(Pattern):
    """A name: PLAIN_TEXT_PATTERN, documented as the field's `pattern`."""

    def __init__(self) -> None:
        super().__init__(PLAIN_TEXT_PATTERN, error="must not start or end with a space or contain control characters")


class ProblemSchema(ma.Schema):
    """RFC 9457 problem details, as every management error is answered."""

    type = ma.fields.String(metadata={"example": "about:blank"})
    title = ma.fields.String(metadata={"example": "Conflict"})
    status = ma.fields.Integer(metadata={"example": 409})
    detail = ma.fields.String(metadata={"example": "a node named 'gpu1' exists already"})
    errors = ma.fields.Dict(
        keys=ma.fields.String(),
        metadata={"description": "Per-field messages", "example": {"name": ["a node named 'gpu1' exists already"]}},
    )


def abort_field(status: int, field: str, message: str) -> NoReturn:
    """End the request with a problem that names `field` (the `errors` member)."""
    abort(status, message=message, errors={field: [message]})


def authorized(blp: Blueprint, roles: tuple[str, ...] = ANY_ROLE) -> Callable[[F], F]:
    """Require a bearer JWT of one of `roles`, and document it (401, and 403 where a role can miss)."""

    def decorator(view: F) -> F:
        view = roles_required(*roles)(view)
        view = blp.doc(security=[{"bearerAuth": []}])(view)
        view = blp.alt_response(401, response="UNAUTHORIZED")(view)
        if set(roles) != set(ANY_ROLE):
            view = blp.alt_response(403, response="FORBIDDEN")(view)
        return view

    return decorator
