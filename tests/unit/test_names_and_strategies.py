from aivonx.proxy.names import normalize_model
from aivonx.proxy.strategies import least_active, lowest_latency, round_robin
from aivonx.proxy.types import NodeSpec, NodeStatus

A, B, C = NodeSpec(1, "a", "http://a"), NodeSpec(2, "b", "http://b"), NodeSpec(3, "c", "http://c", weight=4)


def test_model_names_compare_as_ollama_does():
    assert normalize_model("llama3") == "llama3:latest"
    assert normalize_model("Llama3:Latest") == "llama3:latest"
    assert normalize_model("llama3:8b") == "llama3:8b"
    assert normalize_model("library/llama3") == "library/llama3:latest"
    assert normalize_model("registry.local:5000/team/model") == "registry.local:5000/team/model:latest"
    assert normalize_model("registry.local:5000/team/model:q4") == "registry.local:5000/team/model:q4"


def test_least_active_takes_fewest_requests_per_weight():
    assert least_active([A, B], {1: 3, 2: 1}, {}) is B
    # c has weight 4: 6 active requests are a load of 1.5, less than a's 2.
    assert least_active([A, C], {1: 2, 3: 6}, {}) is C


def test_least_active_ties_take_turns():
    picks = {least_active([A, B], {1: 0, 2: 0}, {}).id for _ in range(4)}
    assert picks == {1, 2}


def test_lowest_latency_prefers_fast_node_and_breaks_ties_by_load():
    statuses = {1: NodeStatus(1, True, latency_ms=30.0), 2: NodeStatus(2, True, latency_ms=5.0)}
    assert lowest_latency([A, B], {1: 0, 2: 9}, statuses) is B
    same = {1: NodeStatus(1, True, latency_ms=5.0), 2: NodeStatus(2, True, latency_ms=5.0)}
    assert lowest_latency([A, B], {1: 4, 2: 1}, same) is B
    assert lowest_latency([A, B], {1: 0, 2: 0}, {1: NodeStatus(1, True, latency_ms=1.0)}) is A


def test_round_robin_visits_every_node():
    picks = [round_robin([A, B, C], {}, {}).id for _ in range(6)]
    assert sorted(picks) == [1, 1, 2, 2, 3, 3]
