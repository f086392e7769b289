"""/api/proxy/nodes: CRUD, enable/disable/check, runtime state, and changes seen by other processes."""

import pytest

from aivonx.proxy.types import ACTIVE, DISABLED, STANDBY
from aivonx.runtime import get_runtime
from tests.conftest import BACKEND
from tests.integration.api.helpers import assert_problem, config_version


@pytest.fixture
def admin(login):
    return login("admin")


@pytest.fixture
def add(client, admin):
    """POST a node through the API; returns the answer's JSON (asserting 201)."""

    def post(url, **fields):
        response = client.post("/api/proxy/nodes", json={"base_url": url, **fields}, headers=admin)
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return post


def test_created_node_is_probed_at_once_and_serves(app, client, admin, fake_nodes):
    fake = fake_nodes("llama3:latest", "phi3:mini")
    before = config_version(app)
    response = client.post("/api/proxy/nodes", json={"base_url": fake.url + "/"}, headers=admin)
    assert response.status_code == 201
    node = response.get_json()
    host_port = fake.url.removeprefix("http://")
    assert node["name"] == host_port and node["base_url"] == fake.url  # trailing slash dropped
    assert node["pool"] == ACTIVE and node["enabled"] is True
    assert sorted(node["models"]) == ["llama3:latest", "phi3:mini"] and node["loaded_models"] == []
    assert node["version"] == "0.6.5" and node["latency_ms"] > 0 and node["last_error"] is None
    assert node["last_check"] and node["created_at"] and node["updated_at"]
    assert (node["priority"], node["weight"], node["max_concurrent"], node["active_requests"]) == (0, 1, 0, 0)
    assert config_version(app) == before + 1

    assert client.get(f"/api/proxy/nodes/{node['id']}", headers=admin).get_json() == node
    assert client.get("/api/proxy/nodes", headers=admin).get_json() == [node]
    # Routable at once, without waiting for a scheduled check.
    generated = client.post("/api/generate", json={"model": "phi3:mini", "prompt": "hi", "stream": False})
    assert generated.status_code == 200 and generated.get_json()["done"] is True


def test_created_node_that_is_down_is_standby_with_its_error(client, add, fake_nodes):
    fake = fake_nodes()
    fake.stop()
    node = add(fake.url, name="down", priority=2, weight=3, max_concurrent=4, enabled=True)
    assert node["pool"] == STANDBY and node["last_error"] and node["models"] == []
    assert (node["name"], node["priority"], node["weight"], node["max_concurrent"]) == ("down", 2, 3, 4)


def test_created_disabled_node_is_not_probed(add, fake_nodes):
    fake = fake_nodes()
    node = add(fake.url, enabled=False)
    assert node["pool"] == DISABLED and node["last_check"] is None
    assert fake.count("/api/version") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "base_url"),
        ({"base_url": "ftp://gpu1:11434"}, "base_url"),
        ({"base_url": "http://"}, "base_url"),
        ({"base_url": "gpu1:11434"}, "base_url"),
        ({"base_url": "http://gpu1:99999"}, "base_url"),
        ({"base_url": "http://gpu1:11434/?x=1"}, "base_url"),
        ({"base_url": "http://user:pw@gpu1:11434"}, "base_url"),
        ({"base_url": "http://gpu1/" + "x" * 500}, "base_url"),
        ({"base_url": 11434}, "base_url"),
        ({"base_url": "http://gpu1:11434", "name": ""}, "name"),
        ({"base_url": "http://gpu1:11434", "name": " gpu1"}, "name"),
        ({"base_url": "http://gpu1:11434", "name": "gpu\x001"}, "name"),
        ({"base_url": "http://gpu1:11434", "name": "g" * 101}, "name"),
        ({"base_url": "http://gpu1:11434", "weight": 0}, "weight"),
        ({"base_url": "http://gpu1:11434", "weight": 1.5}, "weight"),
        ({"base_url": "http://gpu1:11434", "max_concurrent": -1}, "max_concurrent"),
        ({"base_url": "http://gpu1:11434", "priority": 10**12}, "priority"),
        ({"base_url": "http://gpu1:11434", "enabled": "maybe"}, "enabled"),
        ({"base_url": "http://gpu1:11434", "pool": "active"}, "pool"),
    ],
)
def test_invalid_node_fields_are_422_naming_the_field(app, client, admin, body, field):
    before = config_version(app)
    assert_problem(client.post("/api/proxy/nodes", json=body, headers=admin), 422, field)
    assert client.get("/api/proxy/nodes", headers=admin).get_json() == []
    assert config_version(app) == before


def test_body_that_is_not_json_is_a_problem(client, admin):
    response = client.post("/api/proxy/nodes", data=b"{oops", content_type="application/json", headers=admin)
    assert response.status_code in (400, 422) and response.mimetype == "application/problem+json"


def test_taken_name_or_url_is_409_naming_the_field(client, admin, add):
    first = add("http://gpu1:11434", name="gpu1")
    second = add("http://gpu2:11434", name="gpu2")
    same_name = client.post("/api/proxy/nodes", json={"base_url": "http://gpu3:1", "name": "gpu1"}, headers=admin)
    assert_problem(same_name, 409, "name")
    # The same server written differently is the same URL.
    same_url = client.post("/api/proxy/nodes", json={"base_url": "http://GPU1:11434/"}, headers=admin)
    assert_problem(same_url, 409, "base_url")
    renamed = client.patch(f"/api/proxy/nodes/{second['id']}", json={"name": "gpu1"}, headers=admin)
    assert_problem(renamed, 409, "name")
    moved = client.patch(f"/api/proxy/nodes/{second['id']}", json={"base_url": first["base_url"]}, headers=admin)
    assert_problem(moved, 409, "base_url")
    # Keeping its own name and URL is no conflict.
    unchanged = client.patch(f"/api/proxy/nodes/{first['id']}", json={"name": "gpu1"}, headers=admin)
    assert unchanged.status_code == 200


def test_put_replaces_every_field_and_needs_all_of_them(app, client, admin, add):
    node = add("http://gpu1:11434", name="gpu1", enabled=False)
    partial = client.put(f"/api/proxy/nodes/{node['id']}", json={"name": "gpu1"}, headers=admin)
    problem = assert_problem(partial, 422)
    assert set(problem["errors"]) == {"base_url", "enabled", "priority", "weight", "max_concurrent"}
    replacement = {
        "name": "big",
        "base_url": "http://gpu9:8080/ollama",
        "enabled": False,
        "priority": -1,
        "weight": 4,
        "max_concurrent": 16,
    }
    before = config_version(app)
    replaced = client.put(f"/api/proxy/nodes/{node['id']}", json=replacement, headers=admin)
    assert replaced.status_code == 200
    assert {key: replaced.get_json()[key] for key in replacement} == replacement
    assert config_version(app) == before + 1
    spec = get_runtime(app).manager.node(node["id"])
    assert (spec.name, spec.priority, spec.weight, spec.max_concurrent) == ("big", -1, 4, 16)


def test_patch_changes_some_fields_applied_live(app, client, admin, add):
    node = add("http://gpu1:11434", name="gpu1", enabled=False)
    before = config_version(app)
    patched = client.patch(f"/api/proxy/nodes/{node['id']}", json={"priority": 5, "max_concurrent": 2}, headers=admin)
    assert patched.status_code == 200
    answer = patched.get_json()
    assert (answer["priority"], answer["max_concurrent"], answer["name"], answer["weight"]) == (5, 2, "gpu1", 1)
    assert answer["updated_at"] >= node["updated_at"]
    assert config_version(app) == before + 1
    assert get_runtime(app).manager.node(node["id"]).priority == 5
    # A PATCH that changes nothing stores nothing.
    assert client.patch(f"/api/proxy/nodes/{node['id']}", json={"priority": 5}, headers=admin).status_code == 200
    assert client.patch(f"/api/proxy/nodes/{node['id']}", json={}, headers=admin).status_code == 200
    assert config_version(app) == before + 1
    assert_problem(client.patch(f"/api/proxy/nodes/{node['id']}", json={"weight": -3}, headers=admin), 422, "weight")


def test_disable_and_enable_and_health_never_touches_enabled(app, client, admin, add, fake_nodes):
    fake = fake_nodes()
    node = add(fake.url)
    disabled = client.post(f"/api/proxy/nodes/{node['id']}/disable", headers=admin).get_json()
    assert disabled["pool"] == DISABLED and disabled["enabled"] is False
    rt = get_runtime(app)
    assert rt.manager.node(node["id"]).enabled is False
    assert client.post("/api/generate", json={"model": "llama3", "prompt": "x", "stream": False}).status_code == 404
    rt.check_now()  # a health check of everything leaves the operator's switch alone
    assert client.get(f"/api/proxy/nodes/{node['id']}", headers=admin).get_json()["enabled"] is False

    probes = fake.count("/api/version")
    enabled = client.post(f"/api/proxy/nodes/{node['id']}/enable", headers=admin).get_json()
    assert enabled["pool"] == ACTIVE and enabled["enabled"] is True
    assert fake.count("/api/version") == probes + 1  # probed at once
    assert client.post("/api/generate", json={"model": "llama3", "prompt": "x", "stream": False}).status_code == 200

    fake.stop()
    rt.check_now()
    assert client.get(f"/api/proxy/nodes/{node['id']}", headers=admin).get_json()["pool"] == STANDBY
    assert rt.manager.node(node["id"]).enabled is True


def test_new_url_forgets_the_old_server_and_probes_the_new_one(app, client, admin, add, fake_nodes):
    old, new = fake_nodes("llama3:latest"), fake_nodes("phi3:mini")
    node = add(old.url)
    moved = client.patch(f"/api/proxy/nodes/{node['id']}", json={"base_url": new.url}, headers=admin).get_json()
    assert moved["pool"] == ACTIVE and moved["models"] == ["phi3:mini"] and moved["base_url"] == new.url
    assert client.post("/api/generate", json={"model": "llama3", "prompt": "x", "stream": False}).status_code == 404

    new.stop()
    elsewhere = fake_nodes("qwen2:latest")
    elsewhere.stop()
    gone = client.patch(f"/api/proxy/nodes/{node['id']}", json={"base_url": elsewhere.url}, headers=admin).get_json()
    # Nothing known of a server that never answered: no models, not serving.
    assert gone["pool"] == STANDBY and gone["models"] == [] and gone["last_error"]


def test_check_probes_now_and_answers_the_node(app, client, admin, add, fake_nodes):
    fake = fake_nodes()
    node = add(fake.url)
    fake.stop()
    checked = client.post(f"/api/proxy/nodes/{node['id']}/check", headers=admin).get_json()
    assert checked["pool"] == STANDBY and checked["last_error"] and checked["enabled"] is True
    fake.restart()
    checked = client.post(f"/api/proxy/nodes/{node['id']}/check", headers=admin).get_json()
    assert checked["pool"] == ACTIVE and checked["last_error"] is None
    # A disabled node can be checked too; it stays disabled.
    client.post(f"/api/proxy/nodes/{node['id']}/disable", headers=admin)
    checked = client.post(f"/api/proxy/nodes/{node['id']}/check", headers=admin).get_json()
    assert checked["pool"] == DISABLED and checked["enabled"] is False and checked["version"] == "0.6.5"


def test_delete_removes_the_node_everywhere_in_this_process(app, client, admin, add, fake_nodes):
    node = add(fake_nodes().url)
    before = config_version(app)
    deleted = client.delete(f"/api/proxy/nodes/{node['id']}", headers=admin)
    assert deleted.status_code == 204 and deleted.data == b""
    assert config_version(app) == before + 1
    assert get_runtime(app).manager.node(node["id"]) is None
    assert_problem(client.get(f"/api/proxy/nodes/{node['id']}", headers=admin), 404)
    assert_problem(client.delete(f"/api/proxy/nodes/{node['id']}", headers=admin), 404)
    assert client.post("/api/generate", json={"model": "llama3", "prompt": "x"}).status_code == 404


EVERY_FIELD = {"name": "n", "base_url": "http://n:1", "enabled": True, "priority": 0, "weight": 1, "max_concurrent": 0}


@pytest.mark.parametrize("node_id", [999, 0, 2**31, 10**30])
@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("get", "", None),
        ("put", "", EVERY_FIELD),
        ("patch", "", {"priority": 1}),
        ("delete", "", None),
        ("post", "/enable", None),
        ("post", "/disable", None),
        ("post", "/check", None),
    ],
)
def test_unknown_node_is_404(client, admin, node_id, method, suffix, body):
    response = getattr(client, method)(f"/api/proxy/nodes/{node_id}{suffix}", json=body, headers=admin)
    assert_problem(response, 404)


WRITES = [
    ("post", "/api/proxy/nodes", {"base_url": "http://gpu1:11434"}),
    ("put", "/api/proxy/nodes/1", EVERY_FIELD),
    ("patch", "/api/proxy/nodes/1", {"priority": 1}),
    ("delete", "/api/proxy/nodes/1", None),
    ("post", "/api/proxy/nodes/1/enable", None),
    ("post", "/api/proxy/nodes/1/disable", None),
    ("post", "/api/proxy/nodes/1/check", None),
]
READS = [("get", "/api/proxy/nodes", None), ("get", "/api/proxy/nodes/1", None)]


@pytest.mark.parametrize(("method", "path", "body"), WRITES + READS)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-jwt"])
def test_missing_or_bad_token_is_401(client, add, method, path, body, authorization):
    add("http://gpu0:11434")
    headers = {"Authorization": authorization} if authorization else {}
    response = getattr(client, method)(path, json=body, headers=headers)
    assert_problem(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_viewer_cannot_write(app, client, login, add, method, path, body):
    add("http://gpu0:11434", name="gpu0")
    before = config_version(app)
    assert_problem(getattr(client, method)(path, json=body, headers=login("viewer")), 403)
    assert client.get("/api/proxy/nodes/1", headers=login("viewer")).get_json()["name"] == "gpu0"
    assert config_version(app) == before


def test_viewer_reads(client, login, add):
    node = add("http://gpu0:11434")
    assert client.get("/api/proxy/nodes", headers=login("viewer")).get_json()[0]["id"] == node["id"]
    assert client.get(f"/api/proxy/nodes/{node['id']}", headers=login("viewer")).status_code == 200


def test_changes_reach_a_second_process_sharing_the_database(app, client, admin, add, make_app, fake_nodes):
    other = get_runtime(make_app())
    other.sync()
    node = add(fake_nodes().url, name="gpu1")
    assert other.sync() is True  # the version moved: it reloads
    assert other.manager.node(node["id"]).name == "gpu1"
    if BACKEND == "postgres":  # statuses are shared through Redis
        assert other.manager.pool_of(other.manager.node(node["id"])) == ACTIVE

    client.post(f"/api/proxy/nodes/{node['id']}/disable", headers=admin)
    other.sync()
    assert other.manager.pool_of(other.manager.node(node["id"])) == DISABLED
    client.patch(f"/api/proxy/nodes/{node['id']}", json={"weight": 7, "name": "renamed"}, headers=admin)
    other.sync()
    assert (other.manager.node(node["id"]).weight, other.manager.node(node["id"]).name) == (7, "renamed")
    client.delete(f"/api/proxy/nodes/{node['id']}", headers=admin)
    other.sync()
    assert other.manager.nodes == []
