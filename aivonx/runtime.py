"""The per-process runtime: manager, upstream client and background jobs, bound to an app.

Created by `init_app` (no work at import or creation time); `start()` runs after the worker
forked (gunicorn's post_worker_init), because a scheduler started before fork is dead in
the workers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from aivonx import accounts, store
from aivonx.health.checks import check_nodes, health_tick
from aivonx.proxy.forward import Forwarder
from aivonx.proxy.keyring import KeyRing
from aivonx.proxy.manager import ProxyManager
from aivonx.proxy.state import MemoryState, RedisState, State
from aivonx.proxy.types import NodeSpec
from aivonx.proxy.upstream import Upstream

log = logging.getLogger(__name__)

HEALTH_TICK_SECONDS = 1.0  # how often the job looks for due nodes; intervals decide who is due


def make_scheduler() -> Any:
    """GeventScheduler under gevent workers, a thread scheduler anywhere else (tests, CLI)."""
    try:
        from gevent import monkey

        patched = monkey.is_module_patched("threading")
    except ImportError:
        patched = False
    job_defaults = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 30}
    if patched:
        from apscheduler.schedulers.gevent import GeventScheduler

        return GeventScheduler(job_defaults=job_defaults)
    from apscheduler.schedulers.background import BackgroundScheduler

    return BackgroundScheduler(job_defaults=job_defaults, daemon=True)


class Runtime:
    def __init__(self, app: Flask) -> None:
        self.app = app
        redis_client = app.extensions.get("aivonx.redis")
        state: State = (
            RedisState(redis_client, app.config["AIVONX_REDIS_PREFIX"]) if redis_client is not None else MemoryState()
        )
        self.manager = ProxyManager(state)
        self.upstream = Upstream(pool_maxsize=app.config["AIVONX_POOL_MAXSIZE"])
        self.forwarder = Forwarder(self.manager, self.upstream)
        # Valid API keys, checked on proxy routes when settings.require_api_key is on.
        self.api_keys = KeyRing()
        self.scheduler: Any = None
        # Set on SIGTERM by the gunicorn worker: readiness answers 503 while streams finish.
        self.draining = False
        self.loaded_version: int | None = None
        self._sync_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.loaded_version is not None

    def sync(self, force: bool = False) -> bool:
        """Reload nodes, settings and API keys when the database's version stamp moved; pull
        shared state; save when API keys were last used.

        Returns whether the configuration was reloaded. A database outage keeps the
        cached configuration (and is logged), so proxying goes on.
        """
        reloaded = False
        with self._sync_lock, self.app.app_context():
            try:
                version = store.current_version()
                if force or version is None or version != self.loaded_version:
                    if version is None:
                        store.ensure_config(self.app.config)
                    settings, nodes = store.snapshot(self.app.config)
                    # Keys are read after the settings and their version stamp: a key created
                    # in between is included already, and its bump moved the stamp past the
                    # loaded version, so the next sync reloads anyway. The other way round,
                    # such a key could be missed until some unrelated change.
                    key_hashes = accounts.valid_key_hashes()
                    self.manager.configure(settings, nodes)
                    self.api_keys.replace(key_hashes)
                    self.loaded_version = settings.version
                    if settings.require_api_key and not key_hashes:
                        log.warning("require_api_key is on and there is no API key: proxy routes but / refuse all")
                    reloaded = True
            except SQLAlchemyError as exc:
                log.warning("configuration not reloaded, database unavailable: %s", exc)
            finally:
                store.db.session.remove()
            self._save_key_use()
        self.manager.state.refresh()
        return reloaded

    def _save_key_use(self) -> None:
        """Write the API keys' last use: once per key per sync, whatever the request rate."""
        used = self.api_keys.take_used()
        if not used:
            return
        try:
            accounts.record_key_use(used)
        except SQLAlchemyError as exc:
            self.api_keys.put_back(used)
            log.warning("API key use not saved, database unavailable: %s", exc)
        finally:
            store.db.session.remove()

    def ensure_loaded(self) -> None:
        if self.loaded_version is None:
            self.sync()

    def check_now(self, nodes: list[NodeSpec] | None = None, *, readmit: bool = False) -> None:
        """Probe now, outside the schedule (a new node, an operator's request, tests).

        `readmit`: an operator asked, so a passing probe ends an ejection early."""
        self.ensure_loaded()
        check_nodes(self.manager, self.upstream, self.manager.nodes if nodes is None else nodes, readmit=readmit)

    def health_tick(self) -> int:
        return health_tick(self.manager, self.upstream, HEALTH_TICK_SECONDS)

    def start(self) -> None:
        """Load configuration, probe once, then keep both fresh in the background."""
        if self.scheduler is not None:
            return
        self.sync(force=True)
        scheduler = make_scheduler()
        scheduler.add_job(self.sync, "interval", seconds=self.app.config["AIVONX_SYNC_INTERVAL"], id="sync")
        scheduler.add_job(self.health_tick, "interval", seconds=HEALTH_TICK_SECONDS, id="health")
        scheduler.start()
        self.scheduler = scheduler
        # First probe right away so a fresh worker has active nodes within a moment.
        scheduler.add_job(self.health_tick, id="health-first")

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        self.manager.state.release_lease()
        self.upstream.close()


def init_app(app: Flask) -> None:
    app.extensions["aivonx"] = Runtime(app)


def get_runtime(app: Flask) -> Runtime:
    return app.extensions["aivonx"]
