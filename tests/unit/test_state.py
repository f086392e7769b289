"""RedisState against the real Redis server, and MemoryState, through the same checks."""

import threading
import time

import pytest
import redis

from aivonx.extensions import connect_redis
from aivonx.proxy.state import MemoryState, RedisState
from aivonx.proxy.types import NodeSpec, NodeStatus
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


def spec(node_id: int, **fields) -> NodeSpec:
    return NodeSpec(id=node_id, name=f"n{node_id}", base_url=f"http://127.0.0.1:{11000 + node_id}", **fields)


def test_pick_and_count_in_one_step(state):
    """incr_least_active: below the limit, best priority tier, least load per weight, ties by turn."""
    fast, slow, spare = spec(1, weight=2, max_concurrent=3), spec(2), spec(3, priority=1)
    nodes = [fast, slow, spare]
    picked = [state.incr_least_active(nodes, turn).id for turn in range(5)]
    # Loads per weight: 1 (weight 2) takes two for each one 2 takes, until 1 is at its limit.
    assert sorted(picked) == [1, 1, 1, 2, 2]
    assert state.active_counts([1, 2, 3]) == {1: 3, 2: 2, 3: 0}
    # The better tier is busy but not full: the worse tier (priority 1) still waits.
    assert state.incr_least_active(nodes, 0).id == 2
    state.decr(1)
    assert state.incr_least_active([fast], 0).id == 1
    assert state.incr_least_active([fast], 0) is None  # full: nothing counted
    assert state.active_counts([1]) == {1: 3}
    # Ties take turns.
    assert {state.incr_least_active([spec(4), spec(5)], turn).id for turn in (0, 1)} == {4, 5}


def test_the_pick_sees_every_process(redis_prefix):
    first, second = redis_state(redis_prefix), redis_state(redis_prefix)
    nodes = [spec(1, max_concurrent=1), spec(2)]
    assert first.incr_least_active(nodes, 0).id == 1
    assert second.incr_least_active(nodes, 0).id == 2  # 1 is full through the first process
    assert second.incr_least_active([nodes[0]], 0) is None
    assert first.active_counts([1, 2]) == {1: 1, 2: 1}
    first.decr(1)
    assert second.incr_least_active(nodes, 0).id == 1


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
