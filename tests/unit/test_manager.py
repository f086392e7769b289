import pytest

from aivonx.proxy.errors import ModelNotFound, NoHealthyNode
from aivonx.proxy.manager import ProxyManager
from aivonx.proxy.state import MemoryState
from aivonx.proxy.types import ACTIVE, DISABLED, STANDBY, NodeSpec, NodeStatus, ProxySettings


def tag(name):
    return {"name": name, "model": name}


def manager_with(*nodes_and_models, **settings):
    state = MemoryState()
    nodes = []
    for node, models, healthy in nodes_and_models:
        nodes.append(node)
        state.put_status(NodeStatus(node.id, healthy=healthy, models=tuple(tag(m) for m in models), checked_at=1.0))
    return ProxyManager(state, ProxySettings(**settings), nodes)


A = NodeSpec(1, "a", "http://a")
B = NodeSpec(2, "b", "http://b")


def test_only_nodes_with_the_model_are_candidates():
    manager = manager_with((A, ["llama3:latest"], True), (B, ["mistral:latest"], True))
    for _ in range(5):
        lease = manager.acquire("llama3")
        assert lease.node is A
        manager.release(lease)


def test_unknown_model_is_404_and_standby_only_model_is_503():
    manager = manager_with((A, ["llama3:latest"], False), (B, ["mistral:latest"], True))
    with pytest.raises(ModelNotFound):
        manager.acquire("phi3")
    with pytest.raises(NoHealthyNode):
        manager.acquire("llama3:latest")


def test_disabled_node_is_neither_candidate_nor_holder():
    disabled = NodeSpec(1, "a", "http://a", enabled=False)
    manager = manager_with((disabled, ["llama3:latest"], True))
    assert manager.pool_of(disabled) == DISABLED
    with pytest.raises(ModelNotFound):
        manager.acquire("llama3")


def test_counters_are_exact_and_release_is_idempotent():
    manager = manager_with((A, ["llama3:latest"], True), (B, ["llama3:latest"], True))
    leases = [manager.acquire("llama3") for _ in range(6)]
    assert manager.state.active_counts([1, 2]) == {1: 3, 2: 3}
    for lease in leases:
        manager.release(lease)
        manager.release(lease)
    assert manager.state.active_counts([1, 2]) == {1: 0, 2: 0}


def test_better_priority_tier_serves_first_and_worse_tier_takes_over():
    backup = NodeSpec(2, "b", "http://b", priority=1)
    manager = manager_with((A, ["m:latest"], True), (backup, ["m:latest"], True))
    assert {manager.acquire("m").node.id for _ in range(4)} == {1}
    assert manager.acquire("m", exclude=[1]).node is backup


def test_full_nodes_are_skipped_and_all_full_is_503_with_retry_after():
    small = NodeSpec(1, "a", "http://a", max_concurrent=1)
    manager = manager_with((small, ["m:latest"], True))
    manager.acquire("m")
    with pytest.raises(NoHealthyNode) as caught:
        manager.acquire("m")
    assert caught.value.retry_after == 1


def test_passive_failure_moves_node_to_standby_but_a_5xx_keeps_the_last_one():
    manager = manager_with((A, ["m:latest"], True), (B, ["m:latest"], True))
    assert manager.mark_failed(A, "HTTP 500", model="m", answered=True)
    assert manager.pool_of(A) == STANDBY
    assert not manager.mark_failed(B, "HTTP 500", model="m", answered=True)
    assert manager.pool_of(B) == ACTIVE
    assert manager.mark_failed(B, "connection refused", model="m")
    assert manager.pool_of(B) == STANDBY


def test_forget_model_removes_it_from_the_index():
    manager = manager_with((A, ["m:latest", "n:latest"], True))
    manager.forget_model(A, "m")
    with pytest.raises(ModelNotFound):
        manager.acquire("m")
    manager.release(manager.acquire("n"))
