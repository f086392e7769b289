"""Every Ollama route through the proxy, driven by the official `ollama` client."""

import hashlib
import time

import ollama
import pytest
import requests


@pytest.fixture
def client(proxy):
    return ollama.Client(host=proxy.url)


def test_root_and_head_answer_like_ollama(proxy):
    response = requests.get(proxy.url + "/")
    assert response.status_code == 200
    assert response.text == "Ollama is running"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert requests.head(proxy.url + "/").status_code == 200


def test_version_is_the_oldest_node_version(make_proxy, fake_nodes):
    proxy = make_proxy(fake_nodes(version="0.6.5"), fake_nodes(version="0.5.13"))
    version = requests.get(proxy.url + "/api/version").json()["version"]
    assert version == "0.5.13"
    assert requests.head(proxy.url + "/api/version").status_code == 200


def test_generate_streams_chunks_as_they_arrive(make_proxy, fake_nodes):
    node = fake_nodes(tokens=["one", " two", " three", " four"])
    node.chunk_delay = 0.3
    proxy = make_proxy(node)
    client = ollama.Client(host=proxy.url)
    arrivals = []
    started = time.monotonic()
    parts = []
    for part in client.generate(model="llama3", prompt="count", stream=True):
        arrivals.append(time.monotonic() - started)
        parts.append(part)
    assert "".join(p.response for p in parts) == "one two three four"
    assert parts[-1].done and parts[-1].eval_count
    # Incremental: the first chunk arrived long before the last (4 gaps of 0.3 s on the node).
    assert arrivals[-1] - arrivals[0] >= 0.8
    assert arrivals[0] < 0.6


def test_generate_without_stream_gives_one_object(client):
    result = client.generate(model="llama3:latest", prompt="hi", stream=False)
    assert result.done and result.response == "Hello, world!"


def test_chat_streaming_and_not(client):
    parts = list(client.chat(model="llama3", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert len(parts) > 2
    assert "".join(p.message.content for p in parts) == "Hello, world!"
    single = client.chat(model="llama3", messages=[{"role": "user", "content": "hi"}])
    assert single.message.content == "Hello, world!"


def test_embed_and_legacy_embeddings(client):
    result = client.embed(model="llama3", input=["a", "b"])
    assert len(result.embeddings) == 2
    legacy = client.embeddings(model="llama3", prompt="a")
    assert len(legacy.embedding) > 0


def test_show_routes_to_a_node_with_the_model(client):
    shown = client.show("llama3")
    assert shown.details is not None


def test_tags_are_merged_and_deduplicated(make_proxy, fake_nodes):
    proxy = make_proxy(fake_nodes("llama3:latest", "mistral:latest"), fake_nodes("llama3:latest", "phi3:mini"))
    listed = ollama.Client(host=proxy.url).list()
    names = sorted(m.model for m in listed.models)
    assert names == ["llama3:latest", "mistral:latest", "phi3:mini"]
    raw = requests.get(proxy.url + "/api/tags").json()["models"][0]
    assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(raw)


def test_ps_after_refresh_shows_the_loaded_model(proxy, client):
    client.generate(model="llama3", prompt="load it", stream=False)
    proxy.refresh()
    loaded = client.ps()
    assert [m.model for m in loaded.models] == ["llama3:latest"]
    assert loaded.models[0].expires_at is not None


def test_pull_puts_the_model_on_every_active_node_and_it_is_routable_at_once(proxy, client, two_nodes):
    progress = list(client.pull("qwen2:0.5b", stream=True))
    assert progress[-1].status == "success"
    assert sum(1 for p in progress if p.status == "success") == 1
    assert all("qwen2:0.5b" in node.models for node in two_nodes)
    assert client.generate(model="qwen2:0.5b", prompt="hi", stream=False).done
    assert "qwen2:0.5b" in [m.model for m in client.list().models]


def test_pull_without_stream_and_onto_one_named_node(proxy, two_nodes):
    first, second = two_nodes
    response = requests.post(proxy.url + "/api/pull", json={"model": "tiny", "stream": False, "node": "node-b"})
    assert response.status_code == 200 and response.json() == {"status": "success"}
    assert "tiny:latest" in second.models and "tiny:latest" not in first.models


def test_copy_and_delete_reach_every_node_with_the_model(proxy, client, two_nodes):
    client.copy("llama3", "llama3-copy")
    assert all("llama3-copy:latest" in node.models for node in two_nodes)
    client.generate(model="llama3-copy", prompt="hi", stream=False)
    client.delete("llama3-copy")
    assert all("llama3-copy:latest" not in node.models for node in two_nodes)
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(model="llama3-copy", prompt="hi", stream=False)
    assert caught.value.status_code == 404


def test_delete_of_unknown_model_is_404(client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.delete("nothing-here")
    assert caught.value.status_code == 404
    assert "not found" in caught.value.error


def test_create_from_a_model_and_push(client, two_nodes):
    progress = list(client.create(model="my-llama", from_="llama3", system="be brief", stream=True))
    assert progress[-1].status == "success"
    assert all("my-llama:latest" in node.models for node in two_nodes)
    assert client.generate(model="my-llama", prompt="hi", stream=False).done
    pushed = list(client.push("my-llama", stream=True))
    assert pushed[-1].status == "success"


def test_blobs_are_uploaded_to_every_active_node(proxy, two_nodes, tmp_path):
    data = b"GGUF fake weights" * 1000
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert requests.head(f"{proxy.url}/api/blobs/{digest}").status_code == 404
    assert requests.post(f"{proxy.url}/api/blobs/{digest}", data=data).status_code == 201
    assert requests.head(f"{proxy.url}/api/blobs/{digest}").status_code == 200
    blob = tmp_path / "weights.gguf"
    blob.write_bytes(data)
    client = ollama.Client(host=proxy.url)
    assert client.create_blob(blob) == digest
    progress = list(client.create(model="from-blob", files={"weights.gguf": digest}, stream=True))
    assert progress[-1].status == "success"
    assert all("from-blob:latest" in node.models for node in two_nodes)


def test_client_authorization_is_not_forwarded_by_default(proxy, two_nodes):
    client = ollama.Client(host=proxy.url, headers={"Authorization": "Bearer secret-token"})
    client.generate(model="llama3", prompt="hi", stream=False)
    seen = [r for node in two_nodes for r in node.requests if r.path == "/api/generate"]
    assert seen and all("authorization" not in {k.lower() for k in r.headers} for r in seen)


def test_authorization_is_forwarded_when_configured(make_proxy, fake_nodes):
    node = fake_nodes()
    proxy = make_proxy(node, AIVONX_FORWARD_AUTHORIZATION=True)
    client = ollama.Client(host=proxy.url, headers={"Authorization": "Bearer abc"})
    client.generate(model="llama3", prompt="x", stream=False)
    (seen,) = [r for r in node.requests if r.path == "/api/generate"]
    assert {k.lower(): v for k, v in seen.headers.items()}["authorization"] == "Bearer abc"
