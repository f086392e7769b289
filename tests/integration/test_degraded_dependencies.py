"""Redis or PostgreSQL going away must degrade the proxy, not stop it.

The shared servers stay up (other tests use them): Redis and PostgreSQL are reached through a
`TcpFaultProxy` that the test cuts and restores, and the "Redis restarted empty" case uses a
private `redis-server` on a free port, killed and restarted by its PID.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import requests
import sqlalchemy as sa
from flask import Flask

from aivonx.proxy.state import RedisState
from aivonx.proxy.types import ACTIVE, STANDBY
from aivonx.runtime import Runtime, get_runtime
from tests.conftest import DEFAULT_PASSWORD, REDIS_URL, RunningProxy, create_user, free_port
from tests.fake_ollama import FakeOllama
from tests.tcp_fault import TcpFaultProxy

pytestmark = pytest.mark.timeout(120)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not met within {timeout}s"
        time.sleep(0.05)


def generate(url: str, *, stream: bool, timeout: float = 30) -> tuple[int, str]:
    """Status and generated text; a stream counts only when it ended with `done` (no error line)."""
    response = requests.post(
        url + "/api/generate", json={"model": "llama3", "prompt": "x", "stream": stream}, timeout=timeout
    )
    if response.status_code != 200:
        return response.status_code, response.text
    if not stream:
        return 200, response.json()["response"]
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    if not lines or not lines[-1].get("done") or any("error" in line for line in lines):
        return 599, response.text[-300:]
    return 200, "".join(line["response"] for line in lines)


def burst(url: str, count: int = 20, concurrency: int = 5) -> list[tuple[int, str]]:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda i: generate(url, stream=i % 2 == 0), range(count)))


def shared_counters(client: redis.Redis, prefix: str, node_ids: list[int]) -> dict[int, int]:
    """The counters as Redis holds them, read by a fresh RedisState (no local counts of its own)."""
    return RedisState(client, prefix).active_counts(node_ids)


class SlowStream:
    """A streaming request held open in a thread (the node sends one token per `chunk_delay`)."""

    def __init__(self, url: str) -> None:
        self.result: tuple[int, str] | None = None
        self.thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self.thread.start()

    def _run(self, url: str) -> None:
        self.result = generate(url, stream=True)

    def join(self) -> tuple[int, str]:
        self.thread.join(30)
        assert self.result is not None, "the stream did not finish"
        return self.result


@pytest.fixture
def redis_fault() -> Iterator[TcpFaultProxy]:
    port = redis.connection.parse_url(REDIS_URL).get("port", 6379)
    with TcpFaultProxy(int(port)) as fault:
        yield fault


def faulted_redis_url(fault: TcpFaultProxy) -> str:
    return f"redis://127.0.0.1:{fault.port}/0"


def started_runtime(app: Flask) -> Runtime:
    runtime = get_runtime(app)
    runtime.start()  # sync every AIVONX_SYNC_INTERVAL (0.2 s here) and health ticks, as in a worker
    return runtime


# -- Redis down, then back with its data ----------------------------------------------------------


def test_redis_outage_keeps_proxying_and_state_resynchronises(
    make_proxy: Callable[..., RunningProxy],
    make_app: Callable[..., Flask],
    two_nodes: tuple[FakeOllama, FakeOllama],
    redis_fault: TcpFaultProxy,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    first_node, second_node = two_nodes
    shared = {"AIVONX_REDIS_URL": faulted_redis_url(redis_fault)}
    proxy = make_proxy(*two_nodes, **shared)
    started_runtime(proxy.app)
    other = started_runtime(make_app(**shared))  # a second process's view of the shared state
    wait_until(lambda: len(other.manager.active_nodes()) == 2, what="the other process sees both nodes")
    assert burst(proxy.url) == [(200, "Hello, world!")] * 20

    # A stream that starts before the outage and ends during it: its release is owed to Redis.
    for node in two_nodes:
        node.chunk_delay = 0.3
    slow = SlowStream(proxy.url)
    wait_until(lambda: first_node.active + second_node.active == 1, what="the slow stream reached a node")
    redis_fault.cut()
    for node in two_nodes:
        node.chunk_delay = 0.0

    # Proxying goes on with per-process state, also failing over from a node that dies now
    # (the one not serving the slow stream).
    victim, victim_id = (second_node, 2) if first_node.active else (first_node, 1)
    victim.stop()
    results = burst(proxy.url, count=30)
    assert results == [(200, "Hello, world!")] * 30, [r for r in results if r[0] != 200][:3]
    assert slow.join() == (200, "Hello, world!")
    assert proxy.manager.pool_of(proxy.manager.node(victim_id)) == STANDBY

    redis_fault.restore()
    # Counters: what was counted or released during the outage reaches Redis, so Redis and
    # both processes read exactly 0.
    wait_until(lambda: shared_counters(redis_client, redis_prefix, [1, 2]) == {1: 0, 2: 0}, what="counters at 0")
    wait_until(lambda: proxy.active_total() == 0, what="this process reads 0")
    wait_until(lambda: other.manager.state.active_counts([1, 2]) == {1: 0, 2: 0}, what="the other process reads 0")
    # Statuses: the node that died during the outage is standby for the other process too...
    wait_until(lambda: other.manager.pool_of(other.manager.node(victim_id)) == STANDBY, what="standby everywhere")
    # ...and when it comes back, both processes route to it again.
    victim.start()
    wait_until(
        lambda: all(rt.manager.pool_of(rt.manager.node(victim_id)) == ACTIVE for rt in (proxy.runtime, other)),
        what="the node active again everywhere",
    )
    assert burst(proxy.url) == [(200, "Hello, world!")] * 20
    assert shared_counters(redis_client, redis_prefix, [1, 2]) == {1: 0, 2: 0}


def test_redis_gone_silent_costs_requests_no_more_than_its_timeouts(
    make_proxy: Callable[..., RunningProxy],
    two_nodes: tuple[FakeOllama, FakeOllama],
    redis_fault: TcpFaultProxy,
    redis_client: redis.Redis,
    redis_prefix: str,
) -> None:
    """Redis's host vanished without a word: connections hang instead of being refused. Once the
    process noticed (a client timeout), requests must stop waiting on Redis."""
    proxy = make_proxy(*two_nodes, AIVONX_REDIS_URL=faulted_redis_url(redis_fault))
    started_runtime(proxy.app)
    assert burst(proxy.url, count=10) == [(200, "Hello, world!")] * 10

    redis_fault.blackhole()
    started = time.monotonic()
    durations = []
    for index in range(20):
        began = time.monotonic()
        assert generate(proxy.url, stream=index % 2 == 0) == (200, "Hello, world!")
        durations.append(time.monotonic() - began)
    total = time.monotonic() - started
    print(f"20 requests with Redis silent: {total:.1f}s, slowest {max(durations):.1f}s, last ten {durations[-10:]}")
    # The first request may wait out the Redis client's timeouts (1 s connect, 2 s read, one retry).
    assert max(durations[-10:]) < 1.0, durations
    assert total < 20, durations

    redis_fault.restore()
    wait_until(lambda: shared_counters(redis_client, redis_prefix, [1, 2]) == {1: 0, 2: 0}, what="counters at 0")
    wait_until(lambda: proxy.active_total() == 0, what="this process reads 0")


# -- Redis restarted, empty ---------------------------------------------------------------------


class PrivateRedis:
    """A redis-server of this test's own on a free port, killed and restarted by PID."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            wait_until(lambda: self._pings(client), timeout=10, what="redis-server answers")
        finally:
            client.close()

    def _pings(self, client: redis.Redis) -> bool:
        assert self.process is not None and self.process.poll() is None, "redis-server exited"
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self.process = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_redis_restarted_empty_keeps_proxying(
    make_proxy: Callable[..., RunningProxy], two_nodes: tuple[FakeOllama, FakeOllama], private_redis: PrivateRedis
) -> None:
    """A process must not take the restarted Redis's empty status hash for the truth: if it did,
    every node would count as unchecked (its models unknown) and requests would get 404 'model
    not found' until the next health tick had probed every node again."""
    proxy = make_proxy(*two_nodes, AIVONX_REDIS_URL=private_redis.url)
    started_runtime(proxy.app)
    assert burst(proxy.url, count=10) == [(200, "Hello, world!")] * 10

    private_redis.kill()
    during = burst(proxy.url, count=10)
    private_redis.start()  # same port, no data
    # Requests right after the restart: each sync (every 0.2 s) has seen the empty Redis.
    after = []
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        after.append(generate(proxy.url, stream=False))
    assert during == [(200, "Hello, world!")] * 10
    assert [r for r in after if r[0] != 200] == [], f"{sum(r[0] != 200 for r in after)} of {len(after)} failed"


def test_redis_restarted_empty_leaves_exact_counters(
    make_proxy: Callable[..., RunningProxy], two_nodes: tuple[FakeOllama, FakeOllama], private_redis: PrivateRedis
) -> None:
    """A request counted before Redis restarted empty and released after: a plain HINCRBY -1 on
    the new, empty hash would leave its node at -1 for good."""
    first_node, second_node = two_nodes
    proxy = make_proxy(*two_nodes, AIVONX_REDIS_URL=private_redis.url)
    started_runtime(proxy.app)
    for node in two_nodes:
        node.chunk_delay = 0.3
    slow = SlowStream(proxy.url)
    wait_until(lambda: first_node.active + second_node.active == 1, what="the slow stream reached a node")
    private_redis.kill()
    private_redis.start()
    for node in two_nodes:
        node.chunk_delay = 0.0
    assert slow.join() == (200, "Hello, world!")
    time.sleep(1.0)  # a few syncs (every 0.2 s): whatever resynchronises has done so by now
    client = redis.Redis.from_url(private_redis.url)
    try:
        counters = shared_counters(client, proxy.app.config["AIVONX_REDIS_PREFIX"], [1, 2])
    finally:
        client.close()
    assert counters == {1: 0, 2: 0}
    assert proxy.active_total() == 0


# -- PostgreSQL down ---------------------------------------------------------------------------


@pytest.mark.postgres_only
def test_postgres_outage_keeps_proxying_and_management_writes_get_503(
    make_proxy: Callable[..., RunningProxy], fake_nodes: Callable[..., FakeOllama], database_url: str
) -> None:
    real = sa.engine.make_url(database_url)
    with TcpFaultProxy(real.port or 5432, real.host or "127.0.0.1") as fault:
        url = real.set(host="127.0.0.1", port=fault.port).render_as_string(hide_password=False)
        node, spare = fake_nodes(name="node-a"), fake_nodes("phi3:mini", name="spare")
        proxy = make_proxy(node, SQLALCHEMY_DATABASE_URI=url)
        started_runtime(proxy.app)
        create_user(proxy.app, "operator")
        login = requests.post(
            proxy.url + "/api/account/login", json={"username": "operator", "password": DEFAULT_PASSWORD}, timeout=10
        )
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access']}"}

        fault.cut()
        time.sleep(1.0)  # several config syncs fail meanwhile: the cached node list stays
        assert burst(proxy.url) == [(200, "Hello, world!")] * 20
        assert requests.get(proxy.url + "/api/tags", timeout=10).json()["models"]

        started = time.monotonic()
        added = requests.post(
            proxy.url + "/api/proxy/nodes", json={"name": "spare", "base_url": spare.url}, headers=auth, timeout=30
        )
        assert time.monotonic() - started < 5, "a management write waited long on the dead database"
        assert added.status_code == 503, added.text
        assert added.headers["Content-Type"] == "application/problem+json"
        problem = added.json()
        assert problem["status"] == 503 and "database" in problem["detail"].lower(), problem
        assert "Retry-After" in added.headers
        listed = requests.get(proxy.url + "/api/proxy/nodes", headers=auth, timeout=30)
        assert listed.status_code == 503 and listed.headers["Content-Type"] == "application/problem+json"

        fault.restore()
        # The pool's dead connections are noticed (pre-ping) and the write goes through.
        added = requests.post(
            proxy.url + "/api/proxy/nodes", json={"name": "spare", "base_url": spare.url}, headers=auth, timeout=30
        )
        assert added.status_code == 201, added.text
        phi3 = {"model": "phi3:mini", "prompt": "x", "stream": False}
        wait_until(
            lambda: requests.post(proxy.url + "/api/generate", json=phi3, timeout=10).status_code == 200,
            what="the node added after the outage is routable",
        )


@pytest.mark.postgres_only
def test_postgres_host_gone_silent_gives_503_within_the_connect_timeout(
    make_proxy: Callable[..., RunningProxy], fake_nodes: Callable[..., FakeOllama], database_url: str
) -> None:
    """A database host that vanished without a word (connections accepted, never answered):
    without a connect timeout a management request would wait for the OS's TCP timeout."""
    real = sa.engine.make_url(database_url)
    with TcpFaultProxy(real.port or 5432, real.host or "127.0.0.1") as fault:
        url = real.set(host="127.0.0.1", port=fault.port).render_as_string(hide_password=False)
        proxy = make_proxy(fake_nodes(), SQLALCHEMY_DATABASE_URI=url)
        started_runtime(proxy.app)
        create_user(proxy.app, "operator")
        login = requests.post(
            proxy.url + "/api/account/login", json={"username": "operator", "password": DEFAULT_PASSWORD}, timeout=10
        )
        auth = {"Authorization": f"Bearer {login.json()['access']}"}

        fault.blackhole()
        assert burst(proxy.url) == [(200, "Hello, world!")] * 20
        started = time.monotonic()
        response = requests.patch(
            proxy.url + "/api/proxy/config", json={"strategy": "round_robin"}, headers=auth, timeout=60
        )
        elapsed = time.monotonic() - started
        print(f"management write answered {response.status_code} after {elapsed:.1f}s")
        assert response.status_code == 503, response.text
        assert response.headers["Content-Type"] == "application/problem+json"
        # DATABASE_CONNECT_TIMEOUT is 3 s; a pre-ping and one reconnect may both wait it out.
        assert elapsed < 10, elapsed

        fault.restore()
        response = requests.patch(
            proxy.url + "/api/proxy/config", json={"strategy": "round_robin"}, headers=auth, timeout=30
        )
        assert response.status_code == 200, response.text
