"""Runtime state, active requests, and model operations across the nodes."""

from __future__ import annotations

import marshmallow as ma
from marshmallow.validate import Length

from aivonx.api.nodes.schemas import NodeSchema, Pattern

MODEL_NAME_MAX = 300
# Ollama's names: `[host[:port]/][namespace/]model[:tag]`, each part starting with a letter or digit.
_MODEL_PART = "[A-Za-z0-9][A-Za-z0-9_.:@+-]*"
MODEL_PATTERN = rf"^{_MODEL_PART}(?:/{_MODEL_PART})*$"


class NodeRefSchema(ma.Schema):
    id = ma.fields.Integer(metadata={"example": 1})
    name = ma.fields.String(metadata={"example": "gpu1"})


class PoolsSchema(ma.Schema):
    active = ma.fields.List(ma.fields.Nested(NodeRefSchema), metadata={"description": "Serving"})
    standby = ma.fields.List(ma.fields.Nested(NodeRefSchema), metadata={"description": "Enabled, failing checks"})
    disabled = ma.fields.List(ma.fields.Nested(NodeRefSchema), metadata={"description": "Switched off"})


class ModelPlacementSchema(ma.Schema):
    model = ma.fields.String(metadata={"example": "llama3:latest"})
    nodes = ma.fields.List(ma.fields.String(), metadata={"description": "Enabled nodes that have it"})
    active_nodes = ma.fields.List(ma.fields.String(), metadata={"description": "Those of them that serve it now"})


class StateSchema(ma.Schema):
    strategy = ma.fields.String(metadata={"example": "least_active"})
    pools = ma.fields.Nested(PoolsSchema)
    nodes = ma.fields.List(ma.fields.Nested(NodeSchema))
    models = ma.fields.List(ma.fields.Nested(ModelPlacementSchema))


class ActiveRequestsQuerySchema(ma.Schema):
    node_id = ma.fields.Integer(metadata={"description": "Only this node"})


class NodeActiveRequestsSchema(ma.Schema):
    node_id = ma.fields.Integer(metadata={"example": 1})
    name = ma.fields.String(metadata={"example": "gpu1"})
    active = ma.fields.Integer(metadata={"description": "Requests in flight", "example": 2})


class ActiveRequestsSchema(ma.Schema):
    total = ma.fields.Integer(metadata={"example": 2})
    nodes = ma.fields.List(ma.fields.Nested(NodeActiveRequestsSchema))


class PullSchema(ma.Schema):
    model = ma.fields.String(
        required=True,
        validate=[
            Length(min=1, max=MODEL_NAME_MAX),
            Pattern(MODEL_PATTERN, error="must be a model name like llama3.2:1b"),
        ],
        metadata={"example": "llama3.2:1b"},
    )
    node_id = ma.fields.Integer(
        strict=True, metadata={"description": "Pull onto this node only (default: every active node)"}
    )


class PullProgressSchema(ma.Schema):
    """One line of the NDJSON stream: a node's progress, or the final outcome (without `node`)."""

    node = ma.fields.String(metadata={"description": "The node this line is from", "example": "gpu1"})
    status = ma.fields.String(metadata={"example": "pulling manifest"})
    digest = ma.fields.String()
    total = ma.fields.Integer()
    completed = ma.fields.Integer()
    error = ma.fields.String(metadata={"description": "Only on the last line, when some node failed"})


class ModelDeletionSchema(ma.Schema):
    model = ma.fields.String(metadata={"example": "llama3:latest"})
    deleted_from = ma.fields.List(ma.fields.String(), metadata={"example": ["gpu1", "gpu2"]})
    failed = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.String(),
        metadata={"description": "Node name -> error, for nodes that could not delete it", "example": {}},
    )
