"""/api/proxy/state, /active-requests, /pull and /models/{model} against real (fake) nodes."""

import json

import pytest
import requests

from aivonx.proxy.types import ACTIVE, DISABLED, STANDBY
from tests.integration.api.helpers import assert_problem, headers_for
from tests.integration.test_failover import wait_until


@pytest.fixture
def api(proxy):
    """The proxy's test client with admin and viewer headers signed by the proxy's app."""

    class Api:
        client = proxy.app.test_client()
        admin = headers_for(proxy.app, "admin")
        viewer = headers_for(proxy.app, "viewer")

    return Api


def ndjson(response):
    return [json.loads(line) for line in response.iter_lines() if line]


def test_state_shows_strategy_pools_nodes_and_models(make_proxy, fake_nodes):
    a = fake_nodes("llama3:latest", "phi3:mini", name="node-a")
    b, c = fake_nodes(name="node-b"), fake_nodes(name="node-c")
    proxy = make_proxy(a, b, c)
    client, admin = proxy.app.test_client(), headers_for(proxy.app)
    client.post("/api/proxy/nodes/3/disable", headers=admin)
    b.stop()
    proxy.runtime.check_now()

    response = client.get("/api/proxy/state", headers=headers_for(proxy.app, "viewer"))
    assert response.status_code == 200
    state = response.get_json()
    assert state["strategy"] == "least_active"
    assert state["pools"] == {
        ACTIVE: [{"id": 1, "name": "node-a"}],
        STANDBY: [{"id": 2, "name": "node-b"}],
        DISABLED: [{"id": 3, "name": "node-c"}],
    }
    assert [(node["name"], node["pool"]) for node in state["nodes"]] == [
        ("node-a", ACTIVE),
        ("node-b", STANDBY),
        ("node-c", DISABLED),
    ]
    assert state["nodes"][0] == client.get("/api/proxy/nodes/1", headers=admin).get_json()
    # A standby node keeps its models (a request for them is 503, not 404); a disabled one has none.
    assert state["models"] == [
        {"model": "llama3:latest", "nodes": ["node-a", "node-b"], "active_nodes": ["node-a"]},
        {"model": "phi3:mini", "nodes": ["node-a"], "active_nodes": ["node-a"]},
    ]


def test_active_requests_count_a_stream_in_flight_and_return_to_zero(make_proxy, fake_nodes):
    slow = fake_nodes(name="slow")
    slow.chunk_delay = 0.2
    proxy = make_proxy(slow, fake_nodes("other:latest", name="idle"))
    client, viewer = proxy.app.test_client(), headers_for(proxy.app, "viewer")

    def active(query=""):
        return client.get(f"/api/proxy/active-requests{query}", headers=viewer).get_json()

    assert active() == {"total": 0, "nodes": [{"node_id": 1, "name": "slow", "active": 0},
                                              {"node_id": 2, "name": "idle", "active": 0}]}  # fmt: skip
    with requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x"}, stream=True) as stream:
        lines = stream.iter_lines()
        assert json.loads(next(lines))["done"] is False
        assert active() == {"total": 1, "nodes": [{"node_id": 1, "name": "slow", "active": 1},
                                                  {"node_id": 2, "name": "idle", "active": 0}]}  # fmt: skip
        assert active("?node_id=1") == {"total": 1, "nodes": [{"node_id": 1, "name": "slow", "active": 1}]}
        assert active("?node_id=2")["total"] == 0
        assert json.loads(list(lines)[-1])["done"] is True
    assert wait_until(lambda: active()["total"] == 0)


def test_active_requests_of_an_unknown_or_malformed_node_id(client, login):
    assert_problem(client.get("/api/proxy/active-requests?node_id=7", headers=login("viewer")), 404, "node_id")
    assert_problem(client.get("/api/proxy/active-requests?node_id=x", headers=login("viewer")), 422, "node_id")


def test_pull_streams_each_nodes_progress_and_the_model_serves_at_once(proxy, two_nodes, api):
    with requests.post(
        proxy.url + "/api/proxy/pull", json={"model": "qwen2:0.5b"}, headers=api.admin, stream=True
    ) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "application/x-ndjson"
        assert response.headers["X-Accel-Buffering"] == "no"
        lines = ndjson(response)
    assert lines[-1] == {"status": "success"}
    progress = lines[:-1]
    assert {line["node"] for line in progress} == {"node-a", "node-b"}
    for name in ("node-a", "node-b"):
        own = [line for line in progress if line["node"] == name]
        assert own[0] == {"node": name, "status": "pulling manifest"}
        assert own[-1] == {"node": name, "status": "writing manifest"}
        assert any(line.get("completed") == line.get("total") and "digest" in line for line in own)
    assert all("qwen2:0.5b" in node.models for node in two_nodes)
    generated = requests.post(proxy.url + "/api/generate", json={"model": "qwen2:0.5b", "prompt": "x", "stream": False})
    assert generated.status_code == 200 and generated.json()["done"] is True


def test_pull_onto_one_node(proxy, two_nodes, api):
    response = api.client.post("/api/proxy/pull", json={"model": "tiny", "node_id": 2}, headers=api.admin)
    lines = [json.loads(line) for line in response.data.splitlines()]
    assert lines[-1] == {"status": "success"} and {line["node"] for line in lines[:-1]} == {"node-b"}
    first, second = two_nodes
    assert "tiny:latest" in second.models and "tiny:latest" not in first.models
    assert api.client.get("/api/proxy/nodes/2", headers=api.viewer).get_json()["models"][-1] == "tiny:latest"


def test_pull_failing_on_one_node_ends_with_one_error_line(proxy, two_nodes, api):
    failing, _ = two_nodes
    failing.mode, failing.fault_paths = "error500", {"/api/pull"}
    response = api.client.post("/api/proxy/pull", json={"model": "tiny"}, headers=api.admin)
    assert response.status_code == 200  # the stream had started: the outcome is its last line
    lines = [json.loads(line) for line in response.data.splitlines()]
    assert lines[-1] == {"error": "pull of 'tiny' failed on node-a: fake ollama: injected internal server error"}
    assert {line["node"] for line in lines[:-1]} == {"node-b"}


def test_the_ollama_pull_route_keeps_untagged_lines(proxy):
    response = requests.post(proxy.url + "/api/pull", json={"model": "tiny"}, stream=True)
    lines = ndjson(response)
    assert lines[-1] == {"status": "success"} and not any("node" in line for line in lines)


def test_pull_refusals(proxy, two_nodes, api):
    pull = api.client.post
    assert_problem(pull("/api/proxy/pull", json={}, headers=api.admin), 422, "model")
    for model in ("", "two words", "/llama3", "a\nb", 5):
        assert_problem(pull("/api/proxy/pull", json={"model": model}, headers=api.admin), 422, "model")
    assert_problem(pull("/api/proxy/pull", json={"model": "x", "node_id": "2"}, headers=api.admin), 422, "node_id")
    assert_problem(pull("/api/proxy/pull", json={"model": "x", "node_id": 9}, headers=api.admin), 404, "node_id")
    api.client.post("/api/proxy/nodes/1/disable", headers=api.admin)
    refused = pull("/api/proxy/pull", json={"model": "x", "node_id": 1}, headers=api.admin)
    assert_problem(refused, 503)
    assert refused.headers["Retry-After"] == "5"
    two_nodes[1].stop()
    proxy.runtime.check_now()
    assert_problem(pull("/api/proxy/pull", json={"model": "x"}, headers=api.admin), 503)
    assert all(node.count("/api/pull") == 0 for node in two_nodes)


def test_delete_model_from_every_active_node(proxy, two_nodes, api):
    response = api.client.delete("/api/proxy/models/llama3", headers=api.admin)
    assert response.status_code == 200
    assert response.get_json() == {"model": "llama3", "deleted_from": ["node-a", "node-b"], "failed": {}}
    assert all("llama3:latest" not in node.models for node in two_nodes)
    gone = requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x", "stream": False})
    assert gone.status_code == 404
    assert_problem(api.client.delete("/api/proxy/models/llama3", headers=api.admin), 404, "model")


def test_delete_model_whose_name_has_slashes(proxy, two_nodes, api):
    model = "hf.co/org/tiny-GGUF:Q4_K_M"
    api.client.post("/api/proxy/pull", json={"model": model, "node_id": 1}, headers=api.admin).get_data()
    response = api.client.delete(f"/api/proxy/models/{model}", headers=api.admin)
    assert response.get_json() == {"model": model, "deleted_from": ["node-a"], "failed": {}}
    assert model.lower() not in two_nodes[0].models


def test_delete_model_reports_the_nodes_that_failed(proxy, two_nodes, api):
    failing, working = two_nodes
    failing.mode, failing.fault_paths = "error500", {"/api/delete"}
    answer = api.client.delete("/api/proxy/models/llama3:latest", headers=api.admin).get_json()
    assert answer["deleted_from"] == ["node-b"]
    assert answer["failed"] == {"node-a": "fake ollama: injected internal server error"}
    assert "llama3:latest" in failing.models and "llama3:latest" not in working.models


def test_delete_model_only_standby_nodes_have_is_503(proxy, two_nodes, api):
    for node in two_nodes:
        node.stop()
    proxy.runtime.check_now()
    assert_problem(api.client.delete("/api/proxy/models/llama3", headers=api.admin), 503)


OPERATIONS = [
    ("get", "/api/proxy/state", None),
    ("get", "/api/proxy/active-requests", None),
    ("post", "/api/proxy/pull", {"model": "tiny"}),
    ("delete", "/api/proxy/models/llama3", None),
]


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt"])
def test_missing_or_bad_token_is_401(client, method, path, body, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    assert_problem(getattr(client, method)(path, json=body, headers=headers), 401)


def test_viewer_reads_state_but_cannot_pull_or_delete(proxy, two_nodes, api):
    assert api.client.get("/api/proxy/state", headers=api.viewer).status_code == 200
    assert api.client.get("/api/proxy/active-requests", headers=api.viewer).status_code == 200
    assert_problem(api.client.post("/api/proxy/pull", json={"model": "tiny"}, headers=api.viewer), 403)
    assert_problem(api.client.delete("/api/proxy/models/llama3", headers=api.viewer), 403)
    assert all(node.count("/api/pull") == node.count("/api/delete") == 0 for node in two_nodes)
