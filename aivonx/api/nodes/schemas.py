"""Nodes as operators configure them, and as the proxy sees them right now.

The patterns here are what the OpenAPI document promises, and the server checks the same
ones: whatever matches them is accepted (or answered 409 when taken).
"""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from marshmallow.validate import Length, OneOf, Range

from aivonx.api.common import PLAIN_TEXT_PATTERN, Pattern
from aivonx.proxy.types import ACTIVE, DISABLED, STANDBY
from aivonx.store import BASE_URL_MAX, NODE_NAME_MAX

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_H16 = "[0-9A-Fa-f]{1,4}"
# Every textual form of an IPv6 address (RFC 4291 section 2.2) without an embedded IPv4 part.
_IPV6 = "|".join(
    [
        f"(?:{_H16}:){{7}}{_H16}",
        f"(?:{_H16}:){{1,7}}:",
        f"(?:{_H16}:){{1,6}}:{_H16}",
        *(f"(?:{_H16}:){{1,{6 - n}}}(?::{_H16}){{1,{n + 1}}}" for n in range(1, 6)),
        f":(?::{_H16}){{1,7}}",
        "::",
    ]
)
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_PATH = r"(?:/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?"
BASE_URL_PATTERN = rf"^https?://(?:{_LABEL}(?:\.{_LABEL})*|\[(?:{_IPV6})\])(?::{_PORT})?{_PATH}$"

PRIORITY_RANGE = (-1000, 1000)
WEIGHT_MAX = 1000
MAX_CONCURRENT_MAX = 100_000
POOLS = (ACTIVE, STANDBY, DISABLED)
NODE_DEFAULTS = {"enabled": True, "priority": 0, "weight": 1, "max_concurrent": 0}


def name_field(**options: Any) -> ma.fields.String:
    return ma.fields.String(
        validate=[
            Length(min=1, max=NODE_NAME_MAX),
            Pattern(PLAIN_TEXT_PATTERN, error="must not start or end with a space or contain control characters"),
        ],
        metadata={"description": "Unique name (on create it defaults to host:port of the URL)", "example": "gpu1"},
        **options,
    )


def base_url_field(**options: Any) -> ma.fields.String:
    return ma.fields.String(
        validate=[
            Length(max=BASE_URL_MAX),
            Pattern(BASE_URL_PATTERN, error="must be an http:// or https:// URL with a host, without a query"),
        ],
        metadata={
            "description": "Unique Ollama server URL (a trailing slash is dropped)",
            "example": "http://gpu1:11434",
        },
        **options,
    )


class NodePatchSchema(ma.Schema):
    """Any of a node's settings (PATCH)."""

    name = name_field()
    base_url = base_url_field()
    enabled = ma.fields.Boolean(metadata={"description": "Operators' switch; health checks never change it"})
    priority = ma.fields.Integer(
        strict=True,
        validate=Range(*PRIORITY_RANGE),
        metadata={"description": "Lower is preferred; a worse tier serves only when no better node can", "example": 0},
    )
    weight = ma.fields.Integer(
        strict=True,
        validate=Range(min=1, max=WEIGHT_MAX),
        metadata={"description": "Relative capacity for least_active", "example": 1},
    )
    max_concurrent = ma.fields.Integer(
        strict=True,
        validate=Range(min=0, max=MAX_CONCURRENT_MAX),
        metadata={"description": "Requests at once on this node; 0 is unlimited", "example": 0},
    )


class NodeReplaceSchema(NodePatchSchema):
    """Every one of a node's settings (PUT)."""

    def on_bind_field(self, field_name: str, field_obj: ma.fields.Field) -> None:
        field_obj.required = True


class NodeCreateSchema(NodePatchSchema):
    """A new node: its URL, and settings that default as documented."""

    def on_bind_field(self, field_name: str, field_obj: ma.fields.Field) -> None:
        if field_name == "base_url":
            field_obj.required = True
        elif field_name in NODE_DEFAULTS:
            field_obj.load_default = NODE_DEFAULTS[field_name]


class NodeSchema(ma.Schema):
    """A node: its settings, and what this proxy process knows about it now."""

    id = ma.fields.Integer(metadata={"example": 1})
    name = ma.fields.String(metadata={"example": "gpu1"})
    base_url = ma.fields.String(metadata={"example": "http://gpu1:11434"})
    enabled = ma.fields.Boolean()
    priority = ma.fields.Integer(metadata={"example": 0})
    weight = ma.fields.Integer(metadata={"example": 1})
    max_concurrent = ma.fields.Integer(metadata={"example": 0})
    created_at = ma.fields.DateTime()
    updated_at = ma.fields.DateTime()
    pool = ma.fields.String(
        validate=OneOf(POOLS),
        metadata={"description": "active: serving; standby: enabled but failing its checks; disabled: off"},
    )
    latency_ms = ma.fields.Float(allow_none=True, metadata={"description": "Last probe's answer time", "example": 3.2})
    active_requests = ma.fields.Integer(metadata={"description": "Requests in flight on the node", "example": 0})
    models = ma.fields.List(ma.fields.String(), metadata={"example": ["llama3:latest"]})
    loaded_models = ma.fields.List(ma.fields.String(), metadata={"description": "Models in memory (Ollama's ps)"})
    version = ma.fields.String(allow_none=True, metadata={"description": "Ollama version", "example": "0.6.5"})
    last_error = ma.fields.String(allow_none=True, metadata={"example": "connection refused"})
    last_check = ma.fields.DateTime(allow_none=True, metadata={"description": "When the last probe started"})
