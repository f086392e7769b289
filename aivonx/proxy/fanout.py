"""Operations that touch several nodes: pull, create, copy, delete, blobs.

Per-node calls run concurrently (threads, which are greenlets under gevent). Streams of
progress from several nodes are merged into one NDJSON stream with a single final line.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aivonx.proxy.forward import NETWORK_ERRORS, describe
from aivonx.proxy.types import NodeSpec
from aivonx.proxy.upstream import Upstream


@dataclass(frozen=True, slots=True)
class NodeOutcome:
    node: NodeSpec
    status: int | None  # None: the node could not be reached
    body: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def error_text(body: bytes, status: int | None) -> str:
    """Ollama's error message from a body, or a description of the status."""
    try:
        payload = json.loads(body)
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            return payload["error"]
    except ValueError:
        pass
    return f"HTTP {status}"


def call_all(
    upstream: Upstream,
    nodes: list[NodeSpec],
    method: str,
    path: str,
    *,
    body: bytes | None,
    headers: Mapping[str, str],
    timeout: tuple[float, float],
) -> list[NodeOutcome]:
    """The same request to every node, concurrently; whole answers, in the nodes' order."""

    def call(node: NodeSpec) -> NodeOutcome:
        try:
            response = upstream.send(node.base_url, method, path, body=body, headers=headers, timeout=timeout)
            with response:
                content = response.content
        except NETWORK_ERRORS as exc:
            return NodeOutcome(node, None, error=describe(exc))
        outcome = NodeOutcome(node, response.status_code, content)
        if not outcome.ok:
            outcome = NodeOutcome(node, response.status_code, content, error_text(content, response.status_code))
        return outcome

    if not nodes:
        return []
    with ThreadPoolExecutor(max_workers=min(len(nodes), 32), thread_name_prefix="aivonx-fanout") as pool:
        return list(pool.map(call, nodes))


def _lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending


_DONE = object()


def _tagged(line: bytes, message: Any, node: NodeSpec) -> bytes:
    """The line as a JSON object that starts with `"node": name` (a non-object line becomes its status)."""
    fields = message if isinstance(message, dict) else {"status": line.decode("utf-8", "replace")}
    return json.dumps({"node": node.name, **{k: v for k, v in fields.items() if k != "node"}}).encode() + b"\n"


def merged_progress(
    upstream: Upstream,
    nodes: list[NodeSpec],
    path: str,
    *,
    body: bytes,
    headers: Mapping[str, str],
    timeout: tuple[float, float],
    on_success: Callable[[NodeSpec], None],
    what: str,
    tag_nodes: bool = False,
    refusals: list[int] | None = None,
) -> Iterator[bytes]:
    """Relay every node's progress lines as they come; end with one `success` or one `error`.

    Each node's own final `{"status": "success"}` is held back, since the operation
    succeeded only when it succeeded everywhere. Closing the generator (client gone)
    closes the node streams, which cancels the work there. With `tag_nodes` every relayed
    line says which node it comes from (`"node": name`); Ollama clients get the lines untouched.
    `refusals`, if given, collects the status of every node that refused with a 4xx.
    """
    lines: queue.Queue[Any] = queue.Queue()
    failures: list[str] = []
    cancelled = threading.Event()

    def follow(node: NodeSpec) -> None:
        succeeded = False
        try:
            response = upstream.send(node.base_url, "POST", path, body=body, headers=headers, timeout=timeout)
            with response:
                if response.status_code >= 400:
                    if refusals is not None and response.status_code < 500:
                        refusals.append(response.status_code)
                    failures.append(f"{node.name}: {error_text(response.content, response.status_code)}")
                    return
                for line in _lines(response.iter_content(chunk_size=None)):
                    if cancelled.is_set():
                        return
                    try:
                        message = json.loads(line)
                    except ValueError:
                        message = None
                    if isinstance(message, dict) and "error" in message:
                        failures.append(f"{node.name}: {message['error']}")
                        return
                    if isinstance(message, dict) and message.get("status") == "success":
                        succeeded = True
                        continue
                    lines.put(_tagged(line, message, node) if tag_nodes else line + b"\n")
            if succeeded:
                on_success(node)
            else:
                failures.append(f"{node.name}: the node ended without success")
        except NETWORK_ERRORS as exc:
            failures.append(f"{node.name}: {describe(exc)}")
        finally:
            lines.put(_DONE)

    workers = [threading.Thread(target=follow, args=(node,), daemon=True) for node in nodes]
    for worker in workers:
        worker.start()
    try:
        remaining = len(workers)
        while remaining:
            item = lines.get()
            if item is _DONE:
                remaining -= 1
            else:
                yield item
        if failures:
            yield json.dumps({"error": f"{what} failed on " + "; ".join(sorted(failures))}).encode() + b"\n"
        else:
            yield b'{"status":"success"}\n'
    finally:
        cancelled.set()
