"""gunicorn settings for aivonx; every value can be set from the environment.

gevent workers serve many long streams each. `timeout` is only the worker heartbeat (a
stream does not need to finish within it); `graceful_timeout` is how long live streams may
finish on restart or SIGTERM, so it is minutes.
"""

import os

bind = os.environ.get("AIVONX_BIND", "127.0.0.1:11434").split(",")
worker_class = "gevent"
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


# gunicorn's control socket is one per user by default; several instances on one machine
# would contend for it, and aivonx does not use it.
control_socket_disable = True
