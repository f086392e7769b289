"""A lean fake Ollama node for benchmarks: one asyncio process serving many loopback ports.

`tests.fake_ollama` is a thread-per-connection stdlib server built for fault injection; it
tops out far below the proxy, so measuring "direct" against it would flatter the proxy.
This one speaks the same wire format for the routes the benchmark and the proxy's health
checks use (`/`, `/api/version`, `/api/tags`, `/api/ps`, `/api/generate`, `/api/chat`),
answers with no token delay by default, and stamps every streamed line with the wall-clock
time it was written (`"sent_ns"`), so a client on the same machine can tell how long each
chunk spent in between.

Per request, the body may carry (the proxy forwards bodies untouched, Ollama ignores them):
  options.num_predict   streamed chunks before the final line (default 8)
  bench_interval_ms     pause between chunks (default 0: all at once)

    python -m benchmarks.node --count 300     # prints {"ports": [...]} on one line
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from email.utils import formatdate
from typing import Any

VERSION = "0.6.5"
DEFAULT_CHUNKS = 8
_DIGEST = "365c0bd3c000a25d28ddbf732fe1c6add414de7275464c4e4d1c3b5fcb5d8ad1"
_DETAILS = {
    "parent_model": "",
    "format": "gguf",
    "family": "llama",
    "families": ["llama"],
    "parameter_size": "8.0B",
    "quantization_level": "Q4_0",
}

_second = [0, b"", b""]  # cached per second: (second, Date header value, created_at)


def _clock() -> tuple[bytes, bytes]:
    now = int(time.time())
    if _second[0] != now:
        _second[0] = now
        _second[1] = formatdate(now, usegmt=True).encode()
        _second[2] = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(now)).encode()
    return _second[1], _second[2]


def _head(status: bytes, content_type: bytes, extra: bytes) -> bytes:
    date, _ = _clock()
    return b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nDate: " + date + b"\r\n" + extra


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class Node:
    """Shared by every port of the process: the models and request counters."""

    def __init__(self, models: list[str]) -> None:
        self.models = models
        self.requests = 0
        self.tags = _dumps(
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2026-11-01T00:00:00Z",
                        "size": 4_661_224_676,
                        "digest": _DIGEST,
                        "details": _DETAILS,
                    }
                    for m in models
                ]
            }
        )


class NodeProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive; requests on one connection are answered in order."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.streaming: asyncio.TimerHandle | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.streaming is not None:
            self.streaming.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.streaming is None:
            self._process()

    def _process(self) -> None:
        while self.streaming is None and not self.closed:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, _ = lines[0].split(" ", 2)
            except ValueError:
                self._close()
                return
            length = 0
            close = False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.node.requests += 1
            self._route(method, target.split("?", 1)[0], body, close)

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _send(self, status: bytes, content_type: bytes, body: bytes, close: bool) -> None:
        extra = b"Content-Length: %d\r\n" % len(body)
        if close:
            extra += b"Connection: close\r\n"
        assert self.transport is not None
        self.transport.write(_head(status, content_type, extra) + b"\r\n" + body)
        if close:
            self._close()

    def _route(self, method: str, path: str, body: bytes, close: bool) -> None:
        json_type = b"application/json; charset=utf-8"
        if path in ("/api/generate", "/api/chat") and method == "POST":
            self._generate(body, path == "/api/chat", close)
        elif path == "/api/version":
            self._send(b"200 OK", json_type, b'{"version":"' + VERSION.encode() + b'"}', close)
        elif path == "/api/tags":
            self._send(b"200 OK", json_type, self.node.tags, close)
        elif path == "/api/ps":
            self._send(b"200 OK", json_type, b'{"models":[]}', close)
        elif path == "/":
            self._send(b"200 OK", b"text/plain; charset=utf-8", b"Ollama is running", close)
        elif path == "/_bench/stats":
            self._send(b"200 OK", json_type, _dumps({"requests": self.node.requests}), close)
        else:
            self._send(b"404 Not Found", b"text/plain; charset=utf-8", b"404 page not found", close)

    def _generate(self, raw: bytes, chat: bool, close: bool) -> None:
        try:
            req = json.loads(raw)
            model = req["model"]
        except (ValueError, KeyError, TypeError):
            self._send(b"400 Bad Request", b"application/json", b'{"error":"model is required"}', close)
            return
        options = req.get("options") or {}
        chunks = int(options.get("num_predict") or DEFAULT_CHUNKS)
        interval = float(req.get("bench_interval_ms") or 0) / 1000
        _, created = _clock()
        prefix = b'{"model":' + _dumps(model) + b',"created_at":"' + created + b'",'
        piece = b'"message":{"role":"assistant","content":"tok "},' if chat else b'"response":"tok ",'
        final_piece = b'"message":{"role":"assistant","content":""},' if chat else b'"response":"",'
        final = (
            b'"done":true,"done_reason":"stop","total_duration":%d,"load_duration":1000000,'
            b'"prompt_eval_count":1,"prompt_eval_duration":1000000,"eval_count":%d,"eval_duration":%d'
            % (2_000_000 + 1_000_000 * chunks, chunks, 1_000_000 * chunks)
        )
        if req.get("stream") is False:
            words = b"tok " * chunks
            text = (
                b'"message":{"role":"assistant","content":"' + words + b'"},'
                if chat
                else b'"response":"' + words + b'",'
            )
            self._send(b"200 OK", b"application/json; charset=utf-8", prefix + text + final + b"}", close)
            return
        assert self.transport is not None
        self.transport.write(_head(b"200 OK", b"application/x-ndjson", b"Transfer-Encoding: chunked\r\n") + b"\r\n")
        lines = [prefix + piece + b'"done":false,"sent_ns":'] * chunks
        lines.append(prefix + final_piece + final + b',"sent_ns":')
        if interval <= 0:
            # No token delay: every line is its own HTTP chunk, written at once.
            out = []
            for line in lines:
                data = line + b"%d}\n" % time.time_ns()
                out.append(b"%x\r\n%s\r\n" % (len(data), data))
            out.append(b"0\r\n\r\n")
            self.transport.write(b"".join(out))
            if close:
                self._close()
            return
        self._stream_next(lines, 0, interval, close)

    def _stream_next(self, lines: list[bytes], i: int, interval: float, close: bool) -> None:
        self.streaming = None
        if self.closed:
            return
        assert self.transport is not None
        data = lines[i] + b"%d}\n" % time.time_ns()  # stamped as it leaves
        frame = b"%x\r\n%s\r\n" % (len(data), data)
        if i + 1 == len(lines):
            self.transport.write(frame + b"0\r\n\r\n")
            if close:
                self._close()
            elif self.buffer:
                self._process()
            return
        self.transport.write(frame)
        loop = asyncio.get_running_loop()
        self.streaming = loop.call_later(interval, self._stream_next, lines, i + 1, interval, close)


async def serve(count: int, models: list[str], host: str = "127.0.0.1") -> None:
    node = Node(models)
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(lambda: NodeProtocol(node), host, 0, backlog=4096, reuse_address=True)
        for _ in range(count)
    ]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    print(json.dumps({"ports": ports}), flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.node", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1, help="ports to listen on (each is one node)")
    parser.add_argument("--models", default="llama3:latest", help="comma-separated model names")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.count, [m.strip() for m in args.models.split(",") if m.strip()]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
