"""The live proxy settings (the ProxyConfig row)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow.validate import OneOf, Range

from config import STRATEGIES

DAY = 86_400.0


def seconds(maximum: float, description: str, example: float) -> ma.fields.Float:
    """A duration in seconds: more than 0, at most `maximum`."""
    return ma.fields.Float(
        validate=Range(min=0, max=maximum, min_inclusive=False),
        # apispec documents Range's bounds but not that the minimum is excluded.
        metadata={
            "description": f"{description} (seconds, at most {maximum:g})",
            "example": example,
            "exclusiveMinimum": True,
        },
    )


class ProxyConfigPatchSchema(ma.Schema):
    """Any of the settings (PATCH)."""

    strategy = ma.fields.String(
        validate=OneOf(STRATEGIES),
        metadata={"description": "How a node is picked among the best-priority ones", "example": "least_active"},
    )
    health_interval = seconds(DAY, "Between checks of an active node", 60)
    standby_interval = seconds(DAY, "Between checks of a standby node", 5)
    probe_timeout = seconds(600, "Timeout of each health probe request", 5)
    connect_timeout = seconds(600, "To connect to a node", 3)
    first_byte_timeout = seconds(3600, "For a node's first byte (and between chunks) before failing over", 300)
    max_tries = ma.fields.Integer(
        strict=True,
        validate=Range(min=1, max=10),
        metadata={"description": "Nodes tried per request before the first byte", "example": 3},
    )
    models_max_age = seconds(DAY, "Age after which merged model lists re-read a node", 30)
    forward_authorization = ma.fields.Boolean(
        metadata={"description": "Pass the client's Authorization header on to the nodes"}
    )
    require_api_key = ma.fields.Boolean(metadata={"description": "Ollama and /v1 routes demand an API key"})


class ProxyConfigReplaceSchema(ProxyConfigPatchSchema):
    """Every setting (PUT)."""

    def on_bind_field(self, field_name: str, field_obj: ma.fields.Field) -> None:
        field_obj.required = True


class ProxyConfigSchema(ProxyConfigPatchSchema):
    """The settings in force, with the version stamp every change moves."""

    version = ma.fields.Integer(
        metadata={"description": "Moves on every change of settings or nodes; processes reload on it", "example": 7}
    )
    updated_at = ma.fields.DateTime(metadata={"description": "When the settings last changed"})
