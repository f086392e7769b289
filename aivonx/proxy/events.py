"""What happened on the data path, told to whoever listens (dashboard statistics, metrics).

The proxy publishes; observers subscribe. An observer is any object with some of these
methods (a missing one is simply not called):

- `request_finished(entry: dict)`: the request-log entry of a proxied request, once, when
  its response closed (see `requestlog.RequestRecord.as_log`).
- `node_ejected(node: NodeSpec, reason: str, seconds: float)`: the node left the active pool;
  `seconds` is how long it stays out at least (0 when only the next probe decides).
- `node_readmitted(node: NodeSpec)`: a probe put the node back in the active pool.
- `probe_finished(node: NodeSpec, ok: bool, seconds: float)`: one active health check.
- `request_queued(model: str, seconds: float, outcome: str)`: a request waited for a free
  slot; `outcome` is `served`, `timeout` or `full` (the queue had no room).

Observers run inline, so they must be cheap and must not block; one that raises is logged
and does not disturb the request or the other observers.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


class EventBus:
    def __init__(self) -> None:
        self._observers: tuple[Any, ...] = ()

    def subscribe(self, observer: Any) -> None:
        self._observers = (*self._observers, observer)

    def publish(self, event: str, *args: Any) -> None:
        for observer in self._observers:
            handler = getattr(observer, event, None)
            if handler is None:
                continue
            try:
                handler(*args)
            except Exception:
                log.exception("observer %r failed on %s", observer, event)
