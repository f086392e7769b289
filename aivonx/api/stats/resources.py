"""Request statistics for the dashboard."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint, abort
from redis import RedisError

from aivonx.api.common import authorized
from aivonx.api.stats.schemas import StatsSchema
from aivonx.stats import get_stats

blp = Blueprint("stats", __name__, url_prefix="/api/proxy/stats", description="Request statistics")


@blp.route("")
class Stats(MethodView):
    @authorized(blp)
    @blp.response(200, StatsSchema)
    @blp.alt_response(503, response="SERVICE_UNAVAILABLE")
    def get(self) -> dict[str, Any]:
        """Requests per minute, errors, median and p95 latency and time to first byte over
        the last minutes, and a series for a chart (every worker and instance with Redis)."""
        try:
            return get_stats(current_app).snapshot()
        except RedisError as error:
            abort(503, message=f"statistics unavailable: Redis: {error}", headers={"Retry-After": "5"})
