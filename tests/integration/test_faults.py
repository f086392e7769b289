"""Outlier ejection with backoff, the queue for busy nodes, disconnects and draining.

The rest of the fault matrix (refused, 500, hang, death mid-stream, slow first byte, all
nodes down) is in test_failover.py; these are the behaviours borrowed from Envoy's outlier
detection and HAProxy's queues.
"""

import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from aivonx.proxy.types import ACTIVE, STANDBY
from tests.conftest import REDIS_URL
from tests.integration.test_failover import wait_until


def generate(url: str, **body) -> requests.Response:
    return requests.post(f"{url}/api/generate", json={"model": "llama3", "prompt": "hi", "stream": False, **body})


def test_ejection_time_doubles_and_a_passing_probe_after_it_readmits(make_proxy, two_nodes):
    flaky, good = two_nodes
    proxy = make_proxy(flaky, good, AIVONX_EJECTION_BASE=0.6, AIVONX_EJECTION_MAX=2.0)
    flaky.mode = "busy503"  # fails requests fast, yet answers probes: a flapping node
    node = proxy.manager.node(1)
    durations = []
    for ejection in (1, 2, 3):
        # Requests alternate between the nodes; each one is served (the 503 is retried).
        while proxy.manager.pool_of(node) == ACTIVE:
            assert generate(proxy.url).status_code == 200
        status = proxy.manager.status(1)
        assert status.ejections == ejection
        durations.append(round(status.ejected_until - status.failed_at, 3))
        # Probes pass, but not before the ejection ends...
        while time.time() < status.ejected_until - 0.05:
            proxy.runtime.check_now([node])
            assert proxy.manager.pool_of(node) == STANDBY
            time.sleep(0.05)
        # ...and the first probe after it readmits the node.
        assert wait_until(lambda: proxy.runtime.check_now([node]) or proxy.manager.pool_of(node) == ACTIVE, 1.0)
        readmitted = time.time()
        assert status.ejected_until <= readmitted < status.ejected_until + 0.5
    assert durations == [0.6, 1.2, 2.0]  # doubling, capped at AIVONX_EJECTION_MAX
    assert proxy.active_total() == 0


def test_consecutive_failures_before_ejection_are_configurable(make_proxy, two_nodes):
    flaky, good = two_nodes
    proxy = make_proxy(flaky, good, AIVONX_EJECT_AFTER=3)
    flaky.mode = "error500"
    for _ in range(12):
        assert generate(proxy.url).status_code == 200
    # Ejected after its third 500 in a row, not before.
    assert flaky.count("/api/generate") == 3
    assert proxy.manager.status(1).ejections == 1
    assert proxy.manager.pool_of(proxy.manager.node(1)) == STANDBY


def test_a_success_resets_the_count_of_failures(make_proxy, two_nodes):
    flaky, good = two_nodes
    proxy = make_proxy(flaky, good, AIVONX_EJECT_AFTER=2)
    node = proxy.manager.node(1)
    for _ in range(5):
        flaky.mode = "error500"
        while flaky.count("/api/generate") == 0:
            assert generate(proxy.url).status_code == 200
        assert proxy.manager.status(1).failures == 1
        flaky.mode = "ok"
        flaky.clear()
        while flaky.count("/api/generate") == 0:
            assert generate(proxy.url).status_code == 200
        assert proxy.manager.status(1).failures == 0
        flaky.clear()
    assert proxy.manager.pool_of(node) == ACTIVE


def test_a_fast_failing_node_does_not_attract_traffic_under_least_active(make_proxy, two_nodes):
    busy, slow = two_nodes
    slow.first_byte_delay = 0.3
    proxy = make_proxy(busy, slow)
    assert proxy.manager.settings.strategy == "least_active"
    busy.mode = "busy503"  # answers in a millisecond: always the least active
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: generate(proxy.url).status_code, range(48)))
    assert answers == [200] * 48
    # Ejected on its first failure: only requests already on their way when that happened
    # reached it, at most one per client thread. Without ejection it would take nearly all
    # 48 first tries, being always the least active.
    assert busy.count("/api/generate") <= 16
    assert slow.count("/api/generate") == 48
    assert proxy.active_total() == 0


def test_the_last_healthy_node_is_not_ejected_for_one_5xx(make_proxy, two_nodes):
    only, gone = two_nodes
    proxy = make_proxy(only, gone)
    gone.stop()
    proxy.runtime.check_now()
    only.mode = "error500"
    response = generate(proxy.url)
    assert response.status_code == 500  # the node's own answer, passed through
    assert proxy.manager.pool_of(proxy.manager.node(1)) == ACTIVE
    only.mode = "ok"
    assert generate(proxy.url).status_code == 200


# -- the queue -------------------------------------------------------------------------


def test_requests_wait_for_a_free_slot_and_are_served_in_turn(make_proxy, fake_nodes):
    node = fake_nodes()
    node.first_byte_delay = 0.4
    proxy = make_proxy()
    proxy.add_node(node, max_concurrent=1)
    node.clear()
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: generate(proxy.url), range(4)))
    elapsed = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * 4
    assert node.peak_active == 1  # never more than max_concurrent at the node
    assert elapsed >= 1.6  # served one after the other
    assert proxy.active_total() == 0 and proxy.manager.queue_length == 0


def test_a_full_queue_and_a_long_wait_answer_503_with_retry_after(make_proxy, fake_nodes):
    node = fake_nodes()
    node.first_byte_delay = 1.5
    proxy = make_proxy(AIVONX_QUEUE_SIZE=1, AIVONX_QUEUE_TIMEOUT=0.5)
    proxy.add_node(node, max_concurrent=1)
    with ThreadPoolExecutor(3) as pool:
        holding = pool.submit(generate, proxy.url)
        assert wait_until(lambda: node.active == 1)
        waiting = pool.submit(generate, proxy.url)
        assert wait_until(lambda: proxy.manager.queue_length == 1)
        full = generate(proxy.url)
        assert full.status_code == 503 and full.headers["Retry-After"] == "1"
        assert full.json() == {"error": "every node with model 'llama3' is busy and the queue is full"}
        timed_out = waiting.result()
        assert timed_out.status_code == 503 and timed_out.headers["Retry-After"] == "1"
        assert timed_out.json() == {"error": "every node with model 'llama3' stayed busy for 0.5s"}
        assert holding.result().status_code == 200
    # On /v1, OpenAI's error shape.
    with ThreadPoolExecutor(1) as pool:
        holding = pool.submit(generate, proxy.url)
        assert wait_until(lambda: node.active == 1)
        response = requests.post(
            f"{proxy.url}/v1/chat/completions", json={"model": "llama3", "messages": [{"role": "user", "content": "x"}]}
        )
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "server_error"
        assert "busy" in response.json()["error"]["message"]
        holding.result()
    assert proxy.active_total() == 0 and proxy.manager.queue_length == 0


def test_queue_disabled_answers_503_at_once(make_proxy, fake_nodes):
    node = fake_nodes()
    node.first_byte_delay = 1.0
    proxy = make_proxy(AIVONX_QUEUE_SIZE=0)
    proxy.add_node(node, max_concurrent=1)
    with ThreadPoolExecutor(1) as pool:
        holding = pool.submit(generate, proxy.url)
        assert wait_until(lambda: node.active == 1)
        started = time.monotonic()
        response = generate(proxy.url)
        assert response.status_code == 503 and time.monotonic() - started < 0.5
        assert response.json() == {"error": "every node with model 'llama3' is busy"}
        assert holding.result().status_code == 200


def test_a_slot_freed_in_another_process_serves_the_queue(make_proxy, fake_nodes):
    node = fake_nodes()
    node.first_byte_delay = 0.8
    shared = {"AIVONX_REDIS_URL": REDIS_URL}
    first = make_proxy(**shared)
    first.add_node(node, max_concurrent=1)
    second = make_proxy(**shared)
    second.refresh()
    node.clear()
    with ThreadPoolExecutor(1) as pool:
        holding = pool.submit(generate, first.url)
        assert wait_until(lambda: node.active == 1)
        queued = generate(second.url)  # waits in the second process for the first's slot
        assert holding.result().status_code == 200
    assert queued.status_code == 200
    assert node.peak_active == 1
    assert first.active_total() == 0 and second.active_total() == 0


# -- disconnects and draining ------------------------------------------------------------


def test_a_client_disconnect_closes_the_node_stream_within_a_second(start_gunicorn, fake_nodes):
    node = fake_nodes(tokens=[f"t{i} " for i in range(400)])
    node.chunk_delay = 0.02
    proxy = start_gunicorn(node)
    host, port = proxy.url.rsplit("/", 1)[1].split(":")
    body = json.dumps({"model": "llama3", "prompt": "long"}).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        assert b"200 OK" in sock.recv(4096)
        assert wait_until(lambda: node.active >= 1)
    hung_up = time.monotonic()
    assert wait_until(lambda: node.disconnects == 1, timeout=1.0)
    assert time.monotonic() - hung_up < 1.0
    assert node.completed_streams == 0
    state = requests.get(f"{proxy.url}/api/health")
    assert state.status_code == 200


def test_sigterm_drains_then_finishes_streams_in_flight(start_gunicorn, fake_nodes):
    node = fake_nodes(tokens=[f"t{i} " for i in range(30)])
    node.chunk_delay = 0.1  # a three-second stream
    proxy = start_gunicorn(node, AIVONX_DRAIN_SECONDS="1.5", AIVONX_GRACEFUL_TIMEOUT="20")
    assert wait_until(lambda: requests.get(f"{proxy.url}/api/ready").status_code == 200, timeout=10)
    chunks: list[dict] = []

    def stream() -> None:
        with requests.post(f"{proxy.url}/api/generate", json={"model": "llama3", "prompt": "x"}, stream=True) as r:
            chunks.extend(json.loads(line) for line in r.iter_lines() if line)

    reader = threading.Thread(target=stream)
    reader.start()
    assert wait_until(lambda: node.active >= 1)
    proxy.process.send_signal(signal.SIGTERM)
    # Draining: readiness turns 503 first, while requests are still served.
    assert wait_until(lambda: requests.get(f"{proxy.url}/api/ready").status_code == 503, timeout=1.0)
    assert requests.get(f"{proxy.url}/api/ready").json()["detail"].startswith("shutting down")
    assert generate(proxy.url).status_code == 200
    reader.join(15)
    assert chunks and chunks[-1]["done"] is True and "error" not in chunks[-1]
    assert len(chunks) == 31
    assert proxy.process.wait(15) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{proxy.url}/api/health", timeout=1)
