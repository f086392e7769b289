"""RedisState against the real Redis server, and MemoryState, through the same checks."""

import threading

import pytest
import redis

from aivonx.extensions import connect_redis
from aivonx.proxy.state import MemoryState, RedisState
from aivonx.proxy.types import NodeStatus
from tests.conftest import REDIS_URL


@pytest.fixture(params=["memory", "redis"])
def state(request, redis_prefix):
    if request.param == "memory":
        return MemoryState()
    return RedisState(redis.Redis.from_url(REDIS_URL), redis_prefix)


def test_counters_are_exact_under_concurrency(state):
    def work():
        for _ in range(200):
            shared = state.incr(7)
            state.decr(7, shared)

    threads = [threading.Thread(target=work) for _ in range(8)]
    held = state.incr(7)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.active_counts([7, 8]) == {7: 1, 8: 0}
    state.decr(7, held)
    assert state.active_counts([7]) == {7: 0}


def test_statuses_are_shared_between_processes(redis_prefix):
    first = RedisState(redis.Redis.from_url(REDIS_URL), redis_prefix)
    second = RedisState(redis.Redis.from_url(REDIS_URL), redis_prefix)
    second.refresh()
    first.put_status(NodeStatus(1, healthy=True, models=({"name": "m:latest"},), latency_ms=3.5))
    assert second.statuses() == {}
    generation = second.generation
    assert second.refresh() is True
    assert second.generation > generation
    assert second.statuses()[1].healthy and second.statuses()[1].latency_ms == 3.5
    assert second.refresh() is False  # nothing new: no reload
    shared = first.incr(1)
    assert second.active_counts([1]) == {1: 1}
    first.decr(1, shared)
    second.forget_node(1)
    first.refresh()
    assert 1 not in first.statuses()


def test_lock_is_exclusive_across_clients(redis_prefix):
    first = RedisState(redis.Redis.from_url(REDIS_URL), redis_prefix)
    second = RedisState(redis.Redis.from_url(REDIS_URL), redis_prefix)
    with first.exclusive("health", ttl=10) as got_first, second.exclusive("health", ttl=10) as got_second:
        assert got_first and not got_second
    with second.exclusive("health", ttl=10) as again:
        assert again  # released by compare-and-delete


def test_redis_outage_falls_back_to_local_counting_and_pays_back(redis_prefix):
    client = redis.Redis.from_url(REDIS_URL)
    state = RedisState(client, redis_prefix)
    shared = state.incr(5)
    assert shared
    # Point the client at a closed port: every call fails as when Redis is down.
    state.client = connect_redis("redis://127.0.0.1:1/0")
    local = state.incr(5)
    assert not local
    state.decr(5, shared)  # owed to Redis
    state.decr(5, local)
    state.put_status(NodeStatus(5, healthy=True))
    assert state.statuses()[5].healthy  # routing still sees it
    state.client = client
    state.refresh()
    assert int(client.hget(f"{redis_prefix}active", "5")) == 0
