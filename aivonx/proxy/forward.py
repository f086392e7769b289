"""Send a request to a node, failing over while nothing has reached the client.

`Forwarder.open` tries nodes until one answers with its first bytes; the caller then
relays the rest with `relay`, which never retries (the client already has bytes).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import requests
from urllib3.exceptions import HTTPError as Urllib3Error

from aivonx.proxy.errors import NoHealthyNode, UpstreamFailed
from aivonx.proxy.manager import Lease, ProxyManager
from aivonx.proxy.requestlog import RequestRecord
from aivonx.proxy.upstream import Upstream

NETWORK_ERRORS = (requests.RequestException, Urllib3Error, OSError)
# Bodies announced with a Content-Length up to this size are read whole before answering,
# which keeps failover possible for non-streaming replies and lets the client reuse its
# connection. Anything chunked or larger is relayed as it arrives.
BUFFER_LIMIT = 8 * 1024 * 1024


def describe(exc: BaseException, first_byte_timeout: float | None = None) -> str:
    """A short reason for logs and error messages (requests' own texts run to lines)."""
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.ReadTimeout):
        return f"no response within {first_byte_timeout:g}s" if first_byte_timeout else "read timeout"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "connection closed mid-response"
    text = str(exc)
    for known in ("Connection refused", "Connection reset", "Name or service not known", "Remote end closed"):
        if known in text:
            return known.lower()
    return type(exc).__name__


def ndjson_error(message: str) -> bytes:
    return json.dumps({"error": message}).encode() + b"\n"


def sse_error(message: str) -> bytes:
    payload = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


@dataclass
class Exchange:
    """A node's answer, holding its lease until `close`."""

    manager: ProxyManager
    lease: Lease
    response: requests.Response
    first: bytes
    rest: Iterator[bytes]
    buffered: bool
    failures: list[str] = field(default_factory=list)
    record: RequestRecord | None = None

    @property
    def node_name(self) -> str:
        return self.lease.node.name

    def close(self) -> None:
        """Idempotent: closes the node's response (which cancels its generation) and releases."""
        self.response.close()
        self.manager.release(self.lease)


class Forwarder:
    def __init__(self, manager: ProxyManager, upstream: Upstream) -> None:
        self.manager = manager
        self.upstream = upstream

    def open(
        self,
        method: str,
        path: str,
        model: str,
        body: bytes,
        headers: Mapping[str, str],
        record: RequestRecord | None = None,
    ) -> Exchange:
        """The first node's answer that started; `record` (if any) learns node, retries, first byte."""
        settings = self.manager.settings
        timeout = settings.node_timeout
        tries = max(settings.max_tries, 1)
        tried: list[int] = []
        failures: list[str] = [] if record is None else record.retries
        while len(tried) < tries:
            try:
                lease = self.manager.acquire(model, exclude=tried)
            except NoHealthyNode:
                if not failures:
                    raise
                break
            node = lease.node
            tried.append(node.id)
            can_retry = len(tried) < tries
            try:
                response = self.upstream.send(node.base_url, method, path, body=body, headers=headers, timeout=timeout)
            except NETWORK_ERRORS as exc:
                self._failed(lease, None, describe(exc, settings.first_byte_timeout), failures, model)
                continue

            status = response.status_code
            if status >= 500 or status == 404:
                reason = f"HTTP {status}"
                if status == 404:
                    # The index said the node has the model; the node disagrees.
                    self.manager.forget_model(node, model)
                else:
                    self.manager.mark_failed(node, reason, model=model, answered=True)
                if can_retry and self.manager.active_holders(model, exclude=tried):
                    failures.append(f"{node.name}: {reason}")
                    response.close()
                    self.manager.release(lease)
                    continue

            try:
                exchange = self._first_bytes(lease, response)
            except NETWORK_ERRORS as exc:
                self._failed(lease, response, describe(exc, settings.first_byte_timeout), failures, model)
                continue
            exchange.failures = failures
            if status < 500:
                self.manager.mark_succeeded(node)
            if record is not None:
                if lease.queued_s:
                    record.queued_ms = round(lease.queued_s * 1000, 3)
                record.node = node.name
                record.first_byte()
                record.bytes = len(exchange.first)
                record.last_chunk = exchange.first
                exchange.record = record
            return exchange
        raise UpstreamFailed(f"no node could serve model '{model}': " + "; ".join(failures))

    def _first_bytes(self, lease: Lease, response: requests.Response) -> Exchange:
        length = response.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) <= BUFFER_LIMIT:
            body = response.content
            exchange = Exchange(self.manager, lease, response, body, iter(()), buffered=True)
            exchange.close()
            return exchange
        chunks = response.iter_content(chunk_size=None)
        first = next(chunks, b"")
        return Exchange(self.manager, lease, response, first, chunks, buffered=False)

    def _failed(
        self, lease: Lease, response: requests.Response | None, reason: str, failures: list[str], model: str
    ) -> None:
        if response is not None:
            response.close()
        self.manager.release(lease)
        self.manager.mark_failed(lease.node, reason, model=model)
        failures.append(f"{lease.node.name}: {reason}")


def relay(exchange: Exchange, error_chunk: Callable[[str], bytes]) -> Iterator[bytes]:
    """Yield the node's bytes as they arrive; a failure mid-stream becomes a last error chunk.

    Runs `exchange.close` in `finally`, which also covers the client going away
    (GeneratorExit at a yield). The view registers the same close with call_on_close for
    the case where this generator never starts.
    """
    last = exchange.first
    record = exchange.record
    try:
        if last:
            yield last
        for chunk in exchange.rest:
            if chunk:
                last = chunk
                if record is not None:
                    record.bytes += len(chunk)
                    record.last_chunk = chunk
                yield chunk
    except NETWORK_ERRORS as exc:
        reason = describe(exc)
        exchange.manager.mark_failed(exchange.lease.node, reason)
        message = f"node '{exchange.node_name}' failed mid-stream: {reason}"
        separator = b"" if not last or last.endswith(b"\n") else b"\n"
        if record is not None:
            record.error = message
        yield separator + error_chunk(message)
    finally:
        exchange.close()
