"""JSON logging: one object per line on stderr, which the process manager collects."""

from __future__ import annotations

import json
import logging
import sys
import time

from flask import Flask


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def init_app(app: Flask) -> None:
    logger = logging.getLogger("aivonx")
    logger.setLevel(app.config["AIVONX_LOG_LEVEL"])
    if not any(getattr(h, "aivonx", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        handler.aivonx = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
