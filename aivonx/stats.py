"""Dashboard statistics: requests, errors and latency percentiles over the last minutes.

Every finished proxied request (the event bus's `request_finished`) is counted into a
10-second time bucket: a request count, an error count, and fixed latency histogram buckets
for the total duration and the time to first byte. Fixed buckets add up across processes,
which exact samples would not: with Redis every worker and instance adds to the same hash
per time bucket (ONE pipelined round trip per request: HINCRBYs and an EXPIRE), so any
process answers for the whole deployment; without Redis there is one process, and it keeps
the same buckets in memory. Percentiles are interpolated within a histogram bucket.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from flask import Flask
from redis import Redis, RedisError

from aivonx.runtime import get_runtime

log = logging.getLogger(__name__)

BUCKET_SECONDS = 10
SUMMARY_SECONDS = 300  # the totals: the last five minutes
SERIES_SECONDS = 900  # the chart: the last fifteen minutes ...
SERIES_STEP = 30  # ... in points of 30 seconds
# Upper bounds (ms) of the latency buckets; one more bucket holds everything slower.
LATENCY_BOUNDS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000, 300_000)
KEY_TTL = SERIES_SECONDS + 3 * BUCKET_SECONDS
WARN_EVERY = 60.0

Counts = dict[str, int]


def latency_bucket(ms: float) -> int:
    return bisect.bisect_left(LATENCY_BOUNDS_MS, ms)


def counts_of(entry: dict[str, Any]) -> Counts:
    """What one request-log entry adds to its time bucket."""
    status = entry.get("status")
    counts: Counts = {"n": 1}
    if entry.get("error") or not isinstance(status, int) or status >= 500:
        counts["err"] = 1
    elif status >= 400:
        counts["e4"] = 1
    duration = entry.get("duration_ms")
    if isinstance(duration, int | float):
        counts[f"d{latency_bucket(duration)}"] = 1
    first_byte = entry.get("first_byte_ms")
    if isinstance(first_byte, int | float):
        counts[f"f{latency_bucket(first_byte)}"] = 1
    return counts


def percentile(histogram: list[int], q: float) -> float | None:
    """The q-quantile (0..1) of a latency histogram, interpolated within its bucket."""
    total = sum(histogram)
    if total == 0:
        return None
    target = q * total
    seen = 0
    for index, count in enumerate(histogram):
        if count and seen + count >= target:
            lower = 0 if index == 0 else LATENCY_BOUNDS_MS[index - 1]
            upper = LATENCY_BOUNDS_MS[min(index, len(LATENCY_BOUNDS_MS) - 1)]
            if index == len(LATENCY_BOUNDS_MS):  # slower than the last bound: say the bound
                return float(upper)
            return round(lower + (upper - lower) * (target - seen) / count, 1)
        seen += count
    return float(LATENCY_BOUNDS_MS[-1])


def histogram(counts: Counts, kind: str) -> list[int]:
    return [counts.get(f"{kind}{index}", 0) for index in range(len(LATENCY_BOUNDS_MS) + 1)]


def merge(buckets: Iterable[Counts]) -> Counts:
    total: Counts = {}
    for counts in buckets:
        for field, value in counts.items():
            total[field] = total.get(field, 0) + value
    return total


class Backend(Protocol):
    shared: bool

    def add(self, bucket: int, counts: Counts) -> None: ...

    def read(self, buckets: list[int]) -> list[Counts]: ...


class MemoryBackend:
    """One process's buckets (no Redis: there is only one process)."""

    shared = False

    def __init__(self) -> None:
        self._buckets: dict[int, Counts] = {}
        self._lock = threading.Lock()

    def add(self, bucket: int, counts: Counts) -> None:
        with self._lock:
            stored = self._buckets.setdefault(bucket, {})
            for field, value in counts.items():
                stored[field] = stored.get(field, 0) + value
            if len(self._buckets) > KEY_TTL // BUCKET_SECONDS:
                oldest = bucket - KEY_TTL
                for old in [b for b in self._buckets if b < oldest]:
                    del self._buckets[old]

    def read(self, buckets: list[int]) -> list[Counts]:
        with self._lock:
            return [dict(self._buckets.get(bucket, {})) for bucket in buckets]


class RedisBackend:
    """A hash per time bucket in Redis, shared by every worker and instance; it expires by itself."""

    shared = True

    def __init__(self, client: Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, bucket: int) -> str:
        return f"{self.prefix}stats:{bucket}"

    def add(self, bucket: int, counts: Counts) -> None:
        key = self.key(bucket)
        pipe = self.client.pipeline(transaction=False)
        for field, value in counts.items():
            pipe.hincrby(key, field, value)
        pipe.expire(key, KEY_TTL)
        pipe.execute()

    def read(self, buckets: list[int]) -> list[Counts]:
        pipe = self.client.pipeline(transaction=False)
        for bucket in buckets:
            pipe.hgetall(self.key(bucket))
        return [{field.decode(): int(value) for field, value in raw.items()} for raw in pipe.execute()]


class DashboardStats:
    """The event-bus observer, and the numbers the dashboard shows."""

    def __init__(self, backend: Backend, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self.clock = clock
        self._warned = 0.0

    def request_finished(self, entry: dict[str, Any]) -> None:
        now = self.clock()
        try:
            self.backend.add(int(now // BUCKET_SECONDS) * BUCKET_SECONDS, counts_of(entry))
        except RedisError as error:
            # Statistics must never disturb proxying; say so once a minute, not per request.
            if now - self._warned > WARN_EVERY:
                self._warned = now
                log.warning("dashboard statistics not counted, Redis unavailable: %s", error)

    def snapshot(self) -> dict[str, Any]:
        """Totals of the last SUMMARY_SECONDS and a series over SERIES_SECONDS."""
        now = self.clock()
        current = int(now // BUCKET_SECONDS) * BUCKET_SECONDS
        buckets = list(range(current - SERIES_SECONDS + BUCKET_SECONDS, current + BUCKET_SECONDS, BUCKET_SECONDS))
        by_bucket = dict(zip(buckets, self.backend.read(buckets), strict=True))
        summary = merge(by_bucket[b] for b in buckets if b > current - SUMMARY_SECONDS)
        series = []
        for start in range(buckets[0], current + BUCKET_SECONDS, SERIES_STEP):
            point = merge(by_bucket.get(b, {}) for b in range(start, start + SERIES_STEP, BUCKET_SECONDS))
            series.append(
                {
                    "time": datetime.fromtimestamp(start, UTC),
                    "requests": point.get("n", 0),
                    "errors": point.get("err", 0),
                    "p50_ms": percentile(histogram(point, "d"), 0.5),
                    "p95_ms": percentile(histogram(point, "d"), 0.95),
                }
            )
        requests = summary.get("n", 0)
        return {
            "window_seconds": SUMMARY_SECONDS,
            "requests": requests,
            "requests_per_minute": round(requests * 60 / SUMMARY_SECONDS, 2),
            "errors": summary.get("err", 0),
            "client_errors": summary.get("e4", 0),
            "latency_ms": {
                "p50": percentile(histogram(summary, "d"), 0.5),
                "p95": percentile(histogram(summary, "d"), 0.95),
            },
            "first_byte_ms": {
                "p50": percentile(histogram(summary, "f"), 0.5),
                "p95": percentile(histogram(summary, "f"), 0.95),
            },
            "series_step_seconds": SERIES_STEP,
            "series": series,
            "shared": self.backend.shared,
        }


def init_app(app: Flask) -> None:
    client = app.extensions.get("aivonx.redis")
    backend: Backend = (
        RedisBackend(client, app.config["AIVONX_REDIS_PREFIX"]) if client is not None else MemoryBackend()
    )
    stats = DashboardStats(backend)
    app.extensions["aivonx.stats"] = stats
    get_runtime(app).manager.events.subscribe(stats)


def get_stats(app: Flask) -> DashboardStats:
    return app.extensions["aivonx.stats"]
