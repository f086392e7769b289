"""Quick checks of tests/fake_ollama.py against the real ollama and openai clients."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

try:
    from tests.fake_ollama import FakeOllama
except ImportError:  # the repository root is not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.fake_ollama import FakeOllama

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(["llama3:latest", "nomic-embed-text"], name="node-a") as node:
        yield node


def _fake_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fake-ollama-")]


def test_chat_stream_yields_several_chunks(fake: FakeOllama) -> None:
    client = ollama.Client(host=fake.url)
    chunks = list(client.chat(model="llama3", messages=MESSAGES, stream=True))
    assert len(chunks) == len(fake.tokens) + 1
    assert "".join(c.message.content or "" for c in chunks) == "Hello, world!"
    assert [c.done for c in chunks] == [False] * len(fake.tokens) + [True]
    assert chunks[-1].done_reason == "stop"
    assert fake.count("/api/chat", "POST") == 1
    assert fake.requests[-1].json["model"] == "llama3"
    assert fake.completed_streams == 1
    assert [m.model for m in client.ps().models] == ["llama3:latest"]


def test_generate_non_stream(fake: FakeOllama) -> None:
    resp = ollama.Client(host=fake.url).generate(model="LLAMA3:latest", prompt="hi", stream=False)
    assert resp.response == "Hello, world!"
    assert resp.done is True
    assert resp.eval_count == len(fake.tokens)


def test_embed_is_deterministic(fake: FakeOllama) -> None:
    client = ollama.Client(host=fake.url)
    first = client.embed(model="nomic-embed-text", input=["a", "b"]).embeddings
    assert len(first) == 2
    assert len(first[0]) == 4
    assert client.embed(model="nomic-embed-text", input="a").embeddings[0] == first[0]
    oa = openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)
    data = oa.embeddings.create(model="nomic-embed-text", input=["a", "b"]).data
    assert [d.embedding for d in data] == [list(v) for v in first]


def test_pull_adds_model_and_delete_removes_it(fake: FakeOllama) -> None:
    client = ollama.Client(host=fake.url)
    progress = list(client.pull("qwen2.5:0.5b", stream=True))
    assert progress[0].status == "pulling manifest"
    assert progress[-1].status == "success"
    assert any(p.total and p.completed == p.total for p in progress)
    assert "qwen2.5:0.5b" in [m.model for m in client.list().models]
    client.delete("qwen2.5:0.5b")
    assert "qwen2.5:0.5b" not in fake.models
    with pytest.raises(ollama.ResponseError) as err:
        client.delete("qwen2.5:0.5b")
    assert err.value.status_code == 404


def test_error500_fails_inference_but_not_probes(fake: FakeOllama) -> None:
    client = ollama.Client(host=fake.url)
    fake.mode = "error500"
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="llama3", messages=MESSAGES)
    assert err.value.status_code == 500
    assert client.list().models  # /api/tags is not in fault_paths
    fake.fault_paths = None
    with pytest.raises(ollama.ResponseError):
        client.list()
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=fake.url).chat(model="nope", messages=MESSAGES)
    assert err.value.status_code == 500  # faults come before validation
    fake.mode = "ok"
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nope", messages=MESSAGES)
    assert err.value.status_code == 404


def test_stop_refuses_connections_and_restart_reuses_port(fake: FakeOllama) -> None:
    client = ollama.Client(host=fake.url)
    assert client.list().models
    port = fake.port
    fake.stop()
    assert _fake_threads() == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    fake.restart()
    assert fake.port == port
    assert httpx.get(fake.url + "/api/version").json() == {"version": "0.6.5"}


def test_die_midstream_raises_in_client(fake: FakeOllama) -> None:
    fake.mode = "die_midstream"
    client = ollama.Client(host=fake.url)
    got: list[str] = []
    with pytest.raises(httpx.TransportError):
        for chunk in client.generate(model="llama3", prompt="x", stream=True):
            got.append(chunk.response)
    assert got == ["Hello", ","]
    with pytest.raises(httpx.TransportError):  # non-streaming: no response at all
        client.generate(model="llama3", prompt="x", stream=False)
    assert fake.completed_streams == 0


def test_reset_and_hang(fake: FakeOllama) -> None:
    fake.mode = "reset"
    with pytest.raises(httpx.TransportError):
        httpx.post(fake.url + "/api/chat", json={"model": "llama3", "messages": []})
    fake.mode = "hang"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fake.url + "/api/embed", json={"model": "llama3"}, timeout=0.2)
    # the abandoned request is noticed at once (no need to wait hang_seconds)
    assert fake.wait_for(lambda f: f.disconnects == 1 and f.active == 0, timeout=5)

    result: dict[str, object] = {}

    def call() -> None:
        try:
            httpx.post(fake.url + "/api/embed", json={"model": "llama3"}, timeout=30)
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    assert fake.wait_for(lambda f: f.active == 1, timeout=5)
    started = time.monotonic()
    fake.stop()  # wakes the hanging handler
    thread.join(5)
    assert time.monotonic() - started < 2
    assert isinstance(result.get("error"), httpx.TransportError)
    assert _fake_threads() == []


def test_openai_sse_stream(fake: FakeOllama) -> None:
    oa = openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)
    stream = oa.chat.completions.create(model="llama3", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert len(chunks) == len(fake.tokens) + 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello, world!"
    assert chunks[-1].choices[0].finish_reason == "stop"
    full = oa.chat.completions.create(model="llama3", messages=MESSAGES)
    assert full.choices[0].message.content == "Hello, world!"
    assert [m.id for m in oa.models.list()] == [
        "llama3:latest",
        "nomic-embed-text:latest",
    ]
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="nope", messages=MESSAGES)


def test_chunk_delay_spaces_chunks_and_abandon_is_counted(fake: FakeOllama) -> None:
    fake.chunk_delay = 0.05
    body = {"model": "llama3", "prompt": "x"}
    arrivals = []
    with httpx.stream("POST", fake.url + "/api/generate", json=body) as resp:
        assert resp.headers["content-type"] == "application/x-ndjson"
        start = time.monotonic()
        for _ in resp.iter_lines():
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) == len(fake.tokens) + 1
    assert arrivals[-1] >= 0.15  # 4 gaps of 50 ms, minus slack
    fake.tokens = ["t"] * 200
    with httpx.stream("POST", fake.url + "/api/generate", json=body) as resp:
        next(resp.iter_lines())
    assert fake.wait_for(lambda f: f.disconnects == 1 and f.active == 0, timeout=5)
    assert fake.completed_streams == 1


def test_control_over_http(fake: FakeOllama) -> None:
    ctl = httpx.post(fake.url + "/_fake/control", json={"mode": "busy503"})
    assert ctl.json()["mode"] == "busy503"
    assert fake.mode == "busy503"
    generate = {"model": "llama3", "prompt": "x", "stream": False}
    assert httpx.post(fake.url + "/api/generate", json=generate).status_code == 503
    assert httpx.post(fake.url + "/_fake/control", json={"mode": "x"}).status_code == 400
    httpx.post(fake.url + "/_fake/control", json={"mode": "ok", "fault_paths": None})
    assert fake.fault_paths is None
    stats = httpx.get(fake.url + "/_fake/stats").json()
    assert stats["count_by_path"] == {"/api/generate": 1}
    assert stats["models"] == ["llama3:latest", "nomic-embed-text:latest"]
    httpx.post(fake.url + "/_fake/clear")
    assert fake.count() == 0
    assert fake.requests == []
