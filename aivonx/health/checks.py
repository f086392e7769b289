"""Which nodes are due for a probe, and what a probe result does to their status."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from aivonx.health.probe import ProbeResult, probe_node
from aivonx.proxy.manager import ProxyManager
from aivonx.proxy.types import NodeSpec, NodeStatus
from aivonx.proxy.upstream import Upstream

log = logging.getLogger(__name__)


def due_nodes(manager: ProxyManager, now: float, slack: float = 0.0) -> list[NodeSpec]:
    """Enabled nodes whose last check is older than their pool's interval (new ones at once).

    `slack` lets a scheduler tick take a node that falls due before the next tick, so
    the interval is kept instead of rounded up to a whole extra tick.
    """
    settings = manager.settings
    statuses = manager.state.statuses()
    due = []
    for node in manager.nodes:
        if not node.enabled:
            continue
        status = statuses.get(node.id)
        if status is None or status.checked_at is None:
            due.append(node)
            continue
        interval = settings.health_interval if status.healthy else settings.standby_interval
        if now + slack - status.checked_at >= interval:
            due.append(node)
    return due


def apply_probe(manager: ProxyManager, node: NodeSpec, result: ProbeResult, now: float) -> NodeStatus:
    previous = manager.status(node.id)
    if result.ok:
        status = replace(
            previous,
            healthy=True,
            latency_ms=result.latency_ms,
            version=result.version,
            models=result.models,
            loaded=result.loaded,
            last_error=None,
            checked_at=now,
            models_at=now,
            changed_at=now,
        )
    else:
        # Keep the model list: a model on a standby node answers 503, not 404.
        status = replace(previous, healthy=False, last_error=result.error, checked_at=now, loaded=(), changed_at=now)
    if status.healthy != previous.healthy and previous.checked_at is not None:
        log.info(
            "node %s moved to %s%s",
            node.name,
            "active" if status.healthy else "standby",
            f": {result.error}" if result.error else "",
        )
    manager.state.put_status(status)
    return status


def check_nodes(manager: ProxyManager, upstream: Upstream, nodes: Iterable[NodeSpec]) -> dict[int, NodeStatus]:
    """Probe the nodes concurrently and record the results."""
    nodes = list(nodes)
    if not nodes:
        return {}
    timeout = manager.settings.probe_timeout
    started = time.time()  # a check counts from when it began, so intervals do not drift
    with ThreadPoolExecutor(max_workers=min(len(nodes), 32), thread_name_prefix="aivonx-probe") as pool:
        results = list(pool.map(lambda node: probe_node(upstream, node.base_url, timeout), nodes))
    return {node.id: apply_probe(manager, node, result, started) for node, result in zip(nodes, results, strict=True)}


def health_tick(manager: ProxyManager, upstream: Upstream, tick: float = 1.0) -> int:
    """One scheduler tick: probe what is due, under the cluster-wide lock. Returns probes made."""
    slack = tick / 2
    if not due_nodes(manager, time.time(), slack):
        return 0
    lock_ttl = 3 * manager.settings.probe_timeout + 10  # longer than the slowest possible run
    with manager.state.exclusive("health", lock_ttl) as acquired:
        if not acquired:
            return 0
        # Another process may have just probed: decide again on the shared statuses.
        manager.state.refresh()
        due = due_nodes(manager, time.time(), slack)
        check_nodes(manager, upstream, due)
        return len(due)
