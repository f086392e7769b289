"""Two proxy instances as production runs them: gunicorn, two gevent workers each, sharing
PostgreSQL and Redis. Four processes must behave as one proxy: one health check per interval,
exact shared counters, configuration changes live everywhere within the sync interval, and
least_active balancing on the cluster-wide counts.

Only meaningful with shared state, so `postgres_only` deselects these on the sqlite backend.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
import requests

from aivonx.proxy.state import RedisState
from tests.conftest import REDIS_URL, GunicornProxy
from tests.fake_ollama import FakeOllama

pytestmark = [pytest.mark.postgres_only, pytest.mark.timeout(180)]

SECRET = "many-instances-secret-0123456789abcdef"
PASSWORD = "many-instances-password"
SETTINGS = {"AIVONX_SECRET_KEY": SECRET, "AIVONX_ADMIN_PASSWORD": PASSWORD, "AIVONX_WORKERS": "2"}


def wait_for(condition: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> float:
    """Seconds until `condition()` held; fails the test after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def admin_headers(instance: GunicornProxy) -> dict[str, str]:
    response = requests.post(
        instance.url + "/api/account/login", json={"username": "admin", "password": PASSWORD}, timeout=10
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access']}"}


def shared_counters(prefix: str, node_ids: list[int]) -> dict[int, int]:
    """The active-request counters as Redis holds them, read by a fresh RedisState of this test's
    own (no local counts of its own): what every process sees."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return RedisState(client, prefix).active_counts(node_ids)
    finally:
        client.close()


def api_active_total(instance: GunicornProxy, headers: dict[str, str]) -> int:
    response = requests.get(instance.url + "/api/proxy/active-requests", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["total"]


def generate(url: str, *, stream: bool, model: str = "llama3", timeout: float = 60) -> tuple[int, str]:
    """One request on a fresh connection (so gunicorn spreads them over its workers).

    Returns the status and, on success, the text the node generated; a stream counts only
    when its last line says done.
    """
    body = {"model": model, "prompt": "hi", "stream": stream}
    response = requests.post(url + "/api/generate", json=body, timeout=timeout)
    if response.status_code != 200:
        return response.status_code, response.text
    if not stream:
        return 200, response.json()["response"]
    lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    if not lines or not lines[-1].get("done"):
        return 599, f"stream did not end with done: {response.text[-200:]!r}"
    return 200, "".join(line.get("response", "") for line in lines)


@pytest.fixture
def two_instances(
    start_gunicorn: Callable[..., GunicornProxy], two_nodes: tuple[FakeOllama, FakeOllama]
) -> tuple[GunicornProxy, GunicornProxy]:
    a = start_gunicorn(*two_nodes, **SETTINGS)
    b = start_gunicorn(*two_nodes, **SETTINGS)
    return a, b


def test_health_check_runs_once_per_interval_across_four_workers(
    start_gunicorn: Callable[..., GunicornProxy], two_nodes: tuple[FakeOllama, FakeOllama]
) -> None:
    interval = 2.0
    settings = {**SETTINGS, "AIVONX_HEALTH_INTERVAL": str(interval)}
    start_gunicorn(*two_nodes, **settings)
    start_gunicorn(*two_nodes, **settings)
    time.sleep(1.5)  # let every worker's first tick pass
    for node in two_nodes:
        node.clear()
    window = 12.0
    time.sleep(window)
    probes = [node.count("/api/version") for node in two_nodes]
    # A tick may take a node that falls due within half a tick, so one node is probed every
    # 1.5 to 2 s: 6 to 8 probes in the window. Four workers each probing on their own would
    # make about 4 * 6 = 24. The bounds leave room for a loaded machine's late ticks.
    expected = window / interval
    print(f"probes per node in {window:g}s at interval {interval:g}s: {probes} (expected about {expected:g})")
    for count in probes:
        assert 0.5 * expected <= count <= 1.5 * window / (interval - 0.5), probes


def test_500_concurrent_requests_across_instances_leave_exact_counters(
    two_instances: tuple[GunicornProxy, GunicornProxy],
    two_nodes: tuple[FakeOllama, FakeOllama],
    redis_prefix: str,
) -> None:
    a, b = two_instances
    headers = admin_headers(a)
    for node in two_nodes:
        node.first_byte_delay = 1.0  # so the requests overlap instead of finishing one by one
        node.max_recorded = 100
    total = 500
    barrier = threading.Barrier(total)
    peak = 0
    done = threading.Event()

    def watch_peak() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(node.active for node in two_nodes))
            time.sleep(0.02)

    def one(index: int) -> tuple[int, str]:
        barrier.wait(60)
        url = (a, b)[index % 2].url
        try:
            return generate(url, stream=index % 4 < 2)
        except requests.RequestException as exc:
            return 0, repr(exc)

    watcher = threading.Thread(target=watch_peak, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=total) as pool:
            results = list(pool.map(one, range(total)))
    finally:
        done.set()
        watcher.join(5)
    elapsed = time.monotonic() - started

    failed = [result for result in results if result[0] != 200]
    assert not failed, f"{len(failed)} of {total} failed, e.g. {failed[:3]}"
    assert all(text == "Hello, world!" for _, text in results)
    served = [node.count("/api/generate") for node in two_nodes]
    assert sum(served) == total, served  # no request was sent twice (nothing failed over)
    print(f"{total} requests in {elapsed:.1f}s, peak in flight {peak}, per node {served}")
    assert peak >= 100, f"the requests hardly overlapped (peak {peak}); the test proves little"

    # Every acquire had its release, in Redis and as both instances report it.
    assert shared_counters(redis_prefix, [1, 2]) == {1: 0, 2: 0}
    assert api_active_total(a, headers) == 0
    assert api_active_total(b, headers) == 0


def test_node_added_on_one_instance_is_used_by_the_other_within_a_second(
    two_instances: tuple[GunicornProxy, GunicornProxy], fake_nodes: Callable[..., FakeOllama]
) -> None:
    a, b = two_instances
    headers = admin_headers(a)
    new_node = fake_nodes("phi3:mini", name="new")
    assert generate(b.url, stream=False, model="phi3:mini")[0] == 404

    added = requests.post(
        a.url + "/api/proxy/nodes", json={"name": "new", "base_url": new_node.url}, headers=headers, timeout=10
    )
    assert added.status_code == 201 and added.json()["pool"] == "active", added.text
    added_at = time.monotonic()

    def every_worker_of_b_routes_it() -> bool:
        # Four fresh connections: both workers of B take some of them.
        return all(generate(b.url, stream=False, model="phi3:mini", timeout=10)[0] == 200 for _ in range(4))

    wait_for(every_worker_of_b_routes_it, timeout=10, step=0.01)
    delay = time.monotonic() - added_at
    print(f"node added on A served by B after {delay:.2f}s")
    # The sync interval is 1 s (measured: 0.9 s); the rest is margin for a shared, loaded machine.
    assert delay < 2.0, delay
    assert new_node.count("/api/generate") >= 4


def test_least_active_balances_on_cluster_wide_counts(
    two_instances: tuple[GunicornProxy, GunicornProxy],
    two_nodes: tuple[FakeOllama, FakeOllama],
    redis_prefix: str,
) -> None:
    a, b = two_instances
    first, second = two_nodes
    for node in two_nodes:
        node.first_byte_delay = 4.0
        node.clear()

    # One request at a time, alternating instances, each held open at its node: every pick
    # sees the others' requests only through the shared counters. Per-process counts would
    # see zero on both nodes each time and could put all of them on one node.
    held = 8
    results: list[Any] = []
    threads = []
    for index in range(held):
        url = (a, b)[index % 2].url
        thread = threading.Thread(target=lambda url=url: results.append(generate(url, stream=False)), daemon=True)
        thread.start()
        threads.append(thread)
        wait_for(lambda index=index: first.active + second.active == index + 1, timeout=10)
    split = (first.count("/api/generate"), second.count("/api/generate"))
    assert split == (held // 2, held // 2), split
    for thread in threads:
        thread.join(30)
    assert [status for status, _ in results] == [200] * held

    # Many at once through both instances: near even.
    for node in two_nodes:
        node.first_byte_delay = 0.5
        node.clear()
    total = 80
    with ThreadPoolExecutor(max_workers=total) as pool:
        statuses = list(pool.map(lambda i: generate((a, b)[i % 2].url, stream=i % 2 == 0)[0], range(total)))
    assert statuses == [200] * total
    split = (first.count("/api/generate"), second.count("/api/generate"))
    print(f"concurrent split over two nodes: {split}")
    assert min(split) >= 0.4 * total, split
    assert shared_counters(redis_prefix, [1, 2]) == {1: 0, 2: 0}
