"""What the proxy is doing now (pools, models, active requests), and model operations
on the nodes: pull with per-node progress, delete everywhere."""

from __future__ import annotations

import json
from typing import Any

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint, abort

from aivonx import store
from aivonx.api.common import ADMIN, authorized
from aivonx.api.nodes.resources import node_or_404, node_views, proxy_runtime
from aivonx.api.nodes.schemas import POOLS
from aivonx.api.operations.schemas import (
    MODEL_NAME_MAX,
    MODEL_PATTERN,
    ActiveRequestsQuerySchema,
    ActiveRequestsSchema,
    ModelDeletionSchema,
    PullProgressSchema,
    PullSchema,
    StateSchema,
)
from aivonx.proxy import fanout, listing
from aivonx.proxy.types import ACTIVE, NodeSpec
from aivonx.runtime import Runtime

blp = Blueprint("operations", __name__, url_prefix="/api/proxy", description="Runtime state and operations")

NDJSON = "application/x-ndjson"
# Management requests carry the operator's JWT: nothing of theirs is passed on to the nodes.
NODE_HEADERS = {"Content-Type": "application/json"}
RETRY_AFTER = {"Retry-After": "5"}


@blp.route("/state")
class ProxyState(MethodView):
    @authorized(blp)
    @blp.response(200, StateSchema)
    def get(self) -> dict[str, Any]:
        """Strategy, pools, every node, and which nodes have (and serve) each model."""
        rt = proxy_runtime()
        views = node_views(store.list_nodes(), rt)
        manager = rt.manager
        return {
            "strategy": manager.settings.strategy,
            "pools": {pool: [{"id": v["id"], "name": v["name"]} for v in views if v["pool"] == pool] for pool in POOLS},
            "nodes": views,
            "models": [
                {
                    "model": model,
                    "nodes": [node.name for node in holders],
                    "active_nodes": [node.name for node in holders if manager.pool_of(node) == ACTIVE],
                }
                for model, holders in sorted(manager.known_models().items())
            ],
        }


@blp.route("/active-requests")
class ActiveRequests(MethodView):
    @authorized(blp)
    @blp.arguments(ActiveRequestsQuerySchema, location="query", as_kwargs=True)
    @blp.response(200, ActiveRequestsSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    def get(self, node_id: int | None = None) -> dict[str, Any]:
        """Requests in flight per node (across every worker and instance when Redis is configured)."""
        rows = store.list_nodes() if node_id is None else [node_or_404(node_id)]
        counts = proxy_runtime().manager.state.active_counts(row.id for row in rows)
        return {
            "total": sum(counts.values()),
            "nodes": [{"node_id": row.id, "name": row.name, "active": counts[row.id]} for row in rows],
        }


def pull_targets(rt: Runtime, node_id: int | None) -> list[NodeSpec]:
    if node_id is not None:
        node = store.node_spec(node_or_404(node_id))
        if rt.manager.pool_of(node) != ACTIVE:
            abort(503, message=f"node '{node.name}' is not active", headers=RETRY_AFTER)
        return [node]
    nodes = rt.manager.active_nodes()
    if not nodes:
        abort(503, message="no active node", headers=RETRY_AFTER)
    return nodes


@blp.route("/pull")
class Pull(MethodView):
    @authorized(blp, ADMIN)
    @blp.arguments(PullSchema)
    @blp.response(
        200,
        PullProgressSchema,
        content_type=NDJSON,
        description="NDJSON: one progress object per line, each with the `node` it is from, "
        'as the nodes send them; the last line is `{"status": "success"}` or `{"error": "..."}`.',
    )
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def post(self, pull: dict[str, Any]) -> Response:
        """Pull a model onto every active node (or one), streaming each node's progress.

        A node that finished can serve the model at once.
        """
        rt = proxy_runtime()
        model = pull["model"]
        stream = fanout.merged_progress(
            rt.upstream,
            pull_targets(rt, pull.get("node_id")),
            "/api/pull",
            body=json.dumps({"model": model, "stream": True}).encode(),
            headers=NODE_HEADERS,
            timeout=rt.manager.settings.node_timeout,
            on_success=lambda node: listing.refresh_models(rt.manager, rt.upstream, [node]),
            what=f"pull of '{model}'",
            tag_nodes=True,
        )
        response = Response(stream, mimetype=NDJSON)
        response.headers["X-Accel-Buffering"] = "no"
        return response


@blp.route(
    "/models/<path:model>",
    parameters=[
        {
            "in": "path",
            "name": "model",
            "description": "Model name; it may contain slashes",
            "schema": {"type": "string", "pattern": MODEL_PATTERN, "maxLength": MODEL_NAME_MAX},
            "example": "llama3:latest",
        }
    ],
)
class ModelByName(MethodView):
    @authorized(blp, ADMIN)
    @blp.response(200, ModelDeletionSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def delete(self, model: str) -> dict[str, Any]:
        """Delete a model from every active node that has it.

        Nodes that failed are listed in `failed`; standby nodes keep their copy.
        """
        rt = proxy_runtime()
        if not rt.manager.holders(model):
            abort(404, message=f"model '{model}' not found", errors={"model": ["no node has this model"]})
        active = rt.manager.active_holders(model)
        if not active:
            abort(503, message=f"no active node has model '{model}'", headers=RETRY_AFTER)
        outcomes = fanout.call_all(
            rt.upstream, active, "DELETE", "/api/delete",
            body=json.dumps({"model": model}).encode(), headers=NODE_HEADERS, timeout=rt.manager.settings.node_timeout,
        )  # fmt: skip
        for outcome in outcomes:
            if outcome.ok or outcome.status == 404:  # either way it is not there any more
                rt.manager.forget_model(outcome.node, model)
        deleted = [outcome.node.name for outcome in outcomes if outcome.ok]
        failed = {
            outcome.node.name: outcome.error or "" for outcome in outcomes if not outcome.ok and outcome.status != 404
        }
        if not deleted and not failed:
            abort(404, message=f"model '{model}' not found", errors={"model": ["no node has this model"]})
        return {"model": model, "deleted_from": deleted, "failed": failed}
