"""gunicorn settings for aivonx; every value can be set from the environment.

gevent workers serve many long streams each. `timeout` is only the worker heartbeat (a
stream does not need to finish within it); `graceful_timeout` is how long live streams may
finish on restart or SIGTERM, so it is minutes.
"""

import os
import shutil
import tempfile

from gunicorn.workers.ggevent import GeventWorker


class DrainingGeventWorker(GeventWorker):
    """gunicorn's gevent worker, draining before it stops on SIGTERM.

    For AIVONX_DRAIN_SECONDS the worker keeps serving while `/api/ready` answers 503, so
    load balancers send new requests to other instances; then gunicorn's graceful stop
    begins (no new connections, in-flight streams finish within graceful_timeout).
    Defined here, not in the aivonx package: the master must not import the app before
    the workers' gevent patching.
    """

    draining = False

    def handle_exit(self, sig, frame):
        if self.draining or not self.alive:
            return
        self.draining = True
        import gevent

        gevent.spawn(self._drain)

    def _drain(self):
        import gevent

        from aivonx.runtime import get_runtime

        runtime = get_runtime(self.wsgi)
        runtime.draining = True
        gevent.sleep(self.wsgi.config["AIVONX_DRAIN_SECONDS"])
        self.alive = False


bind = os.environ.get("AIVONX_BIND", "127.0.0.1:11434").split(",")
worker_class = DrainingGeventWorker
workers = int(os.environ.get("AIVONX_WORKERS", "1"))
worker_connections = int(os.environ.get("AIVONX_WORKER_CONNECTIONS", "1000"))
timeout = int(os.environ.get("AIVONX_WORKER_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("AIVONX_GRACEFUL_TIMEOUT", "300"))
keepalive = int(os.environ.get("AIVONX_KEEPALIVE", "75"))
# Each worker must import the app after gevent patched it, and start its own scheduler.
preload_app = False
accesslog = os.environ.get("AIVONX_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("AIVONX_LOG_LEVEL", "info").lower()
# Ollama clients send large bodies (images, long contexts) and long header lines rarely.
limit_request_line = 8190


def when_ready(server):
    if workers > 1 and not os.environ.get("AIVONX_REDIS_URL"):
        server.log.warning(
            "AIVONX_WORKERS=%d without AIVONX_REDIS_URL: each worker counts and checks nodes on its own", workers
        )


def post_worker_init(worker):
    """Start this worker's background jobs (config sync, health checks) after fork."""
    from aivonx.runtime import get_runtime

    get_runtime(worker.wsgi).start()


def worker_exit(server, worker):
    from aivonx.runtime import get_runtime

    app = getattr(worker, "wsgi", None)
    if app is not None:
        get_runtime(app).stop()


# Prometheus multiprocess mode: every worker writes its metrics to files in one directory and
# /metrics adds them all up. prometheus_client reads PROMETHEUS_MULTIPROC_DIR when a worker
# first imports it, so the master sets it here, before any worker starts (preload_app is off).
# Without AIVONX_METRICS_DIR each gunicorn run gets a private temporary directory; a HUP
# reload re-reads this file and keeps the directory already chosen.
METRICS_TMP_PREFIX = "aivonx-metrics-"
metrics_dir = (
    os.environ.get("AIVONX_METRICS_DIR")
    or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    or tempfile.mkdtemp(prefix=METRICS_TMP_PREFIX)
)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir


def on_starting(server):
    # Files of an earlier run would be added to this run's counters.
    os.makedirs(metrics_dir, exist_ok=True)
    for name in os.listdir(metrics_dir):
        if name.endswith(".db"):
            os.remove(os.path.join(metrics_dir, name))


def child_exit(server, worker):
    # A dead worker's counters stay (they are totals); its live gauges must go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, metrics_dir)


def on_exit(server):
    # Only the temporary directory made above; an operator's AIVONX_METRICS_DIR is kept.
    if not os.environ.get("AIVONX_METRICS_DIR") and os.path.basename(metrics_dir).startswith(METRICS_TMP_PREFIX):
        shutil.rmtree(metrics_dir, ignore_errors=True)


# gunicorn's control socket is one per user by default; several instances on one machine
# would contend for it, and aivonx does not use it.
control_socket_disable = True
