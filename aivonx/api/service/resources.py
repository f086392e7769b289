"""Liveness and readiness for load balancers and orchestrators (no auth), and build info."""

from __future__ import annotations

import logging
import os
import platform
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from aivonx.api.common import authorized
from aivonx.api.nodes.resources import proxy_runtime
from aivonx.api.service.schemas import InfoSchema, LivenessSchema, ReadinessSchema
from aivonx.extensions import db, redis_store
from aivonx.version import __version__

log = logging.getLogger(__name__)

blp = Blueprint("service", __name__, url_prefix="/api", description="Liveness, readiness and build information")


@blp.route("/health")
class Liveness(MethodView):
    @blp.response(200, LivenessSchema)
    def get(self) -> dict[str, str]:
        """Liveness: the process answers. Touches neither the database nor the nodes."""
        return {"status": "ok"}


def database_ok() -> bool:
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        db.session.rollback()
        # Connection errors name hosts and users: the log gets them, the (unauthenticated) answer not.
        log.warning("readiness: database unavailable: %s", exc)
        return False
    return True


@blp.route("/ready")
class Readiness(MethodView):
    @blp.response(200, ReadinessSchema)
    @blp.alt_response(503, schema=ReadinessSchema, description="Not ready: `detail` says why")
    def get(self) -> tuple[dict[str, Any], int]:
        """Readiness: the configuration is loaded, a node is active and the process is not
        stopping. A database outage is reported but does not make an instance that already
        has its configuration unready: it goes on proxying from memory."""
        runtime = proxy_runtime()
        database = database_ok()
        active_nodes = len(runtime.manager.active_nodes())
        problems = []
        if runtime.draining:
            problems.append("shutting down")
        if not database and not runtime.loaded:
            problems.append("database unavailable")
        if not active_nodes:
            problems.append("no active node")
        answer: dict[str, Any] = {
            "status": "not ready" if problems else "ready",
            "database": "ok" if database else "unavailable",
            "active_nodes": active_nodes,
        }
        if problems:
            answer["detail"] = "; ".join(problems)
        return answer, 503 if problems else 200


@blp.route("/proxy/info")
class Info(MethodView):
    @authorized(blp)
    @blp.response(200, InfoSchema)
    def get(self) -> dict[str, Any]:
        """What is running: version, build, Python, strategy, and the backends in use."""
        return {
            "name": "aivonx",
            "version": __version__,
            "build": os.environ.get("AIVONX_BUILD") or None,
            "python": platform.python_version(),
            "strategy": proxy_runtime().manager.settings.strategy,
            "redis": redis_store.client is not None,
            "database": db.engine.dialect.name,
        }
