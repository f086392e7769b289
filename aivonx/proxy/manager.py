"""Pools, the model index and acquire/release: everything routing reads, held in memory.

The manager is told about nodes and settings (`configure`) and about their health
(`state.put_status`); `acquire` never touches the database and reads Redis only for the
active-request counters.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from typing import Any

from aivonx.proxy.errors import ModelNotFound, NoHealthyNode
from aivonx.proxy.events import EventBus
from aivonx.proxy.names import normalize_model
from aivonx.proxy.state import State
from aivonx.proxy.strategies import STRATEGIES, next_turn
from aivonx.proxy.types import ACTIVE, DISABLED, STANDBY, NodeSpec, NodeStatus, ProxySettings


@dataclass(slots=True)
class Lease:
    """One acquired slot on a node; `ProxyManager.release` gives it back exactly once."""

    node: NodeSpec
    queued_s: float = 0.0  # how long the request waited in the queue for this slot
    released: bool = False


class NodesBusy(NoHealthyNode):
    """Every healthy node with the model is at its concurrency limit."""


# While queued, a request also looks again this often: a slot freed in another process is
# announced through Redis, but an announcement can be lost with a Redis outage.
QUEUE_POLL_SECONDS = 0.25


def ejection_seconds(settings: ProxySettings, ejections: int) -> float:
    """How long the `ejections`-th ejection in a row keeps a node out: doubling, capped."""
    return min(settings.ejection_base * 2 ** max(ejections - 1, 0), settings.ejection_max)


def ejected(status: NodeStatus, settings: ProxySettings, error: str, now: float) -> tuple[NodeStatus, float]:
    """The status of a node ejected now, and for how many seconds."""
    ejections = status.ejections + 1
    seconds = ejection_seconds(settings, ejections)
    status = replace(
        status,
        healthy=False,
        last_error=error,
        failures=0,
        ejections=ejections,
        ejected_until=now + seconds,
        healthy_since=None,
        failed_at=now,
        changed_at=now,
    )
    return status, seconds


def model_key(entry: dict[str, Any]) -> str:
    return normalize_model(str(entry.get("model") or entry.get("name") or ""))


class ProxyManager:
    def __init__(self, state: State, settings: ProxySettings | None = None, nodes: Iterable[NodeSpec] = ()) -> None:
        self.state = state
        self.settings = settings or ProxySettings()
        self.events = EventBus()
        self._nodes: dict[int, NodeSpec] = {}
        self._index: dict[str, tuple[int, ...]] = {}
        # Per model, the healthy nodes that have it: what every acquire starts from, built
        # with the index so that picking a node does not walk the whole fleet each time.
        self._healthy: dict[str, tuple[NodeSpec, ...]] = {}
        # Whether any node has a concurrency limit / nodes differ in priority (else skipped).
        self._limited = False
        self._tiered = False
        self._indexed: tuple[int, int] | None = None
        self._config_serial = 0
        self._lock = threading.Lock()
        # The queue: requests waiting for a slot, and a counter that moves on every freed slot.
        self._slot_freed = threading.Condition()
        self._freed_serial = 0
        self._waiting = 0
        self.configure(self.settings, nodes)

    # -- configuration -------------------------------------------------------------------

    def configure(self, settings: ProxySettings, nodes: Iterable[NodeSpec]) -> None:
        """Take a new snapshot of settings and nodes (from the database)."""
        nodes_by_id = {node.id: node for node in nodes}
        with self._lock:
            removed = set(self._nodes) - set(nodes_by_id)
            self.settings = settings
            self._nodes = nodes_by_id
            self._limited = any(node.max_concurrent for node in nodes_by_id.values())
            self._tiered = len({node.priority for node in nodes_by_id.values()}) > 1
            self._config_serial += 1
        for node_id in removed:
            self.state.forget_node(node_id)

    @property
    def nodes(self) -> list[NodeSpec]:
        return list(self._nodes.values())

    def node(self, node_id: int) -> NodeSpec | None:
        return self._nodes.get(node_id)

    def status(self, node_id: int) -> NodeStatus:
        return self.state.statuses().get(node_id) or NodeStatus(node_id=node_id, changed_at=0.0)

    def pool_of(self, node: NodeSpec) -> str:
        if not node.enabled:
            return DISABLED
        status = self.state.statuses().get(node.id)
        return ACTIVE if status is not None and status.healthy else STANDBY

    def active_nodes(self) -> list[NodeSpec]:
        return [node for node in self._nodes.values() if self.pool_of(node) == ACTIVE]

    # -- the model index -----------------------------------------------------------------

    def _current_index(self) -> dict[str, tuple[int, ...]]:
        stamp = (self.state.generation, self._config_serial)
        if stamp != self._indexed:
            index: dict[str, list[int]] = {}
            healthy: dict[str, list[NodeSpec]] = {}
            statuses = self.state.statuses()
            for node in self._nodes.values():
                status = statuses.get(node.id)
                if not node.enabled or status is None:
                    continue
                for entry in status.models:
                    key = model_key(entry)
                    ids = index.setdefault(key, [])
                    if ids and ids[-1] == node.id:
                        continue  # the node lists the model twice (`llama3` and `llama3:latest`)
                    ids.append(node.id)
                    if status.healthy:
                        healthy.setdefault(key, []).append(node)
            self._healthy = {model: tuple(nodes) for model, nodes in healthy.items()}
            self._index = {model: tuple(ids) for model, ids in index.items()}
            self._indexed = stamp
        return self._index

    def holders(self, model: str) -> list[NodeSpec]:
        """Enabled nodes that have the model, in any pool."""
        ids = self._current_index().get(normalize_model(model), ())
        return [self._nodes[node_id] for node_id in ids if node_id in self._nodes]

    def active_holders(self, model: str, exclude: Collection[int] = ()) -> list[NodeSpec]:
        """Healthy nodes that have the model, leaving out the ids in `exclude`."""
        self._current_index()
        healthy = self._healthy.get(normalize_model(model), ())
        if exclude:
            return [node for node in healthy if node.id not in exclude]
        return list(healthy)

    def require_active_holders(self, model: str, exclude: Collection[int] = ()) -> list[NodeSpec]:
        """`active_holders`, or ModelNotFound (no enabled node has it) / NoHealthyNode (none can serve)."""
        healthy = self.active_holders(model, exclude)
        if not healthy and not self.holders(model) and self.state.refresh():
            # Another process may have just learnt of the model (a pull through it):
            # one look at the shared statuses before answering 404.
            healthy = self.active_holders(model, exclude)
        if not healthy:
            if not self.holders(model):
                statuses = self.state.statuses()
                unchecked = sum(1 for n in self._nodes.values() if n.enabled and n.id not in statuses)
                if unchecked:
                    # Not "not found" yet: a node nobody has checked may have it (a worker
                    # that just started, before the first probe reached it).
                    raise NoHealthyNode(
                        f"model '{model}' is on no node checked so far; {unchecked} node(s) not checked yet",
                        retry_after=1,
                    )
                raise ModelNotFound(model)
            raise NoHealthyNode(f"no healthy node has model '{model}'", retry_after=5)
        return healthy

    def known_models(self) -> dict[str, list[NodeSpec]]:
        index = self._current_index()
        return {model: [self._nodes[i] for i in ids if i in self._nodes] for model, ids in index.items()}

    # -- acquire / release ---------------------------------------------------------------

    def acquire(self, model: str, exclude: Collection[int] = ()) -> Lease:
        """Pick a node for `model` and count the request on it.

        Raises ModelNotFound when no enabled node has the model, NoHealthyNode when nodes
        have it but none is active and untried. When every candidate is at its concurrency
        limit, the request waits in the queue (bounded in length and time) for a slot.
        """
        try:
            return self._acquire_now(model, exclude)
        except NodesBusy as busy:
            if self.settings.queue_size <= 0:
                raise
            return self._wait_for_slot(model, exclude, busy)

    def _acquire_now(self, model: str, exclude: Collection[int]) -> Lease:
        healthy = self.require_active_holders(model, exclude)
        if self.settings.strategy not in STRATEGIES or self.settings.strategy == "least_active":
            # The default: the state picks and counts in one step (one Redis round trip).
            node = self.state.incr_least_active(healthy, next_turn())
            if node is None:
                raise NodesBusy(f"every node with model '{model}' is busy", retry_after=1)
            return Lease(node=node)
        choose = STRATEGIES[self.settings.strategy]
        # A lone candidate without a limit needs no counts (a Redis round trip saved).
        if len(healthy) == 1 and not healthy[0].max_concurrent:
            counts = {healthy[0].id: 0}
        else:
            counts = self.state.active_counts(node.id for node in healthy)
        if self._limited:
            free = [n for n in healthy if not n.max_concurrent or counts[n.id] < n.max_concurrent]
        else:
            free = healthy
        while free:
            if self._tiered:
                best = min(node.priority for node in free)
                tier = [node for node in free if node.priority == best]
            else:
                tier = free
            node = choose(tier, counts, self.state.statuses())
            # The count may have moved since it was read; the increment checks the limit again.
            if self.state.incr(node.id, node.max_concurrent):
                return Lease(node=node)
            free.remove(node)
        raise NodesBusy(f"every node with model '{model}' is busy", retry_after=1)

    def _wait_for_slot(self, model: str, exclude: Collection[int], busy: NodesBusy) -> Lease:
        settings = self.settings
        with self._slot_freed:
            if self._waiting >= settings.queue_size:
                self.events.publish("request_queued", model, 0.0, "full")
                raise NoHealthyNode(
                    f"every node with model '{model}' is busy and the queue is full", retry_after=1
                ) from busy
            self._waiting += 1
        self.state.watch_slots(self.slot_freed)
        started = time.monotonic()
        deadline = started + settings.queue_timeout
        try:
            while True:
                with self._slot_freed:
                    seen = self._freed_serial
                try:
                    lease = self._acquire_now(model, exclude)
                except NodesBusy:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    with self._slot_freed:
                        if self._freed_serial == seen:  # else a slot came free meanwhile
                            self._slot_freed.wait(min(remaining, QUEUE_POLL_SECONDS))
                    continue
                lease.queued_s = time.monotonic() - started
                self.events.publish("request_queued", model, lease.queued_s, "served")
                return lease
        finally:
            with self._slot_freed:
                self._waiting -= 1
        waited = time.monotonic() - started
        self.events.publish("request_queued", model, waited, "timeout")
        raise NoHealthyNode(
            f"every node with model '{model}' stayed busy for {settings.queue_timeout:g}s", retry_after=1
        ) from busy

    @property
    def queue_length(self) -> int:
        """Requests of this process waiting for a slot now."""
        return self._waiting

    def slot_freed(self) -> None:
        """A slot came free (here, or in another process as Redis announced): wake the queue."""
        with self._slot_freed:
            self._freed_serial += 1
            self._slot_freed.notify_all()

    def release(self, lease: Lease) -> None:
        with self._lock:
            if lease.released:
                return
            lease.released = True
        node = lease.node
        self.state.decr(node.id, announce=node.max_concurrent > 0)
        if self._waiting:
            self.slot_freed()

    # -- what requests learn -------------------------------------------------------------

    def mark_failed(self, node: NodeSpec, error: str, *, model: str | None = None, answered: bool = False) -> bool:
        """Passive health check: count a failure; `eject_after` in a row eject the node.

        An ejected node is in standby for a time that doubles with each ejection (up to
        `ejection_max`) and comes back with the first passing probe after that.
        `answered` means the node replied (a 5xx): it is then kept when it is the last
        healthy node for the model, since one bad answer is weaker evidence than silence.
        Returns whether the node was ejected.
        """
        status = self.status(node.id)
        if not status.healthy:
            return False
        now = time.time()
        failures = status.failures + 1
        if failures < self.settings.eject_after or (
            answered and model is not None and not self.active_holders(model, exclude=(node.id,))
        ):
            self.state.put_status(replace(status, failures=failures, last_error=error, changed_at=now))
            return False
        status, seconds = ejected(status, self.settings, error, now)
        self.state.put_status(status)
        self.events.publish("node_ejected", node, error, seconds)
        return True

    def mark_succeeded(self, node: NodeSpec) -> None:
        """A request went through: failures no longer count as "in a row" (written only if any)."""
        status = self.state.statuses().get(node.id)
        if status is not None and status.failures:
            self.state.put_status(replace(status, failures=0, changed_at=time.time()))

    def forget_model(self, node: NodeSpec, model: str) -> None:
        """The node said it does not have `model`: stop routing it there."""
        status = self.status(node.id)
        key = normalize_model(model)
        kept = tuple(entry for entry in status.models if model_key(entry) != key)
        if len(kept) != len(status.models):
            self.state.put_status(replace(status, models=kept, changed_at=time.time()))

    def set_models(
        self, node: NodeSpec, models: Iterable[dict[str, Any]], loaded: Iterable[dict[str, Any]] | None = None
    ) -> None:
        status = self.status(node.id)
        now = time.time()
        self.state.put_status(
            replace(
                status,
                models=tuple(models),
                loaded=status.loaded if loaded is None else tuple(loaded),
                models_at=now,
                changed_at=now,
            )
        )
