"""JSON logging: one object per line on stderr, which the process manager collects."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from flask import Flask, Response, g, request


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = getattr(record, "request", None)
        if request:
            entry.update(request)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


# A client's X-Request-ID is kept when it is a plain token; anything else gets a new one.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def assign_request_id() -> None:
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def tag_response(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is not None:
        response.headers["X-Request-ID"] = request_id
    return response


def init_app(app: Flask) -> None:
    app.before_request(assign_request_id)
    app.after_request(tag_response)
    logger = logging.getLogger("aivonx")
    logger.setLevel(app.config["AIVONX_LOG_LEVEL"])
    if not any(getattr(h, "aivonx", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.aivonx = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
