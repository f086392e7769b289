"""Dashboard statistics: the histogram arithmetic, GET /api/proxy/stats on a running proxy,
and the totals of several gunicorn workers (sharing Redis in the postgres run)."""

import time

import requests

from aivonx import stats
from aivonx.stats import DashboardStats, MemoryBackend, RedisBackend, counts_of, percentile
from tests.conftest import BACKEND, DEFAULT_PASSWORD
from tests.integration.api.helpers import assert_problem, headers_for
from tests.integration.test_failover import wait_until


def entry(status=200, duration=80.0, first_byte=20.0, **extra):
    return {"status": status, "duration_ms": duration, "first_byte_ms": first_byte, **extra}


def test_percentiles_from_fixed_buckets():
    histogram = [0] * (len(stats.LATENCY_BOUNDS_MS) + 1)
    assert percentile(histogram, 0.5) is None
    histogram[stats.latency_bucket(80)] = 100  # all in (50, 100]
    assert percentile(histogram, 0.5) == 75.0
    assert 50 < percentile(histogram, 0.95) <= 100
    histogram[stats.latency_bucket(10**9)] = 100  # slower than the last bound
    assert percentile(histogram, 0.95) == stats.LATENCY_BOUNDS_MS[-1]


def test_counts_and_window():
    now = [1_000_000.0]
    dashboard = DashboardStats(MemoryBackend(), clock=lambda: now[0])
    for _ in range(8):
        dashboard.request_finished(entry())
    dashboard.request_finished(entry(status=503, first_byte=None))
    dashboard.request_finished(entry(status=200, error="node died mid-stream"))
    dashboard.request_finished(entry(status=404, duration=2.0, first_byte=1.0))
    snapshot = dashboard.snapshot()
    assert snapshot["requests"] == 11 and snapshot["errors"] == 2 and snapshot["client_errors"] == 1
    assert snapshot["requests_per_minute"] == round(11 * 60 / stats.SUMMARY_SECONDS, 2)
    assert 50 < snapshot["latency_ms"]["p50"] <= 100 and 10 < snapshot["first_byte_ms"]["p50"] <= 25
    assert sum(point["requests"] for point in snapshot["series"]) == 11
    assert len(snapshot["series"]) == stats.SERIES_SECONDS // stats.SERIES_STEP
    now[0] += stats.SUMMARY_SECONDS + stats.BUCKET_SECONDS  # out of the totals, still in the chart
    later = dashboard.snapshot()
    assert later["requests"] == 0 and later["latency_ms"]["p50"] is None
    assert sum(point["requests"] for point in later["series"]) == 11
    assert counts_of({"status": None}) == {"n": 1, "err": 1}


def test_redis_buckets_add_up_and_expire(redis_client, redis_prefix):
    now = [2_000_000.0]
    first = DashboardStats(RedisBackend(redis_client, redis_prefix), clock=lambda: now[0])
    second = DashboardStats(RedisBackend(redis_client, redis_prefix), clock=lambda: now[0])
    first.request_finished(entry())
    second.request_finished(entry(status=500))
    assert first.snapshot()["requests"] == 2 and second.snapshot()["errors"] == 1
    keys = list(redis_client.scan_iter(f"{redis_prefix}stats:*"))
    assert len(keys) == 1 and 0 < redis_client.ttl(keys[0]) <= stats.KEY_TTL


def test_stats_endpoint_counts_proxied_requests(make_proxy, fake_nodes):
    node = fake_nodes("llama3:latest")
    proxy = make_proxy(node)
    client = proxy.app.test_client()
    assert_problem(client.get("/api/proxy/stats"), 401)
    headers = headers_for(proxy.app, "viewer")
    for _ in range(4):
        requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "hi"}, timeout=10)
    node.mode = "error500"
    requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "hi"}, timeout=10)

    def current():
        return client.get("/api/proxy/stats", headers=headers).get_json()

    assert wait_until(lambda: current()["requests"] == 5, timeout=5)
    snapshot = current()
    assert snapshot["errors"] == 1
    assert snapshot["latency_ms"]["p50"] is not None and snapshot["first_byte_ms"]["p95"] is not None
    assert snapshot["shared"] is (BACKEND == "postgres")


def test_totals_of_every_gunicorn_worker(start_gunicorn, fake_nodes):
    """Two workers sharing Redis in the postgres run: whichever answers counts them all."""
    proxy = start_gunicorn(fake_nodes("llama3:latest"), AIVONX_ADMIN_PASSWORD=DEFAULT_PASSWORD)
    token = requests.post(
        proxy.url + "/api/account/login", json={"username": "admin", "password": DEFAULT_PASSWORD}, timeout=10
    ).json()["access"]
    auth = {"Authorization": f"Bearer {token}"}
    # start_gunicorn's readiness checks were proxied requests too.
    already = requests.get(proxy.url + "/api/proxy/stats", headers=auth, timeout=10).json()["requests"]
    sent = 30
    with requests.Session() as session:
        for _ in range(sent):
            # A new connection each time, so gunicorn spreads the requests over its workers.
            response = requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "hi"}, timeout=10)
            assert response.status_code == 200
        deadline = time.monotonic() + 10
        while True:
            answers = [
                session.get(proxy.url + "/api/proxy/stats", headers=auth, timeout=10).json()["requests"] - already
                for _ in range(4)
            ]
            if answers == [sent] * 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert answers == [sent] * 4
