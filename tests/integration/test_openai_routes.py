"""The OpenAI-compatible /v1 routes, driven by the official `openai` client."""

import time

import openai
import pytest


@pytest.fixture
def client(proxy):
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key="ollama", max_retries=0)


def test_chat_completion(client):
    completion = client.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Hello, world!"


def test_chat_completion_streams_events_as_they_arrive(make_proxy, fake_nodes):
    node = fake_nodes(tokens=["a", "b", "c", "d"])
    node.chunk_delay = 0.3
    proxy = make_proxy(node)
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0)
    started = time.monotonic()
    arrivals, text = [], []
    for chunk in client.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "hi"}], stream=True
    ):
        arrivals.append(time.monotonic() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            text.append(chunk.choices[0].delta.content)
    assert "".join(text) == "abcd"
    assert arrivals[-1] - arrivals[0] >= 0.8


def test_completions_and_embeddings(client):
    completion = client.completions.create(model="llama3", prompt="once upon")
    assert completion.choices[0].text
    embedding = client.embeddings.create(model="llama3", input=["a", "b"])
    assert len(embedding.data) == 2


def test_models_list_and_retrieve(make_proxy, fake_nodes):
    proxy = make_proxy(fake_nodes("llama3:latest", "team/coder:7b"), fake_nodes("llama3:latest"))
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0)
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"llama3:latest", "team/coder:7b"}
    assert models["team/coder:7b"].owned_by == "team"
    assert models["llama3:latest"].owned_by == "library"
    assert models["llama3:latest"].created > 1_600_000_000
    assert client.models.retrieve("llama3").id == "llama3:latest"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("missing")
    assert caught.value.body["message"] == "model 'missing' not found"


def test_unknown_model_is_an_openai_shaped_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body == {
        "message": "model 'nope' not found",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_bad_request_is_an_openai_shaped_400(proxy):
    client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["message"] == "model is required"
