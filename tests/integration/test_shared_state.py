"""Two app processes sharing PostgreSQL/SQLite and the real Redis behave as one proxy."""

import time

from aivonx.proxy.types import ACTIVE, STANDBY
from aivonx.runtime import get_runtime
from tests.conftest import REDIS_URL
from tests.integration.test_failover import wait_until


def test_health_runs_once_per_interval_across_processes_and_status_is_shared(make_app, make_proxy, fake_nodes):
    node = fake_nodes()
    shared = {"AIVONX_REDIS_URL": REDIS_URL, "AIVONX_HEALTH_INTERVAL": 1.0}
    first = make_proxy(node, **shared)
    second = get_runtime(make_app(**shared))
    first.runtime.start()
    second.start()
    assert wait_until(lambda: second.manager.pool_of(second.manager.node(1)) == ACTIVE)

    node.clear()
    time.sleep(4.2)
    probes = node.count("/api/version")
    # One probe per second across both processes (each would make ~4 on its own).
    assert 3 <= probes <= 6, probes

    # A passive failure seen by one process reaches the other within a sync interval.
    first.manager.mark_failed(first.manager.node(1), "connection refused")
    assert wait_until(lambda: second.manager.pool_of(second.manager.node(1)) == STANDBY, timeout=2)
    # ...and the next standby probe (by whichever process holds the lock) brings it back.
    assert wait_until(lambda: second.manager.pool_of(second.manager.node(1)) == ACTIVE, timeout=3)


def test_active_counters_are_shared(make_app, fake_nodes):
    shared = {"AIVONX_REDIS_URL": REDIS_URL}
    first, second = get_runtime(make_app(**shared)), get_runtime(make_app(**shared))
    with first.app.app_context():
        from aivonx import store

        store.add_node(fake_nodes().url)
    for runtime in (first, second):
        runtime.sync(force=True)
    first.check_now()
    second.sync()
    lease = first.manager.acquire("llama3")
    assert second.manager.state.active_counts([lease.node.id]) == {lease.node.id: 1}
    first.manager.release(lease)
    assert second.manager.state.active_counts([lease.node.id]) == {lease.node.id: 0}
