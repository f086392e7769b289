"""Liveness, readiness and what is running."""

from __future__ import annotations

import marshmallow as ma
from marshmallow.validate import OneOf

from aivonx.version import __version__


class LivenessSchema(ma.Schema):
    status = ma.fields.String(validate=OneOf(("ok",)), metadata={"example": "ok"})


class ReadinessSchema(ma.Schema):
    status = ma.fields.String(validate=OneOf(("ready", "not ready")), metadata={"example": "ready"})
    database = ma.fields.String(validate=OneOf(("ok", "unavailable")), metadata={"example": "ok"})
    active_nodes = ma.fields.Integer(metadata={"description": "Nodes serving now", "example": 2})
    detail = ma.fields.String(metadata={"description": "What is wrong (when not ready)", "example": "no active node"})


class InfoSchema(ma.Schema):
    name = ma.fields.String(metadata={"example": "aivonx"})
    version = ma.fields.String(metadata={"example": __version__})
    build = ma.fields.String(allow_none=True, metadata={"description": "AIVONX_BUILD (e.g. a commit), if set"})
    python = ma.fields.String(metadata={"example": "3.12.8"})
    strategy = ma.fields.String(metadata={"example": "least_active"})
    redis = ma.fields.Boolean(metadata={"description": "Whether state is shared through Redis"})
    database = ma.fields.String(metadata={"description": "SQLAlchemy dialect", "example": "postgresql"})
