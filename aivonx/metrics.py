"""Prometheus metrics at `/metrics`, fed by the proxy's event bus.

Counters and histograms are updated by an observer of `manager.events` (inline, when a
response closes: a few dictionary lookups and increments). Gauges that describe the
present (active requests and pool of each node, queue length) are read from the runtime
when Prometheus scrapes, so they are exact instead of incremented and decremented.

Under gunicorn every worker is a process of its own: gunicorn.conf.py points
`PROMETHEUS_MULTIPROC_DIR` at one directory before the workers import prometheus_client,
each worker writes its counters there, and a scrape adds up all of them. Without that
variable (the werkzeug server of the tests, `flask run`) one in-process registry per app
is used.

Label values are bounded: routes are the rule templates of the app's URL map, models are
named only when a node has them, retry and ejection reasons fall into a fixed set.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from werkzeug.exceptions import HTTPException
from werkzeug.routing import MapAdapter

from aivonx.proxy.names import normalize_model
from aivonx.proxy.types import ACTIVE, DISABLED, STANDBY, NodeSpec
from aivonx.runtime import get_runtime
from aivonx.version import __version__

EXTENSION_KEY = "aivonx.metrics"
REASONS = ("connect_error", "timeout", "http_5xx", "not_found", "other")
POOLS = (ACTIVE, STANDBY, DISABLED)
OTHER_ROUTE = "other"
# LLM requests run from milliseconds (embeddings, errors) to minutes (long generations,
# model loads before the first byte).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
QUEUE_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

bp = Blueprint("metrics", __name__)


def multiprocess_dir() -> str | None:
    """The directory shared by gunicorn's workers, when gunicorn.conf.py set one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def reason_kind(reason: str) -> str:
    """Bucket a failure text (forward.describe, `HTTP 503`, a probe error) into REASONS."""
    text = reason.lower()
    if "timeout" in text or "timed out" in text or "no response within" in text:
        return "timeout"
    if "http 404" in text or "not found" in text:
        return "not_found"
    if "http 5" in text:
        return "http_5xx"
    if any(word in text for word in ("connect", "refused", "reset", "closed", "name or service", "unreachable")):
        return "connect_error"
    return "other"


class RouteNames:
    """Request path -> the route template it matched (`/api/blobs/<digest>`), or `other`.

    Paths of rules without variables are cached (a fixed set); the few variable ones
    (blobs, `/v1/models/<model>`) are matched each time.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._adapter: MapAdapter | None = None
        self._static: dict[tuple[str, str], str] = {}

    def __call__(self, method: str, path: str) -> str:
        key = (method, path)
        name = self._static.get(key)
        if name is not None:
            return name
        if self._adapter is None:
            self._adapter = self.app.url_map.bind("localhost")
        try:
            rule, _args = self._adapter.match(path, method, return_rule=True)
        except HTTPException:
            return OTHER_ROUTE
        if not rule.arguments:
            self._static[key] = rule.rule
        return rule.rule


class ProxyMetrics:
    """The metric families and the event observer that feeds them (one per app)."""

    def __init__(self, app: Flask, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.route_name = RouteNames(app)
        self.requests = Counter(
            "aivonx_requests",
            "Proxied requests by route, model, node that answered and HTTP status",
            ("route", "model", "node", "status"),
            registry=registry,
        )
        self.duration = Histogram(
            "aivonx_request_duration_seconds",
            "Time from request start until the response was closed",
            ("route", "model"),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.first_byte = Histogram(
            "aivonx_time_to_first_byte_seconds",
            "Time from request start until a node's first byte (after any retries)",
            ("route", "model"),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "aivonx_tokens_generated",
            "Tokens generated (eval_count of Ollama's final chunk)",
            ("model", "node"),
            registry=registry,
        )
        self.retries = Counter(
            "aivonx_retries",
            "Requests sent on to another node, by the node that failed and why",
            ("node", "reason"),
            registry=registry,
        )
        self.ejections = Counter(
            "aivonx_node_ejections",
            "Nodes moved out of the active pool (by a failed request or probe)",
            ("node", "reason"),
            registry=registry,
        )
        self.readmissions = Counter(
            "aivonx_node_readmissions",
            "Nodes a probe moved into the active pool (the first admission too)",
            ("node",),
            registry=registry,
        )
        self.probes = Counter(
            "aivonx_probes", "Active health checks by node and result", ("node", "result"), registry=registry
        )
        self.probe_duration = Histogram(
            "aivonx_probe_duration_seconds",
            "Latency of successful health probes (GET /api/version)",
            ("node",),
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            "aivonx_queue_wait_seconds",
            "Time requests waited for a free slot, by outcome (served, timeout, full)",
            ("outcome",),
            buckets=QUEUE_BUCKETS,
            registry=registry,
        )

    def declared(self) -> list[Metric]:
        """Name, help and type of every family above, without samples."""
        families = [value for value in vars(self).values() if isinstance(value, MetricWrapperBase)]
        return [described for family in families for described in family.describe()]

    # -- observer methods (events.EventBus calls them inline) ---------------------------

    def request_finished(self, entry: Mapping[str, Any]) -> None:
        route = self.route_name(entry.get("method") or "GET", entry.get("route") or "")
        node = entry.get("node") or ""
        model = self._model_label(entry.get("model"), node, entry.get("status"))
        self.requests.labels(route, model, node, str(entry.get("status") or "")).inc()
        duration = entry.get("duration_ms")
        if duration is not None:
            self.duration.labels(route, model).observe(duration / 1000)
        first_byte = entry.get("first_byte_ms")
        if first_byte is not None:
            self.first_byte.labels(route, model).observe(first_byte / 1000)
        tokens = entry.get("tokens")
        if tokens:
            self.tokens.labels(model, node).inc(tokens)
        for failure in entry.get("retry_reasons") or ():
            # forward.py writes "<node name>: <reason>"; reasons themselves hold no ": ".
            failed_node, _, reason = failure.rpartition(": ")
            self.retries.labels(failed_node, reason_kind(reason)).inc()

    def node_ejected(self, node: NodeSpec, reason: str, seconds: float) -> None:
        self.ejections.labels(node.name, reason_kind(reason)).inc()

    def node_readmitted(self, node: NodeSpec) -> None:
        self.readmissions.labels(node.name).inc()

    def probe_finished(self, node: NodeSpec, ok: bool, seconds: float) -> None:
        self.probes.labels(node.name, "ok" if ok else "failed").inc()
        if ok:
            self.probe_duration.labels(node.name).observe(seconds)

    def request_queued(self, model: str, seconds: float, outcome: str) -> None:
        self.queue_wait.labels(outcome).observe(seconds)

    def _model_label(self, model: Any, node: str, status: Any) -> str:
        """The model when some node has it (bounded by the nodes' lists), else empty: a
        client must not be able to mint a new time series with every made-up name."""
        if not model or not isinstance(model, str):
            return ""
        if node or status in (502, 503):  # a node answered, or nodes have it but failed/busy
            return normalize_model(model)
        return ""


class RuntimeCollector(Collector):
    """Gauges read at scrape time: pool and active requests per node, queue length.

    With Redis the pools and counters are shared, so every worker and instance reports
    the same deployment-wide values.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterable[Metric]:
        manager = get_runtime(self.app).manager
        nodes = manager.nodes
        counts = manager.state.active_counts(node.id for node in nodes)
        active = GaugeMetricFamily("aivonx_node_active_requests", "Requests in flight per node", labels=("node",))
        pool = GaugeMetricFamily(
            "aivonx_node_pool", "1 for the pool each node is in (active, standby, disabled)", labels=("node", "pool")
        )
        for node in nodes:
            active.add_metric((node.name,), counts.get(node.id, 0))
            current = manager.pool_of(node)
            for name in POOLS:
                pool.add_metric((node.name, name), 1.0 if name == current else 0.0)
        yield active
        yield pool
        yield GaugeMetricFamily(
            "aivonx_queue_length", "Requests waiting for a free slot in this worker", value=manager.queue_length
        )
        info = GaugeMetricFamily("aivonx_build_info", "aivonx version (always 1)", labels=("version",))
        info.add_metric((__version__,), 1.0)
        yield info


class WorkerFiles(Collector):
    """Every worker's files added up. A family no worker has written yet still shows (no
    samples), as it does in one process, so dashboards and alerts find every name."""

    def __init__(self, path: str, declared: list[Metric]) -> None:
        self.files = MultiProcessCollector(None, path=path)
        self.declared = declared

    def collect(self) -> Iterable[Metric]:
        seen = set()
        for metric in self.files.collect():
            seen.add(metric.name)
            yield metric
        for metric in self.declared:
            if metric.name not in seen:
                yield metric


def init_app(app: Flask) -> None:
    """Create the metrics of this app and subscribe them to the proxy's events."""
    # `_created` series double every family's series and multiprocess mode has none; the
    # switch is process-wide, and this process exists to run aivonx.
    disable_created_metrics()
    registry = CollectorRegistry(auto_describe=True)
    metrics = ProxyMetrics(app, registry)
    registry.register(RuntimeCollector(app))
    get_runtime(app).manager.events.subscribe(metrics)
    app.extensions[EXTENSION_KEY] = metrics


def scrape_registry(app: Flask) -> CollectorRegistry:
    """This process's registry, or (under gunicorn) one that adds up every worker's files."""
    metrics: ProxyMetrics = app.extensions[EXTENSION_KEY]
    path = multiprocess_dir()
    if path is None:
        return metrics.registry
    registry = CollectorRegistry()
    registry.register(WorkerFiles(path, metrics.declared()))
    registry.register(RuntimeCollector(app))
    return registry


def token_ok(expected: str | None, authorization: str | None) -> bool:
    if not expected:
        return True
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected.encode())


@bp.get("/metrics")
def scrape() -> Response:
    """Prometheus text format (or OpenMetrics when asked); `AIVONX_METRICS_TOKEN`, when set,
    must come as `Authorization: Bearer <token>`."""
    if not token_ok(current_app.config.get("AIVONX_METRICS_TOKEN"), request.headers.get("Authorization")):
        return Response(
            "metrics need Authorization: Bearer <AIVONX_METRICS_TOKEN>\n",
            401,
            {"WWW-Authenticate": 'Bearer realm="metrics"'},
            mimetype="text/plain",
        )
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(scrape_registry(current_app))
    return Response(body, 200, {"Content-Type": content_type, "Cache-Control": "no-store"})
