"""require_api_key: the Ollama and /v1 routes demand an API key, checked in memory.

Keys are created through the management API of one app (`client`) and used on a proxy
that is another app on the same database (`make_proxy`): as two processes would.
The proxy's runtime is synced by hand here, where a running server does it every
AIVONX_SYNC_INTERVAL.
"""

import re
import time
from datetime import UTC, datetime

import ollama
import openai
import pytest
import requests
from sqlalchemy import select

from aivonx import accounts, store
from aivonx.extensions import db
from aivonx.models import ApiKey, ProxyConfig
from aivonx.proxy.keyring import KeyRing
from aivonx.runtime import get_runtime

OPEN = [("GET", "/"), ("HEAD", "/")]


def configure(app, **settings):
    """Change the ProxyConfig row as the config API will, and let this app's process reload."""
    with app.app_context():
        config = db.session.get(ProxyConfig, store.CONFIG_ID)
        for name, value in settings.items():
            setattr(config, name, value)
        store.bump_version()
        db.session.commit()
    get_runtime(app).sync()


@pytest.fixture
def guarded(make_proxy, fake_nodes):
    """A proxy with one node and require_api_key on."""
    proxy = make_proxy(fake_nodes(name="node-a"))
    configure(proxy.app, require_api_key=True)
    return proxy


@pytest.fixture
def new_key(client, login, guarded):
    """`new_key(name)`: create a key through the API, sync the proxy, return the key."""

    def create(name="tests"):
        response = client.post("/api/keys", headers=login(), json={"name": name})
        assert response.status_code == 201
        guarded.runtime.sync()
        return response.get_json()["key"]

    return create


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def key_row(app, key_id=None):
    with app.app_context():
        query = select(ApiKey).order_by(ApiKey.id.desc())
        if key_id is not None:
            query = query.where(ApiKey.id == key_id)
        row = db.session.scalars(query).first()
        db.session.expunge_all()
        return row


def proxy_operations(app):
    """Every (method, path) the ollama blueprint serves, path parameters filled in."""
    operations = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("ollama."):
            path = re.sub(r"<[^>]+>", "sha256-0", rule.rule)
            operations += [(method, path) for method in sorted(rule.methods - {"OPTIONS"})]
    return operations


# -- what is protected, and how refusals look ---------------------------------------------


def test_every_proxy_route_except_the_liveness_answer_needs_a_key(guarded):
    client = guarded.app.test_client()
    operations = proxy_operations(guarded.app)
    assert ("POST", "/api/chat") in operations and ("GET", "/v1/models") in operations
    for method, path in operations:
        response = client.open(path, method=method, json={"model": "llama3"})
        if (method, path) in OPEN:
            assert response.status_code == 200, path
            continue
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        if method == "HEAD":
            continue
        error = response.get_json()["error"]
        if path.startswith("/v1/"):
            assert error["type"] == "authentication_error" and error["message"].startswith("unauthorized: ")
        else:
            assert error == "unauthorized: an API key is required (send Authorization: Bearer <key>)"


def test_liveness_answer_and_cors_preflight_stay_open(guarded):
    assert requests.get(guarded.url + "/").text == "Ollama is running"
    assert requests.head(guarded.url + "/").status_code == 200
    assert requests.options(guarded.url + "/api/chat").status_code == 200


REFUSED_AUTHORIZATIONS = [
    "Basic dXNlcjpwYXNz",
    "Bearer",
    "Bearer   ",
    "aivonx_abc",
    "Bearer aivonx_not-a-key",
    "Token {key}",
    "Bearer {key}x",
]


def test_anything_but_a_valid_bearer_key_is_refused(guarded, new_key):
    key = new_key()
    for authorization in REFUSED_AUTHORIZATIONS:
        response = requests.get(guarded.url + "/api/tags", headers={"Authorization": authorization.format(key=key)})
        assert response.status_code == 401, authorization
        assert response.json()["error"].startswith("unauthorized: ")
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_the_scheme_is_case_insensitive(guarded, new_key):
    key = new_key()
    assert requests.get(guarded.url + "/api/tags", headers={"Authorization": f"bearer {key}"}).status_code == 200


def test_off_by_default_and_off_again(make_proxy, fake_nodes):
    proxy = make_proxy(fake_nodes())
    assert requests.get(proxy.url + "/api/tags").status_code == 200
    configure(proxy.app, require_api_key=True)
    assert requests.get(proxy.url + "/api/tags").status_code == 401
    configure(proxy.app, require_api_key=False)
    assert requests.get(proxy.url + "/api/tags").status_code == 200


# -- the real clients (the acceptance test) ------------------------------------------


def test_ollama_client_with_OLLAMA_API_KEY_works_and_is_refused_without(guarded, new_key, monkeypatch):
    key = new_key()
    monkeypatch.setenv("OLLAMA_API_KEY", key)
    client = ollama.Client(host=guarded.url)  # reads OLLAMA_API_KEY now
    assert client.chat(model="llama3", messages=[{"role": "user", "content": "hi"}]).message.content
    assert "".join(part.response for part in client.generate(model="llama3", prompt="hi", stream=True))
    assert [model.model for model in client.list().models] == ["llama3:latest"]

    monkeypatch.delenv("OLLAMA_API_KEY")
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=guarded.url).chat(model="llama3", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 401
    assert refused.value.error.startswith("unauthorized: ")

    monkeypatch.setenv("OLLAMA_API_KEY", key + "-wrong")
    with pytest.raises(ollama.ResponseError) as wrong:
        ollama.Client(host=guarded.url).list()
    assert wrong.value.status_code == 401 and wrong.value.error == "unauthorized: invalid or revoked API key"


def test_openai_client_with_the_key_works_and_a_wrong_key_is_an_authentication_error(guarded, new_key):
    key = new_key()
    right = openai.OpenAI(base_url=guarded.url + "/v1", api_key=key, max_retries=0)
    answer = right.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content
    streamed = right.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)

    wrong = openai.OpenAI(base_url=guarded.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 401
    assert refused.value.body["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_the_key_is_not_forwarded_to_nodes_unless_forward_authorization(make_proxy, fake_nodes, client, login):
    node = fake_nodes(name="node-a")
    proxy = make_proxy(node)
    configure(proxy.app, require_api_key=True)
    key = client.post("/api/keys", headers=login(), json={"name": "tests"}).get_json()["key"]
    proxy.runtime.sync()
    body = {"model": "llama3", "prompt": "hi", "stream": False}

    node.clear()
    assert requests.post(proxy.url + "/api/generate", json=body, headers=bearer(key)).status_code == 200
    [generate] = [r for r in node.requests if r.path == "/api/generate"]
    assert "authorization" not in generate.headers

    configure(proxy.app, forward_authorization=True)
    node.clear()
    assert requests.post(proxy.url + "/api/generate", json=body, headers=bearer(key)).status_code == 200
    [generate] = [r for r in node.requests if r.path == "/api/generate"]
    assert generate.headers["authorization"] == f"Bearer {key}"


# -- keys come and go without restarts ------------------------------------------------------


def test_new_keys_and_revocations_take_effect_at_the_next_sync(guarded, new_key, client, login):
    key = new_key("first")
    assert requests.get(guarded.url + "/api/tags", headers=bearer(key)).status_code == 200
    key_id = key_row(guarded.app).id

    assert client.delete(f"/api/keys/{key_id}", headers=login()).status_code == 204
    # Until this process syncs (within AIVONX_SYNC_INTERVAL) it still holds the old set.
    assert guarded.runtime.sync() is True
    refused = requests.get(guarded.url + "/api/tags", headers=bearer(key))
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized: invalid or revoked API key"
    v1 = requests.get(guarded.url + "/v1/models", headers=bearer(key))
    assert v1.status_code == 401 and v1.json()["error"]["type"] == "authentication_error"

    other = new_key("second")
    assert requests.get(guarded.url + "/api/tags", headers=bearer(other)).status_code == 200


def test_last_used_at_is_saved_by_the_sync_not_per_request(guarded, new_key, client, login):
    key = new_key()
    started = datetime.now(UTC)
    for _ in range(3):
        assert requests.get(guarded.url + "/api/tags", headers=bearer(key)).status_code == 200
    assert key_row(guarded.app).last_used_at is None  # nothing written per request

    with guarded.app.app_context():
        version = store.current_version()
    assert guarded.runtime.sync() is False  # saving uses is no configuration change
    used_at = key_row(guarded.app).last_used_at
    assert started <= used_at <= datetime.now(UTC)
    with guarded.app.app_context():
        assert store.current_version() == version
    [listed] = client.get("/api/keys", headers=login()).get_json()
    assert datetime.fromisoformat(listed["last_used_at"]) == used_at

    # A sync without new uses writes nothing; a later use moves the time forward.
    guarded.runtime.sync()
    assert key_row(guarded.app).last_used_at == used_at
    time.sleep(0.01)
    requests.get(guarded.url + "/api/tags", headers=bearer(key))
    guarded.runtime.sync()
    assert key_row(guarded.app).last_used_at > used_at


def test_refused_requests_are_not_recorded_as_uses(guarded, new_key):
    key = new_key()
    requests.get(guarded.url + "/api/tags", headers=bearer(key + "x"))
    guarded.runtime.sync()
    assert key_row(guarded.app).last_used_at is None


def test_an_older_use_never_overwrites_a_newer_one(guarded, new_key):
    # Two processes save their own observations; whichever writes last must not move time back.
    new_key()
    key_id = key_row(guarded.app).id
    now = time.time()
    with guarded.app.app_context():
        accounts.record_key_use({key_id: now})
        accounts.record_key_use({key_id: now - 60})
    assert key_row(guarded.app).last_used_at == datetime.fromtimestamp(now, UTC)


def test_keyring_keeps_unsaved_uses_for_the_next_save():
    ring = KeyRing()
    ring.replace({"0" * 64: 1})
    assert len(ring) == 1 and not ring.use("aivonx_unknown")
    assert ring.take_used() == {}
    ring.put_back({1: 100.0, 2: 50.0})
    ring.put_back({1: 90.0})
    assert ring.take_used() == {1: 100.0, 2: 50.0}
    assert ring.take_used() == {}
