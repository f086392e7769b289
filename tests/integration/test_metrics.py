"""`/metrics` after real traffic through the proxy: every family is there, the values are
the traffic that was sent (in one process, and added up over two gunicorn workers)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import ollama
import openai
import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from aivonx.metrics import REASONS, reason_kind

# family name (as the parser names it) -> type
FAMILIES = {
    "aivonx_requests": "counter",
    "aivonx_request_duration_seconds": "histogram",
    "aivonx_time_to_first_byte_seconds": "histogram",
    "aivonx_tokens_generated": "counter",
    "aivonx_retries": "counter",
    "aivonx_node_ejections": "counter",
    "aivonx_node_readmissions": "counter",
    "aivonx_probes": "counter",
    "aivonx_probe_duration_seconds": "histogram",
    "aivonx_queue_wait_seconds": "histogram",
    "aivonx_queue_length": "gauge",
    "aivonx_node_active_requests": "gauge",
    "aivonx_node_pool": "gauge",
    "aivonx_build_info": "gauge",
}
TOKENS_PER_ANSWER = 4  # the fake node's default answer: "Hello", ",", " world", "!"


class Scrape:
    def __init__(self, text: str) -> None:
        self.families = {family.name: family for family in text_string_to_metric_families(text)}

    def samples(self, name: str, **labels: str) -> list[Sample]:
        family = self.families[name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")]
        return [
            sample
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called `name` whose labels include `labels`."""
        return sum(sample.value for sample in self.samples(name, **labels))


def scrape(url: str, **headers: str) -> Scrape:
    response = requests.get(url + "/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    result = Scrape(response.text)
    assert {name: family.type for name, family in result.families.items() if name in FAMILIES} == FAMILIES
    return result


def wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def generate_calls(node) -> int:
    return sum(1 for recorded in node.requests if recorded.path == "/api/generate")


def test_reasons_fall_into_a_fixed_set():
    assert reason_kind("connection refused") == "connect_error"
    assert reason_kind("connection reset") == "connect_error"
    assert reason_kind("connect timeout") == "timeout"
    assert reason_kind("no response within 300s") == "timeout"
    assert reason_kind("HTTP 503") == "http_5xx"
    assert reason_kind("HTTP 404") == "not_found"
    assert reason_kind("answer is not JSON") == "other"
    assert {reason_kind(text) for text in ("HTTP 500", "read timeout", "x")} <= set(REASONS)


def test_metrics_after_real_traffic(make_proxy, two_nodes):
    node_a, node_b = two_nodes
    proxy = make_proxy(node_a, node_b, AIVONX_EJECTION_BASE=0.0)
    client = ollama.Client(host=proxy.url)
    sent: dict[tuple[str, int], int] = {}

    def count(route: str, status: int) -> None:
        sent[route, status] = sent.get((route, status), 0) + 1

    # Every family is there before any traffic, the per-node gauges already filled in.
    first = scrape(proxy.url)
    assert first.value("aivonx_requests_total") == 0
    assert first.value("aivonx_node_pool", node="node-a", pool="active") == 1

    for _ in range(4):
        parts = list(client.generate(model="llama3", prompt="hi", stream=True))
        assert parts[-1].done
        count("/api/generate", 200)
    for _ in range(3):
        assert client.chat(model="llama3", messages=[{"role": "user", "content": "hi"}]).message.content
        count("/api/chat", 200)
    openai_client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
    openai_client.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "hi"}])
    count("/v1/chat/completions", 200)
    assert requests.get(proxy.url + "/v1/models/llama3", timeout=5).status_code == 200
    count("/v1/models/<path:model>", 200)
    with pytest.raises(ollama.ResponseError):
        client.generate(model="no-such-model", prompt="hi")
    count("/api/generate", 404)
    answered = 4 + 3  # Ollama answers whose final chunk carries eval_count

    # node-a resets connections: the request that lands there is retried on node-b.
    node_a.mode = "reset"
    for _ in range(4):
        before = generate_calls(node_a)
        assert requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x"}).ok
        count("/api/generate", 200)
        answered += 1
        if generate_calls(node_a) > before:
            break
    else:
        pytest.fail("no request was sent to node-a")
    ejected = scrape(proxy.url)
    assert ejected.value("aivonx_node_pool", node="node-a", pool="standby") == 1
    assert ejected.value("aivonx_node_pool", node="node-a", pool="active") == 0

    # A probe brings node-a back; then node-b answers 500 and its request moves to node-a.
    node_a.mode = "ok"
    proxy.refresh()
    node_b.mode = "error500"
    for _ in range(4):
        before = generate_calls(node_b)
        assert requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x"}).ok
        count("/api/generate", 200)
        answered += 1
        if generate_calls(node_b) > before:
            break
    else:
        pytest.fail("no request was sent to node-b")
    node_b.mode = "ok"

    # A stream in flight shows as one active request on its node.
    node_a.chunk_delay = node_b.chunk_delay = 0.3
    stream = requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x"}, stream=True)
    chunks = stream.iter_content(chunk_size=None)
    next(chunks)
    during = scrape(proxy.url)
    assert during.value("aivonx_node_active_requests") == 1
    list(chunks)
    count("/api/generate", 200)
    answered += 1
    node_a.chunk_delay = node_b.chunk_delay = 0.0
    wait_until(lambda: proxy.active_total() == 0)

    # The stream's record is written when the server closes its response, a moment after
    # the client read the last byte (and after the lease was released).
    total = sum(sent.values())
    wait_until(lambda: scrape(proxy.url).value("aivonx_requests_total") == total)
    result = scrape(proxy.url)
    assert result.value("aivonx_requests_total") == total
    for (route, status), number in sent.items():
        assert result.value("aivonx_requests_total", route=route, status=str(status)) == number, (route, status)
    # Labels stay bounded: the unknown model is not named, the served one is normalized.
    assert result.value("aivonx_requests_total", model="", status="404") == 1
    assert {s.labels["model"] for s in result.samples("aivonx_requests_total")} <= {"", "llama3:latest"}
    served = result.samples("aivonx_requests_total", route="/api/generate", status="200")
    assert {sample.labels["node"] for sample in served} == {"node-a", "node-b"}
    assert result.value("aivonx_request_duration_seconds_count") == total
    assert result.value("aivonx_request_duration_seconds_count", route="/api/chat", model="llama3:latest") == 3
    assert result.value("aivonx_request_duration_seconds_sum") > 0.3  # the slow stream alone took 1.2 s
    # First bytes: every request a node answered (all but the listing and the 404).
    assert result.value("aivonx_time_to_first_byte_seconds_count") == total - 2
    assert result.value("aivonx_tokens_generated_total", model="llama3:latest") == TOKENS_PER_ANSWER * answered

    assert result.value("aivonx_retries_total") == 2
    assert result.value("aivonx_retries_total", node="node-a", reason="connect_error") == 1
    assert result.value("aivonx_retries_total", node="node-b", reason="http_5xx") == 1
    assert result.value("aivonx_node_ejections_total", node="node-a", reason="connect_error") == 1
    assert result.value("aivonx_node_ejections_total", node="node-b", reason="http_5xx") == 1
    # Admissions count the first one, after the first probe, too.
    assert result.value("aivonx_node_readmissions_total", node="node-a") == 2
    probes_ok = result.value("aivonx_probes_total", node="node-a", result="ok")
    assert probes_ok >= 2
    assert result.value("aivonx_probe_duration_seconds_count", node="node-a") == probes_ok
    assert 0 < result.value("aivonx_probe_duration_seconds_sum", node="node-a") < probes_ok * 2

    assert result.value("aivonx_node_active_requests") == 0
    assert result.value("aivonx_queue_length") == 0
    for node in ("node-a", "node-b"):
        assert result.value("aivonx_node_pool", node=node) == 1  # exactly one pool each
    assert result.value("aivonx_node_pool", node="node-b", pool="standby") == 1  # ejected by its 500
    assert result.value("aivonx_build_info") == 1


def test_queue_length_and_wait(make_proxy, fake_nodes):
    node = fake_nodes(name="only")
    node.chunk_delay = 0.2
    proxy = make_proxy()
    proxy.add_node(node, max_concurrent=1)
    first = requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x"}, stream=True)
    chunks = first.iter_content(chunk_size=None)
    next(chunks)
    waiting: list[requests.Response] = []
    body = {"model": "llama3", "prompt": "x"}
    second = threading.Thread(
        target=lambda: waiting.append(requests.post(proxy.url + "/api/generate", json=body, timeout=30))
    )
    second.start()
    wait_until(lambda: proxy.manager.queue_length == 1)
    assert scrape(proxy.url).value("aivonx_queue_length") == 1
    list(chunks)
    second.join(30)
    assert waiting and waiting[0].status_code == 200

    # The stream's record is written when the server closes its response, a moment after
    # the client read its last byte.
    wait_until(lambda: scrape(proxy.url).value("aivonx_requests_total", status="200") == 2)
    result = scrape(proxy.url)
    assert result.value("aivonx_queue_length") == 0
    assert result.value("aivonx_queue_wait_seconds_count", outcome="served") == 1
    assert result.value("aivonx_queue_wait_seconds_sum", outcome="served") > 0.2
    assert result.value("aivonx_requests_total", status="200") == 2


def test_metrics_token(make_proxy, fake_nodes):
    proxy = make_proxy(fake_nodes(), AIVONX_METRICS_TOKEN="scrape-secret")
    assert requests.get(proxy.url + "/metrics", timeout=5).status_code == 401
    wrong = requests.get(proxy.url + "/metrics", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith("Bearer")
    scrape(proxy.url, Authorization="Bearer scrape-secret")


def worker_pids(master: int) -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                pids.add(int(entry.name))
    return pids


def test_two_gunicorn_workers_add_up(start_gunicorn, two_nodes, tmp_path):
    """Multiprocess mode: each worker writes its own files; every scrape adds them all up,
    counters survive a worker restart, and files of an earlier run are cleared at start."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale = MmapedDict(str(metrics_dir / "counter_999999.db"))
    labels = {"route": "/api/generate", "model": "llama3:latest", "node": "node-a", "status": "200"}
    key = mmap_key("aivonx_requests", "aivonx_requests_total", list(labels), list(labels.values()), "stale")
    stale.write_value(key, 1000.0, 0.0)
    stale.close()

    proxy = start_gunicorn(*two_nodes, AIVONX_WORKERS="2", AIVONX_METRICS_DIR=str(metrics_dir))
    workers = worker_pids(proxy.process.pid)
    assert len(workers) == 2
    assert not (metrics_dir / "counter_999999.db").exists()
    # Both workers have probed the nodes (each on its own without Redis) before the traffic.
    ready_streak = []

    def both_ready() -> bool:
        ready = requests.get(proxy.url + "/api/ready", headers={"Connection": "close"}, timeout=5).ok
        ready_streak[:] = [*ready_streak, True] if ready else []
        return len(ready_streak) >= 10

    wait_until(both_ready, seconds=30)

    statuses = []
    for _ in range(20):
        # A new connection each time, so both workers take requests.
        response = requests.post(
            proxy.url + "/api/generate",
            json={"model": "llama3", "prompt": "x", "stream": False},
            headers={"Connection": "close"},
            timeout=10,
        )
        statuses.append(response.status_code)
    ok = statuses.count(200)
    assert ok == 20, statuses

    pids_with_files = {int(path.stem.rsplit("_", 1)[1]) for path in metrics_dir.glob("counter_*.db")}
    assert pids_with_files <= workers
    generate = {"route": "/api/generate"}  # start_gunicorn itself polled /api/tags
    # A record is written as its response closes, which may trail the client by a moment.
    wait_until(lambda: scrape(proxy.url).value("aivonx_requests_total", **generate) == 20)
    for _ in range(6):
        result = scrape(proxy.url)
        assert result.value("aivonx_requests_total", **generate) == 20
        assert result.value("aivonx_requests_total", status="200", **generate) == ok
        assert result.value("aivonx_tokens_generated_total") == TOKENS_PER_ANSWER * ok
        assert result.value("aivonx_request_duration_seconds_count", **generate) == 20
        assert result.value("aivonx_probes_total", result="ok") >= 2

    # A worker that exits (and is replaced) keeps its counts in the totals.
    victim = sorted(pids_with_files or workers)[0]
    os.kill(victim, signal.SIGTERM)
    wait_until(lambda: len(worker_pids(proxy.process.pid) - {victim}) == 2, seconds=30)
    for _ in range(6):
        assert scrape(proxy.url).value("aivonx_requests_total", **generate) == 20
    assert json.loads(requests.get(proxy.url + "/api/health", timeout=5).text) == {"status": "ok"}
