"""Plain records shared by the data path: what a node is, how it is doing, live settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

ACTIVE = "active"
STANDBY = "standby"
DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node as operators configured it (a copy of the database row)."""

    id: int
    name: str
    base_url: str
    enabled: bool = True
    priority: int = 0
    weight: int = 1
    max_concurrent: int = 0


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """The live tunables (a copy of the ProxyConfig row)."""

    strategy: str = "least_active"
    health_interval: float = 60.0
    standby_interval: float = 5.0
    probe_timeout: float = 5.0
    connect_timeout: float = 3.0
    first_byte_timeout: float = 300.0
    max_tries: int = 3
    models_max_age: float = 30.0
    forward_authorization: bool = False
    require_api_key: bool = False
    version: int = 0
    # Process settings (AIVONX_* variables, not the database row): outlier ejection and the
    # queue for nodes at their concurrency limit.
    eject_after: int = 1
    ejection_base: float = 5.0
    ejection_max: float = 300.0
    queue_size: int = 100
    queue_timeout: float = 30.0

    @property
    def node_timeout(self) -> tuple[float, float]:
        """requests' (connect, read) timeout for a call to a node."""
        return (self.connect_timeout, self.first_byte_timeout)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What health checks and proxied requests learned about a node."""

    node_id: int
    healthy: bool = False
    latency_ms: float | None = None
    version: str | None = None
    models: tuple[dict[str, Any], ...] = ()
    loaded: tuple[dict[str, Any], ...] = ()
    last_error: str | None = None
    checked_at: float | None = None
    failed_at: float | None = None
    models_at: float | None = None
    changed_at: float = field(default_factory=time.time)
    # Outlier ejection: failures in a row since the last success, ejections since the node
    # was last steady, and until when the current ejection keeps it out of the active pool.
    failures: int = 0
    ejections: int = 0
    ejected_until: float | None = None
    healthy_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "healthy": self.healthy,
            "latency_ms": self.latency_ms,
            "version": self.version,
            "models": list(self.models),
            "loaded": list(self.loaded),
            "last_error": self.last_error,
            "checked_at": self.checked_at,
            "failed_at": self.failed_at,
            "models_at": self.models_at,
            "changed_at": self.changed_at,
            "failures": self.failures,
            "ejections": self.ejections,
            "ejected_until": self.ejected_until,
            "healthy_since": self.healthy_since,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeStatus:
        return cls(
            node_id=int(data["node_id"]),
            healthy=bool(data.get("healthy")),
            latency_ms=data.get("latency_ms"),
            version=data.get("version"),
            models=tuple(data.get("models") or ()),
            loaded=tuple(data.get("loaded") or ()),
            last_error=data.get("last_error"),
            checked_at=data.get("checked_at"),
            failed_at=data.get("failed_at"),
            models_at=data.get("models_at"),
            changed_at=data.get("changed_at") or 0.0,
            # .get: statuses written by a process of an older version lack these.
            failures=int(data.get("failures") or 0),
            ejections=int(data.get("ejections") or 0),
            ejected_until=data.get("ejected_until"),
            healthy_since=data.get("healthy_since"),
        )
