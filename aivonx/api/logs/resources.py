"""The JSON log files (application and request log), for the log viewer."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from aivonx.api.common import abort_field, authorized
from aivonx.api.logs.reader import LogFilter, read_after, read_page
from aivonx.api.logs.schemas import LogPageSchema, LogQuerySchema
from aivonx.logs import log_file

blp = Blueprint("logs", __name__, url_prefix="/api/logs", description="Application and request logs")


@blp.route("")
class Logs(MethodView):
    @authorized(blp)
    @blp.arguments(LogQuerySchema, location="query")
    @blp.response(200, LogPageSchema)
    @blp.alt_response(400, response="BAD_REQUEST")
    def get(self, query: dict[str, Any]) -> dict[str, Any]:
        """Log entries of every worker, newest first, filtered and paginated.

        Rotated files are read too. Page on with `before=<next>`; follow new lines with
        `after=<latest>` (live tail). This instance's files only: with several instances
        behind a load balancer, each has its own.
        """
        if "before" in query and "after" in query:
            abort_field(400, "after", "give before (older entries) or after (newer entries), not both")
        path = log_file(current_app)
        if path is None:
            return {"entries": [], "next": None, "latest": None, "file": None}
        log_filter = LogFilter(
            level=query.get("level"),
            text=query.get("q"),
            model=query.get("model"),
            node=query.get("node"),
            status=query.get("status"),
            since=query.get("since"),
            until=query.get("until"),
            source=query["source"],
        )
        if "after" in query:
            page = read_after(path, log_filter, query["limit"], query["after"])
        else:
            page = read_page(path, log_filter, query["limit"], query.get("before"))
        return {"entries": page.entries, "next": page.next, "latest": page.latest, "file": path}
