"""The Ollama nodes behind the proxy: CRUD, enable/disable, and a probe on demand.

Every change is stored through aivonx.store (which bumps the version other processes
poll), then applied to this process at once; a node whose server may have changed is
probed before the answer, so the answer already says whether it serves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NoReturn

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from aivonx import store
from aivonx.api.common import ADMIN, abort_field, authorized
from aivonx.api.nodes.schemas import NodeCreateSchema, NodePatchSchema, NodeReplaceSchema, NodeSchema
from aivonx.models import Node
from aivonx.proxy.types import NodeStatus
from aivonx.runtime import Runtime, get_runtime

blp = Blueprint("nodes", __name__, url_prefix="/api/proxy/nodes", description="Ollama nodes behind the proxy")


def proxy_runtime() -> Runtime:
    """This process's runtime, with its configuration loaded."""
    rt = get_runtime(current_app)
    rt.ensure_loaded()
    return rt


def model_names(entries: tuple[dict[str, Any], ...]) -> list[str]:
    return [str(entry.get("name") or entry.get("model")) for entry in entries]


def node_views(rows: list[Node], rt: Runtime) -> list[dict[str, Any]]:
    """The rows' settings with what this process knows of each node now (NodeSchema)."""
    manager = rt.manager
    counts = manager.state.active_counts(row.id for row in rows)
    views = []
    for row in rows:
        status = manager.status(row.id)
        views.append(
            {
                "id": row.id,
                **{field: getattr(row, field) for field in store.NODE_FIELDS},
                "created_at": row.created_at,
                "updated_at": row.updated_at,
                "pool": manager.pool_of(store.node_spec(row)),
                "latency_ms": status.latency_ms,
                "active_requests": counts[row.id],
                "models": model_names(status.models),
                "loaded_models": model_names(status.loaded),
                "version": status.version,
                "last_error": status.last_error,
                "last_check": None if status.checked_at is None else datetime.fromtimestamp(status.checked_at, UTC),
            }
        )
    return views


def node_or_404(node_id: int) -> Node:
    node = store.get_node(node_id)
    if node is None:
        abort_field(404, "node_id", f"no node with id {node_id}")
    return node


def refuse(error: store.NodeInputError) -> NoReturn:
    """A taken name or URL is a conflict (409); anything else is invalid input (422)."""
    status = 409 if isinstance(error, store.NodeConflict) else 422
    abort_field(status, error.field, error.message)


def applied(node: Node, *, new_server: bool = False, probe: bool = False) -> dict[str, Any]:
    """Apply a stored change to this process now and answer the node as it then is.

    `new_server`: the URL changed, so what was known about the old server is dropped.
    `probe`: check the node before answering (if enabled), so a node that is up is active
    in the answer instead of after the next scheduled check.
    """
    rt = proxy_runtime()
    rt.sync(force=True)
    if new_server:
        rt.manager.state.put_status(NodeStatus(node_id=node.id))
    if (probe or new_server) and node.enabled:
        rt.check_now([store.node_spec(node)], readmit=True)
    return node_views([node], rt)[0]


def change(node: Node, fields: dict[str, Any]) -> dict[str, Any]:
    """Store new settings of a node and apply them; a re-enabled node is probed at once."""
    was_enabled, old_url = node.enabled, node.base_url
    try:
        store.update_node(node, **fields)
    except store.NodeInputError as error:
        refuse(error)
    return applied(node, new_server=node.base_url != old_url, probe=node.enabled and not was_enabled)


@blp.route("")
class Nodes(MethodView):
    @authorized(blp)
    @blp.response(200, NodeSchema(many=True))
    def get(self) -> list[dict[str, Any]]:
        """List the nodes with their pool, latency, models and active requests."""
        return node_views(store.list_nodes(), proxy_runtime())

    @authorized(blp, ADMIN)
    @blp.arguments(NodeCreateSchema)
    @blp.response(201, NodeSchema)
    @blp.alt_response(409, response="CONFLICT")
    def post(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Add a node; it is probed at once, so a node that is up answers as active."""
        try:
            node = store.add_node(fields.pop("base_url"), fields.pop("name", None), **fields)
        except store.NodeInputError as error:
            refuse(error)
        return applied(node, probe=True)


@blp.route("/<int:node_id>")
class NodeById(MethodView):
    @authorized(blp)
    @blp.response(200, NodeSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, node_id: int) -> dict[str, Any]:
        """One node with its pool, latency, models and active requests."""
        return node_views([node_or_404(node_id)], proxy_runtime())[0]

    @authorized(blp, ADMIN)
    @blp.arguments(NodeReplaceSchema)
    @blp.response(200, NodeSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def put(self, fields: dict[str, Any], node_id: int) -> dict[str, Any]:
        """Replace every setting of a node."""
        return change(node_or_404(node_id), fields)

    @authorized(blp, ADMIN)
    @blp.arguments(NodePatchSchema)
    @blp.response(200, NodeSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def patch(self, fields: dict[str, Any], node_id: int) -> dict[str, Any]:
        """Change some settings of a node."""
        return change(node_or_404(node_id), fields)

    @authorized(blp, ADMIN)
    @blp.response(204)
    @blp.alt_response(404, response="NOT_FOUND")
    def delete(self, node_id: int) -> None:
        """Remove a node. Requests already running on it finish; no new one goes there."""
        store.remove_node(node_or_404(node_id))
        proxy_runtime().sync(force=True)


@blp.route("/<int:node_id>/enable")
class EnableNode(MethodView):
    @authorized(blp, ADMIN)
    @blp.response(200, NodeSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, node_id: int) -> dict[str, Any]:
        """Let the node serve again; it is probed at once."""
        return change(node_or_404(node_id), {"enabled": True})


@blp.route("/<int:node_id>/disable")
class DisableNode(MethodView):
    @authorized(blp, ADMIN)
    @blp.response(200, NodeSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, node_id: int) -> dict[str, Any]:
        """Take the node out of service. Running requests finish; it is no longer probed."""
        return change(node_or_404(node_id), {"enabled": False})


@blp.route("/<int:node_id>/check")
class CheckNode(MethodView):
    @authorized(blp, ADMIN)
    @blp.response(200, NodeSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def post(self, node_id: int) -> dict[str, Any]:
        """Probe the node now (also a disabled one, which stays disabled) and answer its state."""
        node = node_or_404(node_id)
        rt = proxy_runtime()
        rt.check_now([store.node_spec(node)], readmit=True)
        return node_views([node], rt)[0]
