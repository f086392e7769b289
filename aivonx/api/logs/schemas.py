"""The log viewer's query and answer."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import marshmallow as ma
from marshmallow.validate import Length, OneOf, Range

from aivonx.api.logs.reader import (
    CURSOR_PATTERN,
    LEVELS,
    SOURCES,
    STATUS_PATTERN,
    Cursor,
    CursorError,
    status_pattern_ok,
)

MAX_LIMIT = 1000


class CursorField(ma.fields.String):
    """A cursor from an earlier answer, documented with its pattern."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {})["pattern"] = CURSOR_PATTERN
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Cursor:
        try:
            return Cursor.parse(super()._deserialize(value, attr, data, **kwargs))
        except CursorError as error:
            raise ma.ValidationError(str(error)) from None


class UtcDateTime(ma.fields.AwareDateTime):
    """A time; one without a zone is UTC."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(default_timezone=UTC, **kwargs)


def _status(value: str) -> None:
    if not status_pattern_ok(value):
        raise ma.ValidationError("must be a status like 404, or a class like 5xx")


class LogQuerySchema(ma.Schema):
    level = ma.fields.String(
        validate=OneOf(tuple(LEVELS)), metadata={"description": "Lowest level shown", "example": "WARNING"}
    )
    q = ma.fields.String(validate=Length(min=1, max=500), metadata={"description": "Text the line contains (any case)"})
    model = ma.fields.String(
        validate=Length(min=1, max=300),
        metadata={"description": "Requests for this model (`llama3` = `llama3:latest`)", "example": "llama3"},
    )
    node = ma.fields.String(validate=Length(min=1, max=100), metadata={"description": "Requests served by this node"})
    status = ma.fields.String(
        validate=_status,
        metadata={
            "description": "Requests answered with this status or class",
            "example": "5xx",
            "pattern": STATUS_PATTERN,
        },
    )
    since = UtcDateTime(metadata={"description": "Not before this time (UTC unless a zone is given)"})
    until = UtcDateTime(metadata={"description": "Not after this time (UTC unless a zone is given)"})
    source = ma.fields.String(
        load_default="all",
        validate=OneOf(SOURCES),
        metadata={"description": "`request`: proxied requests only; `app`: everything else"},
    )
    limit = ma.fields.Integer(
        load_default=100, validate=Range(min=1, max=MAX_LIMIT), metadata={"description": "Entries per page"}
    )
    before = CursorField(
        metadata={"description": "The `next` of the previous page: older entries", "example": "1048602-8812-5f0c1e2a"}
    )
    after = CursorField(
        metadata={
            "description": "Live tail: entries newer than this cursor (an earlier answer's `latest`)",
            "example": "1048602-9377-c0ffee42",
        }
    )


class LogPageSchema(ma.Schema):
    entries = ma.fields.List(
        ma.fields.Dict(),
        metadata={
            "description": "Newest first. Every entry has `cursor`, `time`, `level`, `logger` and `message`; "
            "request-log entries add `request_id`, `route`, `model`, `node`, `status`, `duration_ms`, "
            "`first_byte_ms`, ... A line that is not a JSON object has `malformed: true` and its text as "
            "`message`.",
            "example": [
                {
                    "cursor": "1048602-9377-c0ffee42",
                    "time": "2026-11-23T17:55:49.238Z",
                    "level": "INFO",
                    "logger": "aivonx.request",
                    "message": "POST /api/generate 200",
                    "model": "llama3",
                    "node": "gpu2",
                    "status": 200,
                    "duration_ms": 812.4,
                }
            ],
        },
    )
    next = ma.fields.String(
        allow_none=True, metadata={"description": "`before=` this for older entries; null at the end"}
    )
    latest = ma.fields.String(
        allow_none=True, metadata={"description": "`after=` this to get only newer entries (live tail)"}
    )
    file = ma.fields.String(
        allow_none=True, metadata={"description": "The log file read; null when logging to stderr only"}
    )
