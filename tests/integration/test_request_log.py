"""X-Request-ID on every response, and one JSON log line per proxied request."""

import json
import logging

import ollama
import pytest
import requests

from aivonx.logs import JsonFormatter
from tests.integration.test_failover import wait_until


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.entries = []

    def emit(self, record):
        self.entries.append(json.loads(JsonFormatter().format(record)))

    def wait_for(self, count, route):
        """The server logs when it closes the response, which may be just after the client is done."""
        assert wait_until(lambda: len(self.of(route)) >= count, timeout=5)
        return self.of(route)

    def of(self, route):
        return [entry for entry in self.entries if entry["route"] == route]


@pytest.fixture
def request_log():
    handler = Collect()
    logger = logging.getLogger("aivonx.request")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_request_id_is_generated_or_kept_and_reaches_the_node(proxy, two_nodes):
    generated = requests.get(proxy.url + "/api/tags")
    assert len(generated.headers["X-Request-ID"]) == 32
    kept = requests.post(
        proxy.url + "/api/generate",
        json={"model": "llama3", "prompt": "x", "stream": False},
        headers={"X-Request-ID": "client-id-42"},
    )
    assert kept.headers["X-Request-ID"] == "client-id-42"
    seen = [r for node in two_nodes for r in node.requests if r.path == "/api/generate"]
    assert [r.headers["x-request-id"] for r in seen] == ["client-id-42"]
    junk = requests.get(proxy.url + "/api/tags", headers={"X-Request-ID": "bad id\twith spaces"})
    assert junk.headers["X-Request-ID"] != "bad id\twith spaces"
    assert requests.get(proxy.url + "/api/health").headers["X-Request-ID"]


def test_a_streamed_generate_is_logged_once_with_node_tokens_and_timing(proxy, request_log):
    parts = list(ollama.Client(host=proxy.url).generate(model="llama3", prompt="x", stream=True))
    (entry,) = request_log.wait_for(1, "/api/generate")
    assert entry["model"] == "llama3" and entry["status"] == 200 and entry["method"] == "POST"
    assert entry["node"] in {"node-a", "node-b"}
    assert entry["retries"] == 0 and entry["retry_reasons"] == []
    assert entry["tokens"] == parts[-1].eval_count and entry["tokens_per_s"] > 0
    assert entry["bytes"] > 0 and 0 <= entry["first_byte_ms"] <= entry["duration_ms"]
    assert entry["client"] == "127.0.0.1" and len(entry["request_id"]) == 32


def test_retries_and_their_reasons_are_logged(proxy, two_nodes, request_log):
    bad, _ = two_nodes
    bad.stop()
    client = ollama.Client(host=proxy.url)
    for _ in range(2):
        client.generate(model="llama3", prompt="x", stream=False)
    entries = request_log.wait_for(2, "/api/generate")
    assert sum(e["retries"] for e in entries) == 1
    (retried,) = [e for e in entries if e["retries"]]
    assert retried["retry_reasons"] == ["node-a: connection refused"] and retried["node"] == "node-b"


def test_failures_are_logged_with_their_status(proxy, request_log):
    requests.post(proxy.url + "/api/generate", json={"model": "ghost", "prompt": "x"})
    requests.post(proxy.url + "/api/chat", data=b"{oops")
    (generate,) = request_log.wait_for(1, "/api/generate")
    (chat,) = request_log.wait_for(1, "/api/chat")
    assert (generate["status"], generate["model"]) == (404, "ghost")
    assert (chat["status"], chat["model"]) == (400, None)
