"""Failover before the first byte, never after; passive and active health; exact counters."""

import json
import socket
import time

import ollama
import pytest
import requests

from aivonx.proxy.types import ACTIVE, STANDBY


def wait_until(condition, timeout=5.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


def served_by(node, path="/api/generate"):
    return node.count(path)


@pytest.mark.parametrize("fault", ["stopped", "error500", "reset", "busy503"])
def test_client_succeeds_when_one_node_fails_before_the_first_byte(proxy, two_nodes, fault):
    bad, _good = two_nodes
    if fault == "stopped":
        bad.stop()
    else:
        bad.mode = fault
    client = ollama.Client(host=proxy.url)
    for _ in range(4):
        assert client.generate(model="llama3", prompt="hi", stream=False).response == "Hello, world!"
        parts = list(client.chat(model="llama3", messages=[{"role": "user", "content": "x"}], stream=True))
        assert parts[-1].done
    # The failing node went to standby on its first failure, so it was tried at most once.
    assert proxy.manager.pool_of(proxy.manager.node(1)) == STANDBY
    assert served_by(bad) + served_by(bad, "/api/chat") <= 1
    assert proxy.active_total() == 0


def test_node_hanging_past_the_first_byte_timeout_fails_over(make_proxy, two_nodes):
    bad, good = two_nodes
    proxy = make_proxy(bad, good, AIVONX_FIRST_BYTE_TIMEOUT=0.5)
    bad.mode = "hang"
    client = ollama.Client(host=proxy.url)
    started = time.monotonic()
    for _ in range(3):
        assert client.generate(model="llama3", prompt="hi", stream=False).done
    assert time.monotonic() - started < 3
    assert proxy.manager.status(1).last_error == "no response within 0.5s"
    assert proxy.active_total() == 0


def test_slow_first_byte_within_the_timeout_succeeds_without_failover(make_proxy, fake_nodes):
    node = fake_nodes()
    node.first_byte_delay = 1.0
    proxy = make_proxy(node, AIVONX_FIRST_BYTE_TIMEOUT=3.0)
    result = ollama.Client(host=proxy.url).generate(model="llama3", prompt="hi", stream=False)
    assert result.done
    assert proxy.manager.pool_of(proxy.manager.node(1)) == ACTIVE


def test_death_mid_stream_ends_with_an_error_line_and_is_not_retried(proxy, two_nodes):
    for node in two_nodes:
        node.mode = "die_midstream"
        node.die_after_chunks = 2
    response = requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x"}, stream=True)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.iter_lines() if line]
    assert len(lines) == 3
    assert lines[0]["done"] is False and lines[1]["done"] is False
    assert "failed mid-stream" in lines[-1]["error"]
    # Only one node saw the request: bytes had reached the client, so no retry.
    assert sum(served_by(node) for node in two_nodes) == 1
    assert proxy.active_total() == 0


def test_openai_stream_failure_ends_with_an_sse_error_event(proxy, two_nodes):
    for node in two_nodes:
        node.mode = "die_midstream"
    body = {"model": "llama3", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    response = requests.post(proxy.url + "/v1/chat/completions", json=body, stream=True)
    events = [line for line in response.iter_lines() if line.startswith(b"data: ")]
    last = json.loads(events[-1][len(b"data: ") :])
    assert "failed mid-stream" in last["error"]["message"]
    assert proxy.active_total() == 0


def test_ollama_client_raises_on_the_error_line(proxy, two_nodes):
    for node in two_nodes:
        node.mode = "die_midstream"
    with pytest.raises(ollama.ResponseError, match="failed mid-stream"):
        list(ollama.Client(host=proxy.url).generate(model="llama3", prompt="x", stream=True))


def test_all_nodes_down_is_a_fast_clear_error(proxy, two_nodes):
    for node in two_nodes:
        node.stop()
    started = time.monotonic()
    response = requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x"})
    assert time.monotonic() - started < 2
    assert response.status_code == 502
    assert "no node could serve model 'llama3'" in response.json()["error"]
    assert "connection refused" in response.json()["error"]
    # Now both are on standby: the next request is refused without trying.
    again = requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x"})
    assert again.status_code == 503
    assert again.json() == {"error": "no healthy node has model 'llama3'"}
    assert again.headers["Retry-After"] == "5"
    assert proxy.active_total() == 0


def test_last_node_answering_500_passes_the_error_through(make_proxy, fake_nodes):
    node = fake_nodes()
    proxy = make_proxy(node)
    node.mode = "error500"
    response = requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "x", "stream": False})
    assert response.status_code == 500
    assert "error" in response.json()
    # One bad answer does not eject the only node that has the model.
    assert proxy.manager.pool_of(proxy.manager.node(1)) == ACTIVE


def test_counters_return_to_zero_after_success_errors_and_disconnects(make_proxy, fake_nodes):
    node = fake_nodes(tokens=[f"t{i} " for i in range(50)])
    node.chunk_delay = 0.05
    proxy = make_proxy(node)
    # A client that reads two chunks of a long stream and hangs up.
    with socket.create_connection(("127.0.0.1", int(proxy.url.rsplit(":", 1)[1]))) as sock:
        body = json.dumps({"model": "llama3", "prompt": "long"}).encode()
        head = f"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
        sock.sendall(head.encode() + body)
        sock.recv(200)
        assert proxy.active_total() == 1
    assert wait_until(lambda: proxy.active_total() == 0)
    # The node noticed the disconnect: the proxy closed its upstream stream too.
    assert wait_until(lambda: node.disconnects == 1)
    ollama.Client(host=proxy.url).generate(model="llama3", prompt="x", stream=False)
    with pytest.raises(ollama.ResponseError):
        ollama.Client(host=proxy.url).generate(model="unknown", prompt="x")
    assert proxy.active_total() == 0


def test_health_moves_nodes_between_pools(make_proxy, two_nodes):
    first, second = two_nodes
    proxy = make_proxy(first, second)
    proxy.runtime.start()
    node = proxy.manager.node(1)
    first.stop()
    proxy.runtime.check_now([node])
    assert proxy.manager.pool_of(node) == STANDBY
    first.restart()
    # The standby interval is 0.5 s in tests: the scheduled job brings it back by itself.
    assert wait_until(lambda: proxy.manager.pool_of(node) == ACTIVE, timeout=5)
    assert proxy.manager.status(1).last_error is None


def test_passive_failure_is_restored_by_the_active_check(make_proxy, two_nodes):
    first, second = two_nodes
    proxy = make_proxy(first, second)
    proxy.runtime.start()
    first.mode = "reset"
    client = ollama.Client(host=proxy.url)
    for _ in range(3):
        client.generate(model="llama3", prompt="x", stream=False)
    first.mode = "ok"
    assert wait_until(lambda: proxy.manager.pool_of(proxy.manager.node(1)) == ACTIVE, timeout=5)
    first.clear()
    for _ in range(4):
        client.generate(model="llama3", prompt="x", stream=False)
    assert served_by(first) >= 1
