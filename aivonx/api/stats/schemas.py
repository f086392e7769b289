"""Dashboard totals and the series behind its chart."""

from __future__ import annotations

import marshmallow as ma


class PercentilesSchema(ma.Schema):
    p50 = ma.fields.Float(allow_none=True, metadata={"description": "Median (ms); null without requests"})
    p95 = ma.fields.Float(allow_none=True, metadata={"description": "95th percentile (ms)"})


class StatsPointSchema(ma.Schema):
    time = ma.fields.DateTime(metadata={"description": "Start of the interval"})
    requests = ma.fields.Integer()
    errors = ma.fields.Integer()
    p50_ms = ma.fields.Float(allow_none=True)
    p95_ms = ma.fields.Float(allow_none=True)


class StatsSchema(ma.Schema):
    window_seconds = ma.fields.Integer(metadata={"description": "The totals cover this many last seconds"})
    requests = ma.fields.Integer(metadata={"description": "Proxied requests finished in the window"})
    requests_per_minute = ma.fields.Float()
    errors = ma.fields.Integer(metadata={"description": "Answered 5xx, or failed (no status, error mid-stream)"})
    client_errors = ma.fields.Integer(metadata={"description": "Answered 4xx"})
    latency_ms = ma.fields.Nested(PercentilesSchema, metadata={"description": "Total duration"})
    first_byte_ms = ma.fields.Nested(PercentilesSchema, metadata={"description": "Time to first byte"})
    series_step_seconds = ma.fields.Integer()
    series = ma.fields.List(ma.fields.Nested(StatsPointSchema), metadata={"description": "Oldest first"})
    shared = ma.fields.Boolean(
        metadata={"description": "True: counted in Redis for every worker and instance; false: this process"}
    )
