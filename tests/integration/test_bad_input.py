"""Bad input gets a precise error in the route's shape, never a 500."""

import json

import pytest
import requests

from aivonx.runtime import get_runtime


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        (b"{not json", 400, "invalid JSON body"),
        (b"", 400, "missing request body"),
        (b"[1, 2]", 400, "request body must be a JSON object"),
        (b'{"prompt": "hi"}', 400, "model is required"),
        (b'{"model": 42}', 400, "model must be a string"),
        (b'{"model": "ghost"}', 404, "model 'ghost' not found"),
        (b'{"model": "llama3", "prompt": "\xff\xfe"}', 400, "invalid JSON body"),
        (b'{"model": "llama3", "stream": "yes"}', 400, "stream must be true or false"),
        (b'{"model": "llama3", "messages": {"role": "user"}}', 400, "messages must be an array"),
        (b'{"model": "llama3", "options": [1]}', 400, "options must be an object"),
    ],
)
@pytest.mark.parametrize("route", ["/api/generate", "/api/chat", "/api/embed", "/api/show"])
def test_ollama_routes_reject_bad_bodies(proxy, route, body, status, error):
    response = requests.post(proxy.url + route, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert error in response.json()["error"]
    assert set(response.json()) == {"error"}


def test_v1_routes_answer_bad_json_in_openai_shape(proxy):
    response = requests.post(proxy.url + "/v1/chat/completions", data=b"{oops")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "invalid JSON body" in error["message"]


def test_oversized_body_is_413_not_a_crash(make_proxy, fake_nodes):
    proxy = make_proxy(fake_nodes(), MAX_CONTENT_LENGTH=1024)
    body = json.dumps({"model": "llama3", "prompt": "x" * 4096})
    response = requests.post(proxy.url + "/api/generate", data=body)
    assert response.status_code == 413
    assert response.json() == {"error": "request body too large"}
    # The worker is fine afterwards.
    assert requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x", "stream": False}).ok


def test_unknown_fields_pass_through_and_huge_messages_arrays_are_fine_or_413(make_proxy, fake_nodes):
    proxy = make_proxy(fake_nodes(), MAX_CONTENT_LENGTH=256 * 1024)
    # Ollama ignores fields it does not know; so does the proxy (the node judges).
    response = requests.post(
        proxy.url + "/api/chat",
        json={"model": "llama3", "messages": [{"role": "user", "content": "x"}], "stream": False, "frobnicate": 1},
    )
    assert response.status_code == 200
    many = [{"role": "user", "content": "x"}] * 5000
    response = requests.post(proxy.url + "/api/chat", json={"model": "llama3", "messages": many, "stream": False})
    assert response.status_code == 200
    too_many = [{"role": "user", "content": "x" * 100}] * 5000
    response = requests.post(proxy.url + "/api/chat", json={"model": "llama3", "messages": too_many})
    assert response.status_code == 413 and response.json() == {"error": "request body too large"}


def test_unknown_route_and_wrong_method(proxy):
    assert requests.get(proxy.url + "/api/nothing").json() == {"error": "404 page not found"}
    response = requests.get(proxy.url + "/api/generate")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert "not allowed" in response.json()["error"]


def test_copy_needs_both_names_and_an_existing_source(proxy):
    response = requests.post(proxy.url + "/api/copy", json={"source": "llama3"})
    assert response.status_code == 400 and response.json() == {"error": "destination is required"}
    response = requests.post(proxy.url + "/api/copy", json={"source": "ghost", "destination": "x"})
    assert response.status_code == 404 and response.json() == {"error": "model 'ghost' not found"}


def test_pull_onto_an_unknown_node_is_400(proxy):
    response = requests.post(proxy.url + "/api/pull", json={"model": "x", "node": "nowhere"})
    assert response.status_code == 400 and response.json() == {"error": "unknown node 'nowhere'"}


def test_lease_released_when_the_response_is_closed_before_its_body_started(proxy):
    """The generator never runs, so only call_on_close can give the slot back."""
    client = proxy.app.test_client()
    response = client.post("/api/generate", json={"model": "llama3", "prompt": "x"}, buffered=False)
    assert response.status_code == 200
    runtime = get_runtime(proxy.app)
    assert sum(runtime.manager.state.active_counts([1, 2]).values()) == 1
    response.close()
    assert sum(runtime.manager.state.active_counts([1, 2]).values()) == 0
