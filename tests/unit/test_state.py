"""RedisState against the real Redis server, and MemoryState, through the same checks."""

import threading
import time

import pytest
import redis

from aivonx.extensions import connect_redis
from aivonx.proxy.state import MemoryState, RedisState
from aivonx.proxy.types import NodeStatus
from tests.conftest import REDIS_URL


def redis_state(prefix: str, **options) -> RedisState:
    """A process's RedisState after its first refresh (which writes its counter lease)."""
    state = RedisState(redis.Redis.from_url(REDIS_URL), prefix, **options)
    state.refresh()
    return state


@pytest.fixture(params=["memory", "redis"])
def state(request, redis_prefix):
    if request.param == "memory":
        return MemoryState()
    return redis_state(redis_prefix)


def test_counters_are_exact_under_concurrency(state):
    def work():
        for _ in range(200):
            assert state.incr(7)
            state.decr(7)

    threads = [threading.Thread(target=work) for _ in range(8)]
    assert state.incr(7)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert state.active_counts([7, 8]) == {7: 1, 8: 0}
    state.decr(7)
    assert state.active_counts([7]) == {7: 0}


def test_the_limit_holds_across_processes(redis_prefix):
    first, second = redis_state(redis_prefix), redis_state(redis_prefix)
    assert first.incr(3, limit=2) and second.incr(3, limit=2)
    assert not first.incr(3, limit=2) and not second.incr(3, limit=2)
    assert second.active_counts([3]) == {3: 2}
    first.decr(3)
    assert second.incr(3, limit=2)
    assert first.incr(3)  # no limit: always counted
    assert first.active_counts([3]) == {3: 3}


def test_statuses_are_shared_between_processes(redis_prefix):
    first = redis_state(redis_prefix)
    second = redis_state(redis_prefix)
    first.put_status(NodeStatus(1, healthy=True, models=({"name": "m:latest"},), latency_ms=3.5))
    assert second.statuses() == {}
    generation = second.generation
    assert second.refresh() is True
    assert second.generation > generation
    assert second.statuses()[1].healthy and second.statuses()[1].latency_ms == 3.5
    assert second.refresh() is False  # nothing new: no reload
    assert first.incr(1)
    assert second.active_counts([1]) == {1: 1}
    first.decr(1)
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


def test_redis_outage_falls_back_to_local_counting_and_writes_back(redis_prefix):
    state, observer = redis_state(redis_prefix), redis_state(redis_prefix)
    client = state.client
    assert state.incr(5)
    assert state.incr(5)
    # Point the client at a closed port: every call fails as when Redis is down.
    state.client = connect_redis("redis://127.0.0.1:1/0")
    assert state.incr(5)  # counted in this process
    state.decr(5)
    state.put_status(NodeStatus(5, healthy=True))
    assert state.statuses()[5].healthy  # routing still sees it
    assert state.active_counts([5]) == {5: 2}  # this process's own truth
    state.client = client
    state.refresh()  # Redis is back: the counts are written whole
    assert observer.active_counts([5]) == {5: 2}
    state.decr(5)
    state.decr(5)
    assert observer.active_counts([5]) == {5: 0}


def test_a_restarted_redis_gets_the_counts_back(redis_prefix):
    state, observer = redis_state(redis_prefix), redis_state(redis_prefix)
    assert state.incr(9)
    # What a Redis restart does to this prefix: every key is gone.
    client = state.client
    client.delete(*client.keys(f"{redis_prefix}*"))
    assert observer.active_counts([9]) == {9: 0}
    state.refresh()
    assert observer.active_counts([9]) == {9: 1}
    state.decr(9)
    assert observer.active_counts([9]) == {9: 0}


def test_a_restarted_redis_gets_the_statuses_back(redis_prefix):
    state, observer = redis_state(redis_prefix), redis_state(redis_prefix)
    state.put_status(NodeStatus(2, healthy=True, models=({"name": "m:latest"},)))
    observer.refresh()
    client = state.client
    client.delete(*client.keys(f"{redis_prefix}*"))
    # The first process to notice writes back what it knows; nobody adopts "no nodes".
    assert state.refresh() is False and state.statuses()[2].healthy
    observer.refresh()
    assert observer.statuses()[2].healthy


def test_a_dead_process_stops_counting_when_its_lease_expires(redis_prefix):
    dead = redis_state(redis_prefix, lease_seconds=0.3)
    observer = redis_state(redis_prefix)
    assert dead.incr(4)
    assert observer.active_counts([4]) == {4: 1}
    time.sleep(0.6)  # the process never renews: it crashed
    assert observer.active_counts([4]) == {4: 0}


def test_a_stopping_process_releases_its_counts_at_once(redis_prefix):
    stopping, observer = redis_state(redis_prefix), redis_state(redis_prefix)
    assert stopping.incr(4)
    stopping.release_lease()
    assert observer.active_counts([4]) == {4: 0}
