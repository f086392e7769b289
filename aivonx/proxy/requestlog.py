"""One JSON log line per proxied request, written when its response is closed.

The record is filled as the request goes (node chosen, retries and why, first byte, bytes
relayed); tokens and tokens/s are read once, at the end, from the final chunk's
`eval_count`/`eval_duration` as Ollama reports them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aivonx.proxy.events import EventBus

log = logging.getLogger("aivonx.request")

# The final NDJSON line is short; a larger tail is a body the log does not need to parse.
TOKENS_TAIL_BYTES = 4096


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    method: str
    route: str
    client: str | None
    model: str | None = None
    node: str | None = None
    retries: list[str] = field(default_factory=list)
    status: int | None = None
    error: str | None = None
    bytes: int = 0
    first_byte_ms: float | None = None
    queued_ms: float | None = None
    last_chunk: bytes = b""
    started: float = field(default_factory=time.perf_counter)
    logged: bool = False

    def first_byte(self) -> None:
        self.first_byte_ms = round((time.perf_counter() - self.started) * 1000, 3)

    def as_log(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "request_id": self.request_id,
            "client": self.client,
            "method": self.method,
            "route": self.route,
            "model": self.model,
            "node": self.node,
            "retries": len(self.retries),
            "retry_reasons": self.retries,
            "status": self.status,
            "duration_ms": round((time.perf_counter() - self.started) * 1000, 3),
            "first_byte_ms": self.first_byte_ms,
            "bytes": self.bytes,
        }
        if self.queued_ms is not None:
            entry["queued_ms"] = self.queued_ms
        if self.error:
            entry["error"] = self.error
        entry.update(token_counts(self.last_chunk))
        return entry


def token_counts(last_chunk: bytes) -> dict[str, Any]:
    """`tokens` and `tokens_per_s` from Ollama's final line, if the chunk ends with one."""
    tail = last_chunk[-TOKENS_TAIL_BYTES:]
    if b'"eval_count"' not in tail:
        return {}
    line = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        final = json.loads(line)
        tokens, nanoseconds = int(final["eval_count"]), int(final.get("eval_duration") or 0)
    except (ValueError, KeyError, TypeError):
        return {}
    rate = round(tokens / (nanoseconds / 1e9), 2) if nanoseconds > 0 else None
    return {"tokens": tokens, "tokens_per_s": rate}


def emit(record: RequestRecord, events: EventBus | None = None) -> None:
    """Log the record once (the response may be closed by more than one party) and tell
    the observers."""
    if record.logged:
        return
    record.logged = True
    entry = record.as_log()
    log.info("%s %s %s", record.method, record.route, record.status, extra={"request": entry})
    if events is not None:
        events.publish("request_finished", entry)
