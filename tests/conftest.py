"""Shared fixtures: the backend under test, fake Ollama nodes, and a running proxy.

`AIVONX_TEST_BACKEND` picks the backend the whole suite runs on:
- `sqlite` (default): a SQLite file per test and in-memory state;
- `postgres`: a fresh PostgreSQL database per test and Redis state under a fresh key prefix.
Both servers are real (PostgreSQL at AIVONX_TEST_POSTGRES_URL, Redis at AIVONX_TEST_REDIS_URL).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa
from flask import Flask
from flask_migrate import upgrade
from werkzeug.serving import make_server

from aivonx import create_app, store
from aivonx.runtime import Runtime, get_runtime
from tests.fake_ollama import FakeOllama

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BACKEND = os.environ.get("AIVONX_TEST_BACKEND", "sqlite")
POSTGRES_URL = os.environ.get("AIVONX_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AIVONX_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

if BACKEND not in ("sqlite", "postgres"):
    raise pytest.UsageError(f"AIVONX_TEST_BACKEND must be sqlite or postgres, not {BACKEND!r}")


def pytest_report_header(config: pytest.Config) -> str:
    return f"aivonx backend: {BACKEND}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres_only: needs PostgreSQL + Redis shared by processes; deselected on the sqlite backend"
    )
    config.addinivalue_line(
        "markers", "sqlite_only: does not depend on the backend (starts its own); run once, in the sqlite pass"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`postgres_only` tests cannot mean anything on SQLite + in-memory state, and
    `sqlite_only` ones would only repeat themselves on PostgreSQL: each is deselected on
    the other backend (counted as "deselected" in the summary), never reported as passed."""
    other = "sqlite_only" if BACKEND == "postgres" else "postgres_only"
    kept = [item for item in items if item.get_closest_marker(other) is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item not in kept])
        items[:] = kept


def _is_loopback(host: object) -> bool:
    if host in ("localhost", b"localhost"):
        return True
    try:
        return ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host)).is_loopback
    except ValueError:
        return False


def pytest_sessionstart(session: pytest.Session) -> None:
    """Tests talk to loopback only: node URLs made up by tests or by the fuzzer never leave the machine."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is None or _is_loopback(host):
            return real_getaddrinfo(host, *args, **kwargs)
        raise socket.gaierror(socket.EAI_NONAME, f"tests resolve loopback names only, not {host!r}")

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise ConnectionRefusedError(f"tests connect to loopback only, not {address[0]!r}")
        return real_connect(self, address)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = connect  # type: ignore[method-assign]


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the real Redis; its keys are deleted afterwards."""
    prefix = f"aivonx-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def database_url(tmp_path: Any) -> Iterator[str]:
    if BACKEND == "sqlite":
        yield f"sqlite:///{tmp_path / 'aivonx.sqlite3'}"
        return
    name = f"aivonx_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def make_app(database_url: str, redis_prefix: str, tmp_path: Any) -> Iterator[Callable[..., Flask]]:
    """Build apps on this test's database (migrated from empty) and Redis prefix."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        config = {
            "AIVONX_ENV": "testing",
            "SQLALCHEMY_DATABASE_URI": database_url,
            "AIVONX_REDIS_URL": REDIS_URL if BACKEND == "postgres" else None,
            "AIVONX_REDIS_PREFIX": redis_prefix,
            "AIVONX_STANDBY_INTERVAL": 0.5,
            # Ejections as short as a standby probe, unless a test measures the backoff.
            "AIVONX_EJECTION_BASE": 0.5,
            "AIVONX_HEALTH_INTERVAL": 60.0,
            "AIVONX_SYNC_INTERVAL": 0.2,
            "AIVONX_PROBE_TIMEOUT": 2.0,
            "AIVONX_CONNECT_TIMEOUT": 1.0,
            "AIVONX_FIRST_BYTE_TIMEOUT": 5.0,
            **overrides,
        }
        app = create_app(config)
        app.instance_path = str(tmp_path / "instance")
        with app.app_context():
            upgrade()
            store.ensure_config(app.config)
        apps.append(app)
        return app

    yield build
    for app in apps:
        get_runtime(app).stop()
        with app.app_context():
            store.db.session.remove()
            store.db.engine.dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def fake_nodes() -> Iterator[Callable[..., FakeOllama]]:
    """Start fake Ollama nodes on loopback ports; all are stopped after the test."""
    started: list[FakeOllama] = []

    def start(*models: str, **options: Any) -> FakeOllama:
        node = FakeOllama(models or ("llama3:latest",), **options).start()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


@dataclass
class RunningProxy:
    """A proxy serving on a loopback port (werkzeug, threaded) with its app and runtime."""

    app: Flask
    url: str

    @property
    def runtime(self) -> Runtime:
        return get_runtime(self.app)

    @property
    def manager(self) -> Any:
        return self.runtime.manager

    def add_node(self, node: FakeOllama, **fields: Any) -> int:
        with self.app.app_context():
            node_id = store.add_node(node.url, node.name or None, **fields).id
        self.refresh()
        return node_id

    def refresh(self) -> None:
        """Reload the configuration and probe every node now (instead of waiting a tick)."""
        self.runtime.sync(force=True)
        self.runtime.check_now()

    def active_total(self) -> int:
        counts = self.manager.state.active_counts(node.id for node in self.manager.nodes)
        return sum(counts.values())


def serve(app: Flask) -> tuple[str, Callable[[], None]]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def shutdown() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return f"http://127.0.0.1:{server.server_port}", shutdown


@pytest.fixture
def make_proxy(make_app: Callable[..., Flask]) -> Iterator[Callable[..., RunningProxy]]:
    stops: list[Callable[[], None]] = []

    def start(*nodes: FakeOllama, **overrides: Any) -> RunningProxy:
        proxy_app = make_app(**overrides)
        url, stop = serve(proxy_app)
        stops.append(stop)
        proxy = RunningProxy(proxy_app, url)
        for node in nodes:
            with proxy_app.app_context():
                store.add_node(node.url, node.name or None)
        proxy.refresh()
        return proxy

    yield start
    for stop in stops:
        stop()


@pytest.fixture
def two_nodes(fake_nodes: Callable[..., FakeOllama]) -> tuple[FakeOllama, FakeOllama]:
    return fake_nodes(name="node-a"), fake_nodes(name="node-b")


@pytest.fixture
def proxy(make_proxy: Callable[..., RunningProxy], two_nodes: tuple[FakeOllama, FakeOllama]) -> RunningProxy:
    return make_proxy(*two_nodes)


DEFAULT_PASSWORD = "correct-horse-battery"


def create_user(app: Flask, username: str, role: str = "admin", password: str = DEFAULT_PASSWORD) -> int:
    from aivonx.models import User
    from aivonx.security import hash_password

    with app.app_context():
        user = User(username=username, password_hash=hash_password(password), role=role)
        store.db.session.add(user)
        store.db.session.commit()
        return user.id


@pytest.fixture
def login(app: Flask) -> Callable[..., dict[str, str]]:
    """`login("admin")` or `login("viewer")`: a user of that role, and Authorization headers for it."""
    created: dict[str, dict[str, str]] = {}

    def headers(role: str = "admin") -> dict[str, str]:
        if role not in created:
            create_user(app, f"{role}-user", role)
            response = app.test_client().post(
                "/api/account/login", json={"username": f"{role}-user", "password": DEFAULT_PASSWORD}
            )
            assert response.status_code == 200, response.get_json()
            created[role] = {"Authorization": f"Bearer {response.get_json()['access']}"}
        return created[role]

    return headers


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class GunicornProxy:
    url: str
    process: subprocess.Popen
    init_output: str
    log_path: Path


@pytest.fixture
def start_gunicorn(database_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Callable[..., GunicornProxy]]:
    """The proxy as the README runs it: `flask --app aivonx init`, then gunicorn (gevent).

    Two workers sharing Redis in the postgres run, one worker on SQLite. Each instance is
    stopped by its PID after the test.
    """
    started: list[subprocess.Popen] = []

    def start(*nodes: FakeOllama, **env_overrides: str) -> GunicornProxy:
        port = free_port()
        env = {
            **os.environ,
            "AIVONX_DATABASE_URL": database_url,
            "AIVONX_NODES": ",".join(node.url for node in nodes),
            "AIVONX_BIND": f"127.0.0.1:{port}",
            "AIVONX_STANDBY_INTERVAL": "0.5",
            "AIVONX_EJECTION_BASE": "0.5",
            # Stop at once unless a test measures draining.
            "AIVONX_DRAIN_SECONDS": "0",
            "AIVONX_WORKERS": "2" if BACKEND == "postgres" else "1",
            "AIVONX_GRACEFUL_TIMEOUT": "5",
            **env_overrides,
        }
        if BACKEND == "postgres":
            env.update(AIVONX_REDIS_URL=REDIS_URL, AIVONX_REDIS_PREFIX=redis_prefix)
        init = subprocess.run(
            [BIN / "flask", "--app", "aivonx", "init"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert init.returncode == 0, init.stderr
        log_path = tmp_path / f"gunicorn-{port}.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [BIN / "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=log
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                models = requests.get(url + "/api/tags", timeout=1).json()["models"]
                if models or not nodes:
                    break
            except requests.RequestException:
                pass
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "gunicorn did not get ready:\n" + log_path.read_text()
            time.sleep(0.2)
        return GunicornProxy(url, process, init.stdout, log_path)

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
