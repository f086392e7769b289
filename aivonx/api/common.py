"""What every API module shares: the problem-details schema and the auth decorator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import marshmallow as ma
from flask_smorest import Blueprint

from aivonx.security import roles_required

F = TypeVar("F", bound=Callable[..., Any])

ADMIN = ("admin",)
ANY_ROLE = ("admin", "viewer")


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
