"""/api/health, /api/ready, /api/proxy/info, and the OpenAPI document of the proxy management API."""

import platform

import pytest
from openapi_spec_validator import validate
from sqlalchemy.exc import OperationalError

from aivonx.extensions import db
from aivonx.runtime import get_runtime
from aivonx.version import __version__
from tests.conftest import BACKEND
from tests.integration.api.helpers import assert_problem, headers_for


def test_liveness_needs_nothing(client):
    response = client.get("/api/health")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == {"status": "ok"}


def test_ready_only_with_an_active_node(make_proxy, fake_nodes):
    node = fake_nodes()
    proxy = make_proxy()
    client = proxy.app.test_client()
    not_ready = client.get("/api/ready")
    assert not_ready.status_code == 503 and not_ready.mimetype == "application/json"
    assert not_ready.get_json() == {
        "status": "not ready",
        "database": "ok",
        "active_nodes": 0,
        "detail": "no active node",
    }
    proxy.add_node(node)
    assert client.get("/api/ready").get_json() == {"status": "ready", "database": "ok", "active_nodes": 1}
    node.stop()
    proxy.runtime.check_now()
    assert client.get("/api/ready").status_code == 503


def test_readiness_when_the_database_does_not_answer(app, client, fake_nodes, monkeypatch, caplog):
    proxy_runtime = get_runtime(app)
    with app.app_context():
        from aivonx import store

        store.add_node(fake_nodes().url)
    proxy_runtime.sync(force=True)
    proxy_runtime.check_now()

    def unreachable(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("db.internal:5432 refused"))

    monkeypatch.setattr(db.session, "execute", unreachable)
    # The configuration is in memory: the instance goes on proxying, so it stays ready.
    response = client.get("/api/ready")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "database": "unavailable", "active_nodes": 1}
    # The reason goes to the log, not to whoever asks without credentials.
    assert "db.internal" in caplog.text and "db.internal" not in response.get_data(as_text=True)

    # An instance that never loaded its configuration cannot proxy: not ready.
    from aivonx import store

    monkeypatch.setattr(store, "current_version", unreachable)
    proxy_runtime.loaded_version = None
    response = client.get("/api/ready")
    assert response.status_code == 503
    assert response.get_json() == {
        "status": "not ready",
        "database": "unavailable",
        "active_nodes": 1,
        "detail": "database unavailable",
    }


def test_not_ready_while_draining(app, client, fake_nodes):
    proxy_runtime = get_runtime(app)
    with app.app_context():
        from aivonx import store

        store.add_node(fake_nodes().url)
    proxy_runtime.sync(force=True)
    proxy_runtime.check_now()
    assert client.get("/api/ready").status_code == 200
    proxy_runtime.draining = True
    response = client.get("/api/ready")
    assert response.status_code == 503 and response.get_json()["detail"] == "shutting down"


def test_info_says_what_runs(client, login, monkeypatch):
    response = client.get("/api/proxy/info", headers=login("viewer"))
    assert response.status_code == 200
    assert response.get_json() == {
        "name": "aivonx",
        "version": __version__,
        "build": None,
        "python": platform.python_version(),
        "strategy": "least_active",
        "redis": BACKEND == "postgres",
        "database": "postgresql" if BACKEND == "postgres" else "sqlite",
    }
    monkeypatch.setenv("AIVONX_BUILD", "3f2c1ab")
    client.patch("/api/proxy/config", json={"strategy": "round_robin"}, headers=login("admin"))
    info = client.get("/api/proxy/info", headers=login("viewer")).get_json()
    assert (info["build"], info["strategy"]) == ("3f2c1ab", "round_robin")


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt"])
def test_info_needs_a_token(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    assert_problem(client.get("/api/proxy/info", headers=headers), 401)


def test_unknown_method_on_a_service_route_is_405(client):
    response = client.post("/api/proxy/info")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


MANAGED_PREFIXES = ("/api/proxy", "/api/health", "/api/ready")


def test_openapi_documents_every_proxy_operation(client):
    document = client.get("/openapi.json").get_json()
    validate(document)
    paths = {path: ops for path, ops in document["paths"].items() if path.startswith(MANAGED_PREFIXES)}
    assert {
        "/api/proxy/nodes",
        "/api/proxy/nodes/{node_id}",
        "/api/proxy/nodes/{node_id}/enable",
        "/api/proxy/nodes/{node_id}/disable",
        "/api/proxy/nodes/{node_id}/check",
        "/api/proxy/config",
        "/api/proxy/state",
        "/api/proxy/active-requests",
        "/api/proxy/pull",
        "/api/proxy/models/{model}",
        "/api/health",
        "/api/ready",
        "/api/proxy/info",
    } <= set(paths)
    for path, operations in paths.items():
        for method, operation in operations.items():
            if method == "parameters":
                continue
            assert operation.get("summary"), f"{method} {path}"
            public = path in ("/api/health", "/api/ready")
            assert ("401" in operation["responses"]) is not public, f"{method} {path}"
            if method != "get" and not public:
                assert "403" in operation["responses"], f"{method} {path}"
            if "{" in path:
                assert "404" in operation["responses"], f"{method} {path}"
            if "requestBody" in operation:
                assert "422" in operation["responses"], f"{method} {path}"
    assert "409" in paths["/api/proxy/nodes"]["post"]["responses"]
    assert "409" in paths["/api/proxy/nodes/{node_id}"]["patch"]["responses"]
    assert "503" in paths["/api/ready"]["get"]["responses"]
    assert "503" in paths["/api/proxy/pull"]["post"]["responses"]
    assert list(paths["/api/proxy/pull"]["post"]["responses"]["200"]["content"]) == ["application/x-ndjson"]
    node_create = document["components"]["schemas"]["NodeCreate"]
    assert node_create["required"] == ["base_url"] and node_create["properties"]["base_url"]["example"]
    assert document["components"]["schemas"]["ProxyConfigReplace"]["properties"]["max_tries"]["maximum"] == 10


def test_management_and_ollama_answer_side_by_side(make_proxy, fake_nodes):
    """/api/health etc. are ours; the Ollama routes under /api keep Ollama's error shape."""
    proxy = make_proxy(fake_nodes())
    client = proxy.app.test_client()
    assert client.get("/api/proxy/state", headers=headers_for(proxy.app)).status_code == 200
    missing = client.post("/api/generate", json={"model": "nope", "prompt": "x"})
    assert missing.status_code == 404 and missing.get_json() == {"error": "model 'nope' not found"}
