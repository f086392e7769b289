"""Merged model listings (`/api/tags`, `/api/ps`, `/v1/models`) from the health cache.

A node's lists are re-read only when older than `models_max_age`, so a busy client polling
`/api/tags` costs no fan-out while the cache is fresh.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from aivonx.health.probe import fetch_models
from aivonx.proxy.forward import NETWORK_ERRORS, describe
from aivonx.proxy.manager import ProxyManager, model_key
from aivonx.proxy.types import NodeSpec
from aivonx.proxy.upstream import Upstream


def refresh_stale(manager: ProxyManager, upstream: Upstream) -> None:
    now = time.time()
    max_age = manager.settings.models_max_age
    stale = [node for node in manager.active_nodes() if (manager.status(node.id).models_at or 0) < now - max_age]
    if stale:
        refresh_models(manager, upstream, stale)


def refresh_models(manager: ProxyManager, upstream: Upstream, nodes: list[NodeSpec]) -> None:
    """Re-read the nodes' model lists now (after a pull, copy, create or delete, or when stale)."""

    def refresh(node: NodeSpec) -> None:
        try:
            models, loaded = fetch_models(upstream, node.base_url, manager.settings.probe_timeout)
        except NETWORK_ERRORS as exc:
            manager.mark_failed(node, describe(exc))
            return
        except ValueError:
            return  # a malformed answer: keep what we knew; the health check will judge the node
        manager.set_models(node, models, loaded)

    if len(nodes) == 1:
        refresh(nodes[0])
        return
    with ThreadPoolExecutor(max_workers=min(len(nodes), 32), thread_name_prefix="aivonx-models") as pool:
        list(pool.map(refresh, nodes))


def _merge(entries: list[dict[str, Any]], newest_by: str) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for entry in entries:
        key = model_key(entry)
        kept = merged.get(key)
        if kept is None or str(entry.get(newest_by) or "") > str(kept.get(newest_by) or ""):
            merged[key] = entry
    return sorted(merged.values(), key=lambda e: str(e.get(newest_by) or ""), reverse=True)


def merged_tags(manager: ProxyManager) -> list[dict[str, Any]]:
    """Installed models of the active nodes, one entry per model, newest first (as Ollama)."""
    entries = [entry for node in manager.active_nodes() for entry in manager.status(node.id).models]
    return _merge(entries, "modified_at")


def merged_ps(manager: ProxyManager) -> list[dict[str, Any]]:
    entries = [entry for node in manager.active_nodes() for entry in manager.status(node.id).loaded]
    return _merge(entries, "expires_at")


_FRACTION = re.compile(r"(\.\d{6})\d+")


def unix_time(rfc3339: str | None) -> int:
    """Ollama's timestamps carry nanoseconds, which datetime does not parse: cut to micro."""
    if not rfc3339:
        return 0
    try:
        return int(datetime.fromisoformat(_FRACTION.sub(r"\1", rfc3339)).timestamp())
    except ValueError:
        return 0


def openai_model(entry: dict[str, Any]) -> dict[str, Any]:
    name = str(entry.get("model") or entry.get("name"))
    owner = name.rsplit("/", 1)[0].rsplit("/", 1)[-1] if "/" in name else "library"
    return {"id": name, "object": "model", "created": unix_time(entry.get("modified_at")), "owned_by": owner}
