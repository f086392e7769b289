"""The Ollama API and the OpenAI-compatible `/v1` API, as one Ollama server would serve them."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from flask import Blueprint, Response, current_app, g, request

from aivonx.errors import handle_proxy_error
from aivonx.proxy import fanout, listing
from aivonx.proxy.errors import BadRequest, ModelNotFound, NoHealthyNode, Unauthorized
from aivonx.proxy.forward import Exchange, ndjson_error, relay, sse_error
from aivonx.proxy.manager import ProxyManager
from aivonx.proxy.names import normalize_model
from aivonx.proxy.requestlog import RequestRecord, emit
from aivonx.proxy.types import ACTIVE, NodeSpec
from aivonx.proxy.upstream import request_headers, response_headers
from aivonx.runtime import Runtime, get_runtime

bp = Blueprint("ollama", __name__)

NDJSON = "application/x-ndjson"
# Ollama reports its own version here and clients compare it; with no node known yet we
# still answer a valid semver.
FALLBACK_OLLAMA_VERSION = "0.0.0"


def runtime() -> Runtime:
    rt = get_runtime(current_app)
    rt.ensure_loaded()
    return rt


# Fields the proxy reads itself (or that decide how the answer is framed) are checked here,
# as Ollama would; everything else is the node's to judge.
CHECKED_FIELDS: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("stream", bool, "true or false"),
    ("messages", list, "an array"),
    ("options", dict, "an object"),
)


def json_body(model_fields: Sequence[str] = ("model",), *, model_required: bool = True) -> tuple[bytes, dict, str]:
    """The raw body (forwarded untouched), its parsed form, and the model it names."""
    body = request.get_data(cache=False)
    if not body or body.isspace():
        raise BadRequest("missing request body")
    try:
        # Decoded first: json.loads(bytes) would also take UTF-16/32 and encoded surrogates.
        payload = json.loads(body.decode("utf-8"))
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise BadRequest(f"invalid JSON body: {exc}") from None
    except RecursionError:
        raise BadRequest("invalid JSON body: nested too deeply") from None
    if not isinstance(payload, dict):
        raise BadRequest("request body must be a JSON object")
    for field, kind, noun in CHECKED_FIELDS:
        value = payload.get(field)
        if value is not None and not isinstance(value, kind):
            raise BadRequest(f"{field} must be {noun}")
    model = next((payload[f] for f in model_fields if payload.get(f) not in (None, "")), None)
    if model is None and model_required:
        raise BadRequest("model is required")
    if model is not None and not isinstance(model, str):
        raise BadRequest("model must be a string")
    model = (model or "").strip()
    g.request_record.model = model or None
    return body, payload, model


def forwarded_headers(manager: ProxyManager) -> dict[str, str]:
    headers = request_headers(request.headers, forward_authorization=manager.settings.forward_authorization)
    headers["X-Request-ID"] = g.request_id  # the node's logs and ours name the request alike
    return headers


def exchange_response(exchange: Exchange, error_chunk: Callable[[str], bytes]) -> Response:
    upstream = exchange.response
    headers = response_headers(upstream.headers)
    if exchange.buffered:
        return Response(exchange.first, status=upstream.status_code, headers=headers)
    response = Response(relay(exchange, error_chunk), status=upstream.status_code, headers=headers)
    response.headers["X-Accel-Buffering"] = "no"
    # If the client leaves before the body starts, the generator never runs its finally.
    response.call_on_close(exchange.close)
    return response


def routed(model_fields: Sequence[str] = ("model",), error_chunk: Callable[[str], bytes] = ndjson_error) -> Response:
    """Send the request to one node that has the model, failing over before the first byte."""
    body, _, model = json_body(model_fields)
    rt = runtime()
    exchange = rt.forwarder.open(
        request.method, request.path, model, body, forwarded_headers(rt.manager), record=g.request_record
    )
    return exchange_response(exchange, error_chunk)


def streaming_requested(payload: dict[str, Any]) -> bool:
    return payload.get("stream") is not False  # absent means streaming, as in Ollama


def progress_response(
    rt: Runtime, nodes: list[NodeSpec], body: bytes, payload: dict, what: str, on_success: Callable[[NodeSpec], None]
) -> Response:
    refusals: list[int] = []
    stream = fanout.merged_progress(
        rt.upstream,
        nodes,
        request.path,
        body=body,
        headers=forwarded_headers(rt.manager),
        timeout=rt.manager.settings.node_timeout,
        on_success=on_success,
        what=what,
        refusals=refusals,
    )
    if streaming_requested(payload):
        response = Response(stream, mimetype=NDJSON)
        response.headers["X-Accel-Buffering"] = "no"
        return response
    *_, last = stream  # without streaming only the final line matters
    if "error" not in json.loads(last):
        status = 200
    elif len(refusals) == len(nodes):
        status = min(refusals)  # every node refused the request itself: the client's error
    else:
        status = 502
    return Response(last, status=status, mimetype="application/json")


def active_nodes(rt: Runtime) -> list[NodeSpec]:
    nodes = rt.manager.active_nodes()
    if not nodes:
        raise NoHealthyNode("no healthy node", retry_after=5)
    return nodes


def send_to(rt: Runtime, nodes: list[NodeSpec], path: str, body: Any = None) -> list[fanout.NodeOutcome]:
    """The request's method and `body` to each node (concurrently), whole answers back."""
    return fanout.call_all(
        rt.upstream, nodes, request.method, path,
        body=body, headers=forwarded_headers(rt.manager), timeout=rt.manager.settings.node_timeout,
    )  # fmt: skip


def outcome_response(outcomes: list[fanout.NodeOutcome]) -> Response:
    """Success when every node succeeded; else the first failure, as the node said it."""
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if not failed:
        first = outcomes[0]
        return Response(first.body, status=first.status, mimetype="application/json")
    summary = "; ".join(f"{o.node.name}: {o.error}" for o in failed)
    statuses = {o.status for o in failed}
    status = statuses.pop() if len(statuses) == 1 and None not in statuses else 502
    return Response(json.dumps({"error": summary}), status=status, mimetype="application/json")


# -- the request log ---------------------------------------------------------------------


@bp.before_request
def start_request_record() -> None:
    g.request_record = RequestRecord(
        request_id=g.request_id, method=request.method, route=request.path, client=request.remote_addr
    )


@bp.after_request
def finish_request_record(response: Response) -> Response:
    """Log the request when its response is closed: after the last byte, or the client left."""
    record: RequestRecord = g.request_record
    record.status = response.status_code
    events = runtime().manager.events
    response.call_on_close(lambda: emit(record, events))
    return response


# -- API keys ----------------------------------------------------------------------------

# `GET /` and `HEAD /` stay open with require_api_key on: load balancers and uptime checks
# use them as a liveness answer and they reveal nothing. CORS preflights carry no credentials.
OPEN_PATHS = frozenset({"/"})


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


@bp.before_request
def require_api_key() -> None:
    """With require_api_key on, every other route needs `Authorization: Bearer <API key>`."""
    if request.path in OPEN_PATHS or request.method == "OPTIONS":
        return
    rt = runtime()
    if not rt.manager.settings.require_api_key:
        return
    key = bearer_token(request.headers.get("Authorization"))
    if key is None:
        raise Unauthorized("unauthorized: an API key is required (send Authorization: Bearer <key>)")
    if not rt.api_keys.use(key):
        raise Unauthorized("unauthorized: invalid or revoked API key")


@bp.errorhandler(Unauthorized)
def unauthorized(error: Unauthorized) -> Response:
    response = handle_proxy_error(error)  # Ollama's or OpenAI's shape, by route
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


# -- routes ------------------------------------------------------------------------------


@bp.route("/", methods=["GET", "HEAD"])
def root() -> Response:
    return Response("Ollama is running", mimetype="text/plain")


@bp.route("/api/version", methods=["GET", "HEAD"])
def version() -> dict[str, str]:
    """The oldest version among healthy nodes: what every request can rely on."""
    rt = runtime()
    versions = [rt.manager.status(node.id).version for node in rt.manager.active_nodes()]
    known = [v for v in versions if v]
    if not known:
        return {"version": FALLBACK_OLLAMA_VERSION}
    return {"version": min(known, key=_version_key)}


def _version_key(text: str) -> tuple[int, ...]:
    parts = []
    for part in text.lstrip("v").split("-")[0].split(".")[:3]:
        parts.append(int(part) if part.isdigit() else 0)
    return tuple(parts)


@bp.post("/api/generate")
@bp.post("/api/chat")
@bp.post("/api/embed")
@bp.post("/api/embeddings")
def inference() -> Response:
    return routed()


@bp.post("/api/show")
@bp.post("/api/push")
def model_routed() -> Response:
    return routed(("model", "name"))


@bp.post("/v1/chat/completions")
@bp.post("/v1/completions")
@bp.post("/v1/embeddings")
def openai_inference() -> Response:
    return routed(error_chunk=sse_error)


@bp.get("/api/tags")
def tags() -> dict[str, Any]:
    rt = runtime()
    listing.refresh_stale(rt.manager, rt.upstream)
    return {"models": listing.merged_tags(rt.manager)}


@bp.get("/api/ps")
def ps() -> dict[str, Any]:
    rt = runtime()
    listing.refresh_stale(rt.manager, rt.upstream)
    return {"models": listing.merged_ps(rt.manager)}


@bp.get("/v1/models")
def openai_models() -> dict[str, Any]:
    rt = runtime()
    listing.refresh_stale(rt.manager, rt.upstream)
    return {"object": "list", "data": [listing.openai_model(entry) for entry in listing.merged_tags(rt.manager)]}


@bp.get("/v1/models/<path:model>")
def openai_model(model: str) -> dict[str, Any]:
    rt = runtime()
    listing.refresh_stale(rt.manager, rt.upstream)
    key = normalize_model(model)
    for entry in listing.merged_tags(rt.manager):
        if listing.model_key(entry) == key:
            return listing.openai_model(entry)
    raise ModelNotFound(model)


def _pull_targets(rt: Runtime, payload: dict[str, Any]) -> list[NodeSpec]:
    """All active nodes, or the one named by the request's optional `node` field."""
    ref = payload.get("node")
    if ref is None:
        return active_nodes(rt)
    ref = str(ref)
    for node in rt.manager.nodes:
        if ref in (str(node.id), node.name, node.base_url):
            if rt.manager.pool_of(node) != ACTIVE:
                raise NoHealthyNode(f"node '{node.name}' is not active", retry_after=5)
            return [node]
    raise BadRequest(f"unknown node '{ref}'")


@bp.post("/api/pull")
def pull() -> Response:
    body, payload, model = json_body(("model", "name"))
    rt = runtime()
    nodes = _pull_targets(rt, payload)
    return progress_response(rt, nodes, body, payload, f"pull of '{model}'", _refresher(rt))


@bp.post("/api/create")
def create() -> Response:
    body, payload, model = json_body(("model", "name"))
    rt = runtime()
    base = payload.get("from")
    # Built on a model the pool has: only where that model is. From blobs or a registry: everywhere.
    based_on_pool_model = isinstance(base, str) and bool(rt.manager.holders(base))
    nodes = rt.manager.require_active_holders(base) if based_on_pool_model else active_nodes(rt)
    return progress_response(rt, nodes, body, payload, f"create of '{model}'", _refresher(rt))


def _refresher(rt: Runtime) -> Callable[[NodeSpec], None]:
    return lambda node: listing.refresh_models(rt.manager, rt.upstream, [node])


@bp.post("/api/copy")
def copy() -> Response:
    body, payload, source = json_body(("source",))
    destination = payload.get("destination")
    if not isinstance(destination, str) or not destination.strip():
        raise BadRequest("destination is required")
    rt = runtime()
    nodes = rt.manager.require_active_holders(source)
    outcomes = send_to(rt, nodes, "/api/copy", body)
    listing.refresh_models(rt.manager, rt.upstream, [o.node for o in outcomes if o.ok])
    return outcome_response(outcomes)


@bp.delete("/api/delete")
def delete() -> Response:
    body, _, model = json_body(("model", "name"))
    rt = runtime()
    nodes = rt.manager.require_active_holders(model)
    outcomes = send_to(rt, nodes, "/api/delete", body)
    for outcome in outcomes:
        if outcome.ok or outcome.status == 404:
            rt.manager.forget_model(outcome.node, model)
    if any(outcome.ok for outcome in outcomes):
        return Response(status=200)
    return outcome_response(outcomes)


@bp.route("/api/blobs/<digest>", methods=["HEAD"])
def blob_exists(digest: str) -> Response:
    rt = runtime()
    outcomes = send_to(rt, active_nodes(rt), f"/api/blobs/{digest}")
    # Present only when every node that may run `create` has it; otherwise the client uploads.
    return Response(status=200 if all(o.ok for o in outcomes) else 404)


@bp.post("/api/blobs/<digest>")
def blob_upload(digest: str) -> Response:
    # Blobs are model weights: no body size limit here, and never held in memory.
    request.max_content_length = None
    rt = runtime()
    nodes = active_nodes(rt)
    with tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024) as spool:
        while chunk := request.stream.read(1024 * 1024):
            spool.write(chunk)
        outcomes = []
        for node in nodes:
            spool.seek(0)
            outcomes.extend(send_to(rt, [node], f"/api/blobs/{digest}", spool))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        return outcome_response(failed)
    return Response(status=201)
