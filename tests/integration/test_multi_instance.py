"""Two proxy instances (gunicorn, the README's way) on one database, and on one Redis in the
postgres run: a change made through one instance's API is live on the other within the sync
interval (1 s), without waiting for a health tick."""

import time

import requests

SECRET = "multi-instance-secret-0123456789"
PASSWORD = "multi-instance-password"


def wait_for(condition, timeout=5.0):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_api_changes_on_one_instance_are_live_on_the_other(start_gunicorn, fake_nodes):
    first_node, new_node = fake_nodes(), fake_nodes("phi3:mini")
    settings = {"AIVONX_SECRET_KEY": SECRET, "AIVONX_ADMIN_PASSWORD": PASSWORD}
    a, b = start_gunicorn(first_node, **settings), start_gunicorn(first_node, **settings)
    token = requests.post(a.url + "/api/account/login", json={"username": "admin", "password": PASSWORD}).json()
    auth = {"Authorization": f"Bearer {token['access']}"}

    assert requests.patch(a.url + "/api/proxy/config", json={"strategy": "round_robin"}, headers=auth).ok
    strategy_delay = wait_for(
        lambda: requests.get(b.url + "/api/proxy/state", headers=auth).json()["strategy"] == "round_robin"
    )

    added = requests.post(a.url + "/api/proxy/nodes", json={"name": "new", "base_url": new_node.url}, headers=auth)
    assert added.status_code == 201 and added.json()["pool"] == "active"
    generate = {"model": "phi3:mini", "prompt": "hi", "stream": False}
    node_delay = wait_for(lambda: requests.post(b.url + "/api/generate", json=generate).status_code == 200)

    # Bounded generously here; the figures are reported, not asserted tightly.
    print(f"strategy live on B after {strategy_delay:.2f}s, new node routable on B after {node_delay:.2f}s")
    assert strategy_delay < 3 and node_delay < 3
