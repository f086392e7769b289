"""Probe one node: latency, version, models and loaded models. A pure function of the node."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import requests

from aivonx.proxy.forward import NETWORK_ERRORS, describe
from aivonx.proxy.upstream import Upstream


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    latency_ms: float | None = None
    version: str | None = None
    models: tuple[dict[str, Any], ...] = ()
    loaded: tuple[dict[str, Any], ...] = ()
    error: str | None = None


def _model_list(payload: Any, route: str) -> tuple[dict[str, Any], ...]:
    models = payload.get("models") if isinstance(payload, dict) else None
    if models is None:
        models = []
    valid = isinstance(models, list) and all(isinstance(m, dict) and (m.get("name") or m.get("model")) for m in models)
    if not valid:
        raise ValueError(f"malformed {route} answer")
    return tuple(models)


def fetch_models(upstream: Upstream, base_url: str, timeout: float) -> tuple[tuple[dict, ...], tuple[dict, ...]]:
    """The node's installed and loaded models (raises on failure)."""
    models = _model_list(upstream.get_json(base_url, "/api/tags", timeout), "/api/tags")
    loaded = _model_list(upstream.get_json(base_url, "/api/ps", timeout), "/api/ps")
    return models, loaded


def probe_node(upstream: Upstream, base_url: str, timeout: float) -> ProbeResult:
    started = time.perf_counter()
    try:
        version_payload = upstream.get_json(base_url, "/api/version", timeout)
        latency_ms = (time.perf_counter() - started) * 1000
        version = version_payload.get("version") if isinstance(version_payload, dict) else None
        if not isinstance(version, str):
            raise ValueError("malformed /api/version answer")
        models, loaded = fetch_models(upstream, base_url, timeout)
    except requests.JSONDecodeError:
        return ProbeResult(ok=False, error="answer is not JSON")
    except NETWORK_ERRORS as exc:
        return ProbeResult(ok=False, error=describe(exc))
    except ValueError as exc:  # a malformed answer
        return ProbeResult(ok=False, error=str(exc))
    return ProbeResult(ok=True, latency_ms=round(latency_ms, 3), version=version, models=models, loaded=loaded)
