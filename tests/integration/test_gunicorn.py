"""The proxy as the README runs it: `flask --app aivonx init`, then gunicorn with gevent workers."""

import time

import ollama
import pytest
import redis
import requests

from tests.conftest import BACKEND, REDIS_URL


@pytest.fixture
def gunicorn_proxy(start_gunicorn, two_nodes):
    proxy = start_gunicorn(*two_nodes)
    assert proxy.init_output.count("added node") == 2
    return proxy.url, proxy.process


def test_gunicorn_gevent_serves_streams_incrementally_and_fails_over(gunicorn_proxy, two_nodes, redis_prefix):
    url, _process = gunicorn_proxy
    first, _second = two_nodes
    for node in two_nodes:
        node.chunk_delay = 0.2
    client = ollama.Client(host=url)
    started = time.monotonic()
    arrivals = [time.monotonic() - started for _ in client.generate(model="llama3", prompt="x", stream=True)]
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 0.6
    first.stop()
    for _ in range(4):
        assert client.chat(model="llama3", messages=[{"role": "user", "content": "x"}]).message.content
    assert requests.get(url + "/api/version").json()["version"] == "0.6.5"
    if BACKEND == "postgres":
        # Every worker's counter hash (their leases are live): all back to 0.
        client = redis.Redis.from_url(REDIS_URL)
        hashes = [client.hgetall(key) for key in client.smembers(f"{redis_prefix}procs")]
        assert len(hashes) == 2 and all(h[b"epoch"] for h in hashes)
        assert all(int(v) == 0 for h in hashes for k, v in h.items() if k != b"epoch")


def test_gunicorn_releases_and_cancels_when_the_client_disconnects(gunicorn_proxy, two_nodes):
    url, _process = gunicorn_proxy
    for node in two_nodes:
        node.chunk_delay = 0.05
        node.tokens = [f"t{i}" for i in range(200)]
    response = requests.post(url + "/api/generate", json={"model": "llama3", "prompt": "long"}, stream=True)
    next(response.iter_content(chunk_size=None))
    response.close()
    deadline = time.monotonic() + 5
    while sum(node.disconnects for node in two_nodes) < 1:
        assert time.monotonic() < deadline, "the node kept generating after the client left"
        time.sleep(0.05)
    assert sum(node.completed_streams for node in two_nodes) == 0
