"""JSON logging: one object per line on stderr, which the process manager collects, and
in a rotating file that the log viewer (/api/logs, /ui/logs) reads."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid

from concurrent_log_handler import ConcurrentRotatingFileHandler
from flask import Flask, Response, g, request


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # stderr and the file format the same record: encode it once.
        cached = record.__dict__.get("_aivonx_json")
        if cached is not None:
            return cached
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
        line = json.dumps(entry, ensure_ascii=False)
        record.__dict__["_aivonx_json"] = line
        return line


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


def log_file(app: Flask) -> str | None:
    """The log file this app writes (and the viewer reads), or None when there is none."""
    path = app.config["AIVONX_LOG_FILE"]
    if path is None:
        return os.path.join(app.instance_path, "logs", "aivonx.log")
    return os.path.abspath(path) if path else None


# One file handler per path and process: the `aivonx` logger is process-wide, and several
# apps in one process (tests) must not write a line twice.
_file_handlers: dict[str, logging.Handler] = {}


def attach_file(logger: logging.Logger, path: str, max_bytes: int, backups: int) -> logging.Handler:
    """A rotating JSON file on `logger`. Every gunicorn worker writes the same file, so a
    plain RotatingFileHandler would lose lines (each process renames the file under the
    others). concurrent-log-handler serializes writes and rollover between processes with
    a lock file next to the log, and renames (app.log -> app.log.1 ...), which keeps each
    file's inode: the reader's cursors survive a rotation."""
    handler = _file_handlers.get(path)
    if handler is None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        handler = ConcurrentRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        handler.setFormatter(JsonFormatter())
        _file_handlers[path] = handler
        logger.addHandler(handler)
    return handler


def detach_file(path: str) -> None:
    """Stop writing `path` (tests that gave an app a file of its own)."""
    handler = _file_handlers.pop(os.path.abspath(path), None)
    if handler is not None:
        logging.getLogger("aivonx").removeHandler(handler)
        handler.close()


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
    path = log_file(app)
    if path:
        try:
            attach_file(logger, path, app.config["AIVONX_LOG_MAX_BYTES"], app.config["AIVONX_LOG_BACKUPS"])
        except OSError as error:
            # A read-only or full disk must not keep the proxy from serving: stderr goes on.
            logger.error("log file %s not written (AIVONX_LOG_FILE): %s", path, error)
