"""Which nodes are due for a probe, and what a probe result does to their status."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from aivonx.health.probe import ProbeResult, probe_node
from aivonx.proxy.manager import ProxyManager, ejected
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
        if status.healthy:
            due_at = status.checked_at + settings.health_interval
        else:
            # An ejected node is not probed before its ejection ends.
            due_at = max(status.checked_at + settings.standby_interval, status.ejected_until or 0.0)
        if now + slack >= due_at:
            due.append(node)
    return due


def apply_probe(
    manager: ProxyManager, node: NodeSpec, result: ProbeResult, now: float, *, readmit: bool = False
) -> NodeStatus:
    """Record a probe. A passing probe readmits a standby node unless its ejection lasts
    longer (`readmit`: an operator asked, so it ends the ejection); a failing one ejects an
    active node (the same doubling backoff as requests)."""
    previous = manager.status(node.id)
    settings = manager.settings
    seconds = 0.0
    if result.ok:
        still_ejected = not readmit and not previous.healthy and (previous.ejected_until or 0.0) > now
        healthy_since = previous.healthy_since if previous.healthy else now
        # Steady for as long as the longest ejection: earlier ejections are forgiven.
        steady = healthy_since is not None and now - healthy_since >= settings.ejection_max
        status = replace(
            previous,
            healthy=not still_ejected,
            latency_ms=result.latency_ms,
            version=result.version,
            models=result.models,
            loaded=result.loaded,
            last_error=previous.last_error if still_ejected else None,
            checked_at=now,
            models_at=now,
            changed_at=now,
            failures=0,
            ejections=0 if steady else previous.ejections,
            healthy_since=None if still_ejected else healthy_since,
        )
    elif previous.healthy:
        status, seconds = ejected(previous, settings, result.error or "probe failed", now)
        # Keep the model list: a model on a standby node answers 503, not 404.
        status = replace(status, checked_at=now, loaded=())
    else:
        status = replace(previous, last_error=result.error, checked_at=now, loaded=(), changed_at=now)
    events = manager.events
    events.publish("probe_finished", node, result.ok, (result.latency_ms or 0.0) / 1000)
    if status.healthy and not previous.healthy:
        events.publish("node_readmitted", node)
    elif previous.healthy and not status.healthy:
        events.publish("node_ejected", node, result.error or "probe failed", seconds)
    if status.healthy != previous.healthy and previous.checked_at is not None:
        log.info(
            "node %s moved to %s%s",
            node.name,
            "active" if status.healthy else "standby",
            f": {result.error}" if result.error else "",
        )
    manager.state.put_status(status)
    return status


def check_nodes(
    manager: ProxyManager, upstream: Upstream, nodes: Iterable[NodeSpec], *, readmit: bool = False
) -> dict[int, NodeStatus]:
    """Probe the nodes concurrently and record the results (`readmit`: see apply_probe)."""
    nodes = list(nodes)
    if not nodes:
        return {}
    timeout = manager.settings.probe_timeout
    started = time.time()  # a check counts from when it began, so intervals do not drift
    with ThreadPoolExecutor(max_workers=min(len(nodes), 32), thread_name_prefix="aivonx-probe") as pool:
        results = list(pool.map(lambda node: probe_node(upstream, node.base_url, timeout), nodes))
    return {
        node.id: apply_probe(manager, node, result, started, readmit=readmit)
        for node, result in zip(nodes, results, strict=True)
    }


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
