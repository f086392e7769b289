"""The proxy as the README runs it: `flask --app aivonx init`, then gunicorn with gevent workers."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import ollama
import pytest
import redis
import requests

from tests.conftest import BACKEND, REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn_proxy(database_url, redis_prefix, two_nodes, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "AIVONX_DATABASE_URL": database_url,
        "AIVONX_NODES": ",".join(node.url for node in two_nodes),
        "AIVONX_BIND": f"127.0.0.1:{port}",
        "AIVONX_STANDBY_INTERVAL": "0.5",
        "AIVONX_WORKERS": "2" if BACKEND == "postgres" else "1",
        "AIVONX_GRACEFUL_TIMEOUT": "5",
    }
    if BACKEND == "postgres":
        env.update(AIVONX_REDIS_URL=REDIS_URL, AIVONX_REDIS_PREFIX=redis_prefix)
    init = subprocess.run(
        [BIN / "flask", "--app", "aivonx", "init"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert init.returncode == 0, init.stderr
    assert init.stdout.count("added node") == 2
    with open(tmp_path / "gunicorn.log", "w+") as log:
        yield from run_gunicorn(env, port, log, tmp_path)


def run_gunicorn(env, port, log, tmp_path):
    process = subprocess.Popen(
        [BIN / "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/api/tags", timeout=1).json()["models"]:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
            assert time.monotonic() < deadline, "gunicorn did not get ready"
            time.sleep(0.2)
        yield url, process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
        counters = redis.Redis.from_url(REDIS_URL).hgetall(f"{redis_prefix}active")
        assert counters and all(int(v) == 0 for v in counters.values())


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
