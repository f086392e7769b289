"""Forwarder and probe logic with `responses` standing in for nodes (no app, no sockets)."""

import pytest
import requests
import responses

from aivonx.health.checks import apply_probe, due_nodes
from aivonx.health.probe import probe_node
from aivonx.proxy.errors import NoHealthyNode, UpstreamFailed
from aivonx.proxy.forward import Forwarder, ndjson_error, relay
from aivonx.proxy.manager import ProxyManager
from aivonx.proxy.state import MemoryState
from aivonx.proxy.types import NodeSpec, NodeStatus, ProxySettings
from aivonx.proxy.upstream import Upstream, request_headers, response_headers

A = NodeSpec(1, "a", "http://a:11434")
B = NodeSpec(2, "b", "http://b:11434")
TAG = {"name": "m:latest", "model": "m:latest"}


def forwarder(*nodes, **settings):
    state = MemoryState()
    for node in nodes:
        state.put_status(NodeStatus(node.id, healthy=True, models=(TAG,), checked_at=1.0))
    manager = ProxyManager(state, ProxySettings(**settings), nodes)
    return Forwarder(manager, Upstream()), manager


def counts(manager):
    return manager.state.active_counts([1, 2])


@responses.activate
def test_connection_error_fails_over_and_marks_the_node():
    fwd, manager = forwarder(A, B, strategy="round_robin")
    responses.post("http://a:11434/api/generate", body=requests.ConnectionError("Connection refused"))
    responses.post("http://b:11434/api/generate", json={"response": "ok"})
    for _ in range(2):
        exchange = fwd.open("POST", "/api/generate", "m", b"{}", {})
        assert exchange.lease.node is B
        assert b"".join(relay(exchange, ndjson_error)) == b'{"response": "ok"}'
    assert manager.pool_of(A) == "standby"
    assert manager.status(1).last_error == "connection refused"
    assert counts(manager) == {1: 0, 2: 0}


@responses.activate
def test_5xx_fails_over_while_alternatives_exist():
    fwd, manager = forwarder(A, B, strategy="round_robin")
    responses.post("http://a:11434/api/chat", status=500, json={"error": "runner crashed"})
    responses.post("http://b:11434/api/chat", json={"done": True})
    exchanges = [fwd.open("POST", "/api/chat", "m", b"{}", {}) for _ in range(2)]
    assert all(e.lease.node is B and e.response.status_code == 200 for e in exchanges)
    assert [e.failures for e in exchanges] in (
        [["a: HTTP 500"], []],
        [[], ["a: HTTP 500"]],
    )
    for exchange in exchanges:
        exchange.close()
    assert counts(manager) == {1: 0, 2: 0}


@responses.activate
def test_404_means_a_stale_index_the_model_is_forgotten_there():
    fwd, manager = forwarder(A, B, strategy="round_robin")
    responses.post("http://a:11434/api/show", status=404, json={"error": "model not found"})
    responses.post("http://b:11434/api/show", json={"details": {}})
    for _ in range(2):
        exchange = fwd.open("POST", "/api/show", "m", b"{}", {})
        assert exchange.lease.node is B
        exchange.close()
    assert [n.id for n in manager.holders("m")] == [2]
    assert manager.pool_of(A) == "active"  # the node is fine, it just lacks the model


@responses.activate
def test_4xx_other_than_404_is_passed_through_without_retry():
    fwd, _manager = forwarder(A, B)
    responses.post("http://a:11434/api/generate", status=400, json={"error": "bad options"})
    responses.post("http://b:11434/api/generate", status=400, json={"error": "bad options"})
    exchange = fwd.open("POST", "/api/generate", "m", b"{}", {})
    assert exchange.response.status_code == 400
    assert len(responses.calls) == 1


@responses.activate
def test_tries_are_bounded_and_each_node_tried_once():
    nodes = [NodeSpec(i, f"n{i}", f"http://n{i}:1") for i in range(1, 6)]
    fwd, _manager = forwarder(*nodes, max_tries=3)
    for node in nodes:
        responses.post(node.base_url + "/api/generate", body=requests.ConnectTimeout())
    with pytest.raises(UpstreamFailed) as caught:
        fwd.open("POST", "/api/generate", "m", b"{}", {})
    assert len(responses.calls) == 3
    assert len({call.request.url for call in responses.calls}) == 3
    assert caught.value.message.count("connect timeout") == 3
    with pytest.raises(UpstreamFailed):  # the 2 nodes not tried yet
        fwd.open("POST", "/api/generate", "m", b"{}", {})
    assert len(responses.calls) == 5
    with pytest.raises(NoHealthyNode):  # all on standby now: refused without trying
        fwd.open("POST", "/api/generate", "m", b"{}", {})
    assert len(responses.calls) == 5


@responses.activate
def test_streamed_body_is_relayed_and_released_at_the_end():
    fwd, manager = forwarder(A)
    body = b'{"response":"a","done":false}\n{"response":"","done":true}\n'
    responses.post("http://a:11434/api/generate", body=body, content_type="application/x-ndjson")
    exchange = fwd.open("POST", "/api/generate", "m", b"{}", {})
    assert not exchange.buffered
    assert counts(manager)[1] == 1
    assert b"".join(relay(exchange, ndjson_error)) == body
    assert counts(manager)[1] == 0


def test_hop_by_hop_and_auth_headers_stay_at_the_proxy():
    upstream = {"Content-Type": "application/x-ndjson", "Content-Length": "9", "Connection": "keep-alive",
                "Transfer-Encoding": "chunked", "Content-Encoding": "gzip", "X-Custom": "1"}  # fmt: skip
    assert response_headers(upstream) == [("Content-Type", "application/x-ndjson"), ("X-Custom", "1")]
    incoming = {"Content-Type": "application/json", "Authorization": "Bearer k", "Cookie": "s=1", "Host": "p"}
    assert request_headers(incoming, forward_authorization=False) == {"Content-Type": "application/json"}
    assert request_headers(incoming, forward_authorization=True)["Authorization"] == "Bearer k"


@responses.activate
def test_probe_reads_version_models_and_loaded_models():
    responses.get("http://a:11434/api/version", json={"version": "0.6.5"})
    responses.get("http://a:11434/api/tags", json={"models": [TAG]})
    responses.get("http://a:11434/api/ps", json={"models": []})
    result = probe_node(Upstream(), A.base_url, timeout=1)
    assert result.ok and result.version == "0.6.5" and result.models == (TAG,) and result.latency_ms >= 0


@responses.activate
@pytest.mark.parametrize(
    ("tags", "error"),
    [({"models": [{"size": 1}]}, "malformed /api/tags answer"), ("not json", "answer is not JSON")],
)
def test_probe_rejects_malformed_answers(tags, error):
    responses.get("http://a:11434/api/version", json={"version": "0.6.5"})
    if isinstance(tags, dict):
        responses.get("http://a:11434/api/tags", json=tags)
    else:
        responses.get("http://a:11434/api/tags", body=tags)
    result = probe_node(Upstream(), A.base_url, timeout=1)
    assert not result.ok and result.error == error


@responses.activate
def test_probe_of_a_dead_node():
    responses.get("http://a:11434/api/version", body=requests.ConnectionError("Connection refused"))
    assert probe_node(Upstream(), A.base_url, timeout=1).error == "connection refused"


def test_failed_probe_keeps_models_so_the_model_answers_503_not_404():
    _, manager = forwarder(A)
    from aivonx.health.probe import ProbeResult

    apply_probe(manager, A, ProbeResult(ok=False, error="connection refused"), now=100.0)
    assert manager.pool_of(A) == "standby"
    with pytest.raises(NoHealthyNode):
        manager.acquire("m")


def test_due_nodes_follow_pool_intervals():
    _, manager = forwarder(A, B, health_interval=60, standby_interval=5)
    manager.state.put_status(NodeStatus(1, healthy=True, checked_at=100.0))
    manager.state.put_status(NodeStatus(2, healthy=False, checked_at=100.0))
    assert due_nodes(manager, 104.0) == []
    assert due_nodes(manager, 106.0) == [B]
    assert due_nodes(manager, 161.0) == [A, B]
