"""GET /api/logs on a running proxy that writes its own log file."""

from pathlib import Path

import pytest
import requests

from aivonx.logs import detach_file
from tests.integration.api.helpers import assert_problem, headers_for
from tests.integration.test_failover import wait_until


@pytest.fixture
def log_path(tmp_path: Path):
    path = tmp_path / "logs" / "aivonx.log"
    yield path
    detach_file(str(path))


@pytest.fixture
def logged_proxy(make_proxy, fake_nodes, log_path):
    return make_proxy(fake_nodes("llama3:latest", "mistral:latest", name="gpu-a"), AIVONX_LOG_FILE=str(log_path))


def generate(proxy, model: str, request_id: str) -> None:
    response = requests.post(
        proxy.url + "/api/generate",
        json={"model": model, "prompt": "hi", "stream": False},
        headers={"X-Request-ID": request_id},
        timeout=10,
    )
    assert response.status_code == 200


def logs(client, headers, **query):
    response = client.get("/api/logs", query_string=query, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_requests_are_found_by_model_node_and_status(logged_proxy, log_path):
    client, headers = logged_proxy.app.test_client(), headers_for(logged_proxy.app, "viewer")
    generate(logged_proxy, "llama3", "req-llama")
    generate(logged_proxy, "mistral", "req-mistral")
    requests.post(logged_proxy.url + "/api/generate", json={"model": "absent", "prompt": "x"}, timeout=10)
    assert wait_until(lambda: len(logs(client, headers, source="request")["entries"]) >= 3, timeout=5)

    page = logs(client, headers, model="llama3:latest")
    assert [entry["request_id"] for entry in page["entries"]] == ["req-llama"]
    entry = page["entries"][0]
    assert entry["node"] == "gpu-a" and entry["status"] == 200 and entry["route"] == "/api/generate"
    assert page["file"] == str(log_path)
    assert [e["request_id"] for e in logs(client, headers, node="gpu-a")["entries"]] == ["req-mistral", "req-llama"]
    assert [e["model"] for e in logs(client, headers, status="4xx")["entries"]] == ["absent"]
    assert logs(client, headers, q="REQ-MISTRAL")["entries"][0]["request_id"] == "req-mistral"


def test_pages_and_live_tail(logged_proxy):
    client, headers = logged_proxy.app.test_client(), headers_for(logged_proxy.app)
    for n in range(5):
        generate(logged_proxy, "llama3", f"first-{n}")
    assert wait_until(lambda: len(logs(client, headers, source="request")["entries"]) >= 5, timeout=5)
    first = logs(client, headers, source="request", limit=2)
    second = logs(client, headers, source="request", limit=2, before=first["next"])
    ids = [e["request_id"] for e in first["entries"] + second["entries"]]
    assert ids == ["first-4", "first-3", "first-2", "first-1"]

    assert logs(client, headers, source="request", after=first["latest"])["entries"] == []
    generate(logged_proxy, "llama3", "later")
    assert wait_until(
        lambda: (
            [e["request_id"] for e in logs(client, headers, source="request", after=first["latest"])["entries"]]
            == ["later"]
        ),
        timeout=5,
    )


def test_a_malformed_line_is_shown_not_a_500(logged_proxy, log_path):
    client, headers = logged_proxy.app.test_client(), headers_for(logged_proxy.app)
    generate(logged_proxy, "llama3", "before-garbage")
    with open(log_path, "ab") as handle:
        handle.write(b"\x00garbage that is not JSON \xff\n")
    generate(logged_proxy, "llama3", "after-garbage")
    assert wait_until(lambda: len(logs(client, headers, source="request")["entries"]) >= 2, timeout=5)
    entries = logs(client, headers, limit=1000)["entries"]
    assert any(entry.get("malformed") and "garbage" in entry["message"] for entry in entries)
    assert [e["request_id"] for e in logs(client, headers, source="request")["entries"]] == [
        "after-garbage",
        "before-garbage",
    ]


def test_access_and_bad_queries(logged_proxy):
    client = logged_proxy.app.test_client()
    assert_problem(client.get("/api/logs"), 401)
    headers = headers_for(logged_proxy.app, "viewer")
    assert_problem(client.get("/api/logs?level=LOUD", headers=headers), 422, "level")
    assert_problem(client.get("/api/logs?before=12", headers=headers), 422, "before")
    assert_problem(client.get("/api/logs?status=2x", headers=headers), 422, "status")
    assert_problem(client.get("/api/logs?limit=0", headers=headers), 422, "limit")
    assert_problem(client.get("/api/logs?before=1-2-0a0b0c0d&after=1-2-0a0b0c0d", headers=headers), 400, "after")


def test_without_a_log_file(client, login):
    page = logs(client, login("viewer"))
    assert page == {"entries": [], "next": None, "latest": None, "file": None}


def test_documented_in_openapi(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/api/logs"]["get"]
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert {"level", "q", "model", "node", "status", "since", "until", "before", "after", "limit"} <= names
