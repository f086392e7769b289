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
from aivonx.proxy.names import normalize_model
from aivonx.proxy.state import State
from aivonx.proxy.strategies import STRATEGIES
from aivonx.proxy.types import ACTIVE, DISABLED, STANDBY, NodeSpec, NodeStatus, ProxySettings


@dataclass(slots=True)
class Lease:
    """One acquired slot on a node; `ProxyManager.release` gives it back exactly once."""

    node: NodeSpec
    shared: bool
    released: bool = False


def model_key(entry: dict[str, Any]) -> str:
    return normalize_model(str(entry.get("model") or entry.get("name") or ""))


class ProxyManager:
    def __init__(self, state: State, settings: ProxySettings | None = None, nodes: Iterable[NodeSpec] = ()) -> None:
        self.state = state
        self.settings = settings or ProxySettings()
        self._nodes: dict[int, NodeSpec] = {}
        self._index: dict[str, tuple[int, ...]] = {}
        self._indexed: tuple[int, int] | None = None
        self._config_serial = 0
        self._lock = threading.Lock()
        self.configure(self.settings, nodes)

    # -- configuration -------------------------------------------------------------------

    def configure(self, settings: ProxySettings, nodes: Iterable[NodeSpec]) -> None:
        """Take a new snapshot of settings and nodes (from the database)."""
        nodes_by_id = {node.id: node for node in nodes}
        with self._lock:
            removed = set(self._nodes) - set(nodes_by_id)
            self.settings = settings
            self._nodes = nodes_by_id
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
            statuses = self.state.statuses()
            for node in self._nodes.values():
                status = statuses.get(node.id)
                if not node.enabled or status is None:
                    continue
                for entry in status.models:
                    index.setdefault(model_key(entry), []).append(node.id)
            self._index = {model: tuple(ids) for model, ids in index.items()}
            self._indexed = stamp
        return self._index

    def holders(self, model: str) -> list[NodeSpec]:
        """Enabled nodes that have the model, in any pool."""
        ids = self._current_index().get(normalize_model(model), ())
        return [self._nodes[node_id] for node_id in ids if node_id in self._nodes]

    def active_holders(self, model: str, exclude: Collection[int] = ()) -> list[NodeSpec]:
        """Healthy nodes that have the model, leaving out the ids in `exclude`."""
        statuses = self.state.statuses()
        return [
            node
            for node in self.holders(model)
            if node.id not in exclude and (status := statuses.get(node.id)) is not None and status.healthy
        ]

    def require_active_holders(self, model: str, exclude: Collection[int] = ()) -> list[NodeSpec]:
        """`active_holders`, or ModelNotFound (no enabled node has it) / NoHealthyNode (none can serve)."""
        healthy = self.active_holders(model, exclude)
        if not healthy:
            if not self.holders(model):
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
        have it but none is active, untried and below its concurrency limit.
        """
        healthy = self.require_active_holders(model, exclude)
        counts = self.state.active_counts(node.id for node in healthy)
        free = [n for n in healthy if not n.max_concurrent or counts[n.id] < n.max_concurrent]
        if not free:
            raise NoHealthyNode(f"every node with model '{model}' is busy", retry_after=1)
        best = min(node.priority for node in free)
        tier = [node for node in free if node.priority == best]
        choose = STRATEGIES.get(self.settings.strategy, STRATEGIES["least_active"])
        node = choose(tier, counts, self.state.statuses())
        return Lease(node=node, shared=self.state.incr(node.id))

    def release(self, lease: Lease) -> None:
        with self._lock:
            if lease.released:
                return
            lease.released = True
        self.state.decr(lease.node.id, lease.shared)

    # -- what requests learn -------------------------------------------------------------

    def mark_failed(self, node: NodeSpec, error: str, *, model: str | None = None, answered: bool = False) -> bool:
        """Passive health check: move a failing node to standby now.

        `answered` means the node replied (a 5xx): it is then kept when it is the last
        healthy node for the model, since one bad answer is weaker evidence than silence.
        Returns whether the node was moved.
        """
        status = self.status(node.id)
        if not status.healthy:
            return False
        if answered and model is not None and not self.active_holders(model, exclude=(node.id,)):
            self.state.put_status(replace(status, last_error=error, changed_at=time.time()))
            return False
        now = time.time()
        self.state.put_status(replace(status, healthy=False, last_error=error, failed_at=now, changed_at=now))
        return True

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
