"""How to pick one node among the candidates for a request.

Each strategy gets the candidates (already filtered to healthy nodes that have the model,
not full, best priority tier), their active-request counts and their statuses.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence

from aivonx.proxy.types import NodeSpec, NodeStatus

Strategy = Callable[[Sequence[NodeSpec], Mapping[int, int], Mapping[int, NodeStatus]], NodeSpec]

# One turn counter per process: spreads ties evenly instead of always taking the first.
_turn = itertools.count()


def next_turn() -> int:
    return next(_turn)


def _take_turn(nodes: Sequence[NodeSpec]) -> NodeSpec:
    if len(nodes) == 1:
        return nodes[0]
    return nodes[next(_turn) % len(nodes)]


def pick_least_active(candidates: Sequence[NodeSpec], counts: Mapping[int, int], turn: int) -> NodeSpec | None:
    """The whole least_active decision in one pass: among nodes below their concurrency
    limit, the best (lowest) priority tier, then the fewest active requests per unit of
    weight; ties go by `turn`. None when every candidate is full.

    RedisState runs the same decision as a Lua script (state.PICK_LEAST_ACTIVE), so that
    reading the counts and counting the request are one atomic step and one round trip.
    """
    best: tuple[int, float] | None = None
    tied: list[NodeSpec] = []
    for node in candidates:
        active = counts.get(node.id, 0)
        if node.max_concurrent and active >= node.max_concurrent:
            continue
        rank = (node.priority, active / (node.weight if node.weight > 1 else 1))
        if best is None or rank < best:
            best, tied = rank, [node]
        elif rank == best:
            tied.append(node)
    if not tied:
        return None
    return tied[turn % len(tied)]


def least_active(
    candidates: Sequence[NodeSpec], counts: Mapping[int, int], statuses: Mapping[int, NodeStatus]
) -> NodeSpec:
    """Fewest active requests per unit of weight; ties take turns."""
    node = pick_least_active(candidates, counts, next(_turn))
    assert node is not None, "least_active needs a candidate"  # candidates are never empty, nor full
    return node


def lowest_latency(
    candidates: Sequence[NodeSpec], counts: Mapping[int, int], statuses: Mapping[int, NodeStatus]
) -> NodeSpec:
    """Lowest measured probe latency; ties (or unknown latencies) fall back to least_active."""

    def latency(node: NodeSpec) -> float:
        status = statuses.get(node.id)
        return status.latency_ms if status and status.latency_ms is not None else math.inf

    lowest = min(latency(node) for node in candidates)
    return least_active([node for node in candidates if latency(node) == lowest], counts, statuses)


def round_robin(
    candidates: Sequence[NodeSpec], counts: Mapping[int, int], statuses: Mapping[int, NodeStatus]
) -> NodeSpec:
    return _take_turn(candidates)


STRATEGIES: dict[str, Strategy] = {
    "least_active": least_active,
    "lowest_latency": lowest_latency,
    "round_robin": round_robin,
}
