"""A fake Ollama node for tests and benchmarks.

``FakeOllama`` is a real HTTP/1.1 server (stdlib ``http.server``) bound to a
loopback port.  It speaks Ollama's wire format (native ``/api/*`` routes and the
OpenAI-compatible ``/v1/*`` routes) well enough for the official ``ollama`` and
``openai`` Python clients, and it can be told to fail in various ways::

    with FakeOllama(["llama3:latest"]) as node:
        node.mode = "error500"          # inference routes now answer 500
        node.fault_paths = None         # ... and so does every other route
        node.mode = "ok"

The same knobs are reachable over HTTP for a fake running in another process
(``POST /_fake/control``, ``GET /_fake/stats``, ``POST /_fake/clear``,
``GET /_fake/requests``) and a CLI starts one::

    python -m tests.fake_ollama --port 11500 \
        --models llama3:latest,nomic-embed-text:latest

Failure modes (``mode``), applied to paths in ``fault_paths``:

* ``ok``              normal behaviour
* ``error500``        500 ``{"error": ...}``
* ``busy503``         503 ``{"error": "server busy"}``
* ``hang``            read the request, send nothing for ``hang_seconds`` (or until
                      ``stop()`` / the client goes away), then close the connection
* ``die_midstream``   streaming: headers + ``die_after_chunks`` chunks, then close the
                      connection without the terminating chunk; non-streaming: close
                      without any response
* ``reset``           close the connection (TCP RST) right after reading the request
* ``error_midstream`` streaming: ``die_after_chunks`` chunks, then an in-stream error
                      object (as Ollama does when a runner fails), then a clean end
                      of stream; non-streaming: 500

Errors on ``/v1/*`` routes use the OpenAI error envelope, as Ollama does.
``first_byte_delay`` applies to ``INFERENCE_PATHS`` only, before any fault.

Observation: every request except ``/_fake/*`` is recorded before faults apply.
``disconnects`` counts requests the client abandoned before we finished (a failed
write, or the client closing during a delay or a hang: while pausing, the socket
is watched, so this is noticed at once).  ``completed_streams`` is incremented
just before the terminating chunk is written, so a client that saw the end of a
stream also sees the count; ``active`` and ``disconnects`` can trail the client by
a moment, so poll them with ``wait_for(lambda f: f.active == 0)``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import select
import selectors
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import unquote, urlsplit

__all__ = [
    "INFERENCE_PATHS",
    "MODES",
    "FakeOllama",
    "RecordedRequest",
    "main",
    "normalize_model_name",
]

INFERENCE_PATHS: frozenset[str] = frozenset(
    {
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
    }
)

MODES: tuple[str, ...] = (
    "ok",
    "error500",
    "busy503",
    "hang",
    "die_midstream",
    "reset",
    "error_midstream",
)

_CONTROL_PREFIX = "/_fake/"
_JSON = "application/json; charset=utf-8"
_NDJSON = "application/x-ndjson"
_SSE = "text/event-stream"
_TEXT = "text/plain; charset=utf-8"
_EMBED_DIMS = 4
_FINGERPRINT = "fp_ollama"


# --------------------------------------------------------------------- helpers


def normalize_model_name(name: str) -> str:
    """Lookup key: lower case, default registry/namespace dropped, ``:latest`` added."""
    n = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        n = n.removeprefix(prefix)
    if ":" not in n.rsplit("/", 1)[-1]:
        n += ":latest"
    return n


def _display_name(name: str) -> str:
    n = name.strip()
    return n if ":" in n.rsplit("/", 1)[-1] else n + ":latest"


def _rfc3339(t: float | None = None, *, zulu: bool = False) -> str:
    s = datetime.fromtimestamp(time.time() if t is None else t, UTC).isoformat(timespec="microseconds")
    return s[:-6] + "Z" if zulu else s


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


_date_cache: list[Any] = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[1] = formatdate(now, usegmt=True)
        _date_cache[0] = now
    return _date_cache[1]


def _vector(seed: str, dims: int = _EMBED_DIMS) -> list[float]:
    """Deterministic unit-length vector derived from ``seed``."""
    raw = b""
    counter = 0
    while len(raw) < dims:
        raw += hashlib.sha256(f"{counter}:{seed}".encode()).digest()
        counter += 1
    values = [(b - 127.5) / 127.5 for b in raw[:dims]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def _word_count(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, dict):
        return sum(_word_count(v) for k, v in value.items() if k in ("content", "text"))
    if isinstance(value, list):
        return sum(_word_count(v) for v in value)
    return 0


def _is_zero_keep_alive(value: Any) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0
    if isinstance(value, str):
        return value.strip() in ("0", "0s", "0m", "0h", "0ms")
    return False


def _like_go(value: Any) -> Any:
    """Lone surrogates (``"\\ud800"`` in JSON) replaced by U+FFFD, as Go decodes them."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, list):
        return [_like_go(item) for item in value]
    if isinstance(value, dict):
        return {_like_go(key): _like_go(item) for key, item in value.items()}
    return value


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _make_model_entry(name: str, *, like: dict[str, Any] | None = None) -> dict[str, Any]:
    """An ``/api/tags`` entry; digest and size are deterministic from the name."""
    full = _display_name(name)
    digest = hashlib.sha256(normalize_model_name(name).encode()).hexdigest()
    if like is not None:
        details = dict(like["details"])
        size = int(like["size"])
    else:
        base = full.rsplit("/", 1)[-1].split(":", 1)[0].lower()
        embedding = any(word in base for word in ("embed", "bge", "minilm"))
        letters = "".join(ch for ch in base if ch.isalpha() or ch == "-").split("-")[0]
        family = "bert" if embedding else (letters or "llama")
        details = {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": "137M" if embedding else "8.0B",
            "quantization_level": "F16" if embedding else "Q4_0",
        }
        size = (274_000_000 if embedding else 4_000_000_000) + int(digest[:6], 16)
    return {
        "name": full,
        "model": full,
        "modified_at": _rfc3339(),
        "size": size,
        "digest": digest,
        "details": details,
    }


def _capabilities(entry: dict[str, Any]) -> list[str]:
    return ["embedding"] if entry["details"].get("family") == "bert" else ["completion"]


class _Headers(dict):  # type: ignore[type-arg]
    """``dict[str, str]`` with case-insensitive keys (stored lower-cased)."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        for key, value in items:
            self[key] = value

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class RecordedRequest:
    """One request as received (before any fault was applied)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any | None
    time: float


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ClientGone(Exception):
    """The client closed the connection while we were responding."""


class _Stopped(Exception):
    """The server is stopping."""


class _Abort(Exception):
    """Close the connection without sending (the rest of) a response."""


# ---------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], fake: FakeOllama) -> None:
        self.fake = fake
        self.stop_event = threading.Event()
        self.stopping = False
        self.conn_lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.threads: set[threading.Thread] = set()
        self.rst: set[socket.socket] = set()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.wake_r, self.wake_w = socket.socketpair()
        try:
            super().__init__(address, _Handler)
            self.socket.setblocking(False)
        except BaseException:
            self.wake_r.close()
            self.wake_w.close()
            raise

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn); skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def serve(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self.socket, selectors.EVENT_READ)
            sel.register(self.wake_r, selectors.EVENT_READ)
            while not self.stopping:
                events = sel.select()
                if self.stopping:
                    break
                for key, _ in events:
                    if key.fileobj is self.socket:
                        self._handle_request_noblock()

    def process_request(self, request: Any, client_address: Any) -> None:
        # The listening socket is non-blocking; the connections must block.
        request.settimeout(None)
        thread = threading.Thread(
            target=self._run_connection,
            args=(request, client_address),
            name=f"fake-ollama-{self.server_port}-conn",
            daemon=True,
        )
        with self.conn_lock:
            if self.stopping:
                refuse = True
            else:
                refuse = False
                self.conns.add(request)
                self.threads.add(thread)
        if refuse:
            self.shutdown_request(request)
            return
        thread.start()

    def _run_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self.conn_lock:
                self.conns.discard(request)
                self.threads.discard(threading.current_thread())
                rst = request in self.rst
                self.rst.discard(request)
            if rst:
                self.close_request(request)  # SO_LINGER 0 was set: close sends RST
            else:
                self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError) or self.stopping:
            return
        super().handle_error(request, client_address)

    def close_all(self) -> list[threading.Thread]:
        """Mark stopping, wake every blocked handler; returns the handler threads."""
        with self.conn_lock:
            self.stopping = True
            self.stop_event.set()
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            return list(self.threads)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    # per-request state
    _path = ""
    _body = b""
    _parsed: Any = None
    _json_error = ""
    _die_after: int | None = None
    _error_after: int | None = None

    def log_message(self, *args: Any) -> None:  # silence the default stderr logging
        pass

    # ---- dispatch -----------------------------------------------------------

    def _dispatch(self) -> None:
        fake = self.server.fake
        path = urlsplit(self.path).path or "/"
        self._path = path
        self._die_after = None
        self._error_after = None
        if self.request_version != "HTTP/1.1":
            self.close_connection = True
        try:
            self._body = self._read_body()
        except _Abort:
            self.close_connection = True
            return
        except ValueError:
            self.close_connection = True
            self._send(400, b"bad request body", _TEXT)
            return
        self._parsed = None
        self._json_error = ""
        if self._body:
            try:
                # Like Ollama (Go's encoding/json): the body is UTF-8, and invalid UTF-8 or
                # lone surrogates in strings become U+FFFD instead of an error (or a crash here).
                self._parsed = _like_go(json.loads(self._body.decode("utf-8", "replace")))
            except (ValueError, RecursionError) as exc:
                self._json_error = str(exc)

        if path.startswith(_CONTROL_PREFIX):
            try:
                self._control(path)
            except (_ClientGone, _Stopped, _Abort):
                self.close_connection = True
            return

        fake._record(self.command, path, self.headers.items(), self._body, self._parsed)
        fake._enter()
        try:
            self._serve(path)
        except _ClientGone:
            self.close_connection = True
            fake._disconnected()
        except (_Stopped, _Abort):
            self.close_connection = True
        finally:
            fake._leave()

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _serve(self, path: str) -> None:
        fake = self.server.fake
        mode = fake.mode
        fault_paths = fake.fault_paths
        applies = mode != "ok" and (fault_paths is None or path in fault_paths)
        try:
            if path in INFERENCE_PATHS and fake.first_byte_delay > 0:
                self._pause(fake.first_byte_delay)
            if applies:
                if mode == "error500":
                    raise _HTTPError(500, "fake ollama: injected internal server error")
                if mode == "busy503":
                    raise _HTTPError(503, "server busy")
                if mode == "hang":
                    self._pause(fake.hang_seconds)
                    raise _Abort
                if mode == "reset":
                    self._reset()
                    raise _Abort
                if mode == "die_midstream":
                    self._die_after = max(0, int(fake.die_after_chunks))
                elif mode == "error_midstream":
                    self._error_after = max(0, int(fake.die_after_chunks))
                else:
                    raise _HTTPError(500, f"fake ollama: unknown mode {mode!r}")
            self._route(path)
        except _HTTPError as exc:
            self._error(exc.status, exc.message)

    def _route(self, path: str) -> None:
        methods = _ROUTES.get(path)
        arg = ""
        if methods is None:
            for prefix, prefix_methods in _PREFIX_ROUTES:
                if path.startswith(prefix) and len(path) > len(prefix):
                    methods = prefix_methods
                    arg = unquote(path[len(prefix) :])
                    break
        name = None
        if methods is not None:
            name = methods.get(self.command)
            if name is None and self.command == "HEAD":
                name = methods.get("GET")
        if name is None:
            self._send(404, b"404 page not found", _TEXT)
            return
        handler = getattr(self, name)
        if arg:
            handler(arg)
        else:
            handler()

    # ---- low level I/O ------------------------------------------------------

    def _read_body(self) -> bytes:
        te = self.headers.get("Transfer-Encoding")
        if te and "chunked" in te.lower():
            parts: list[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _Abort
                size = int(line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise _Abort
                parts.append(chunk)
                self.rfile.readline(3)
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        n = int(length)
        if n < 0:
            raise ValueError("negative Content-Length")
        data = self.rfile.read(n) if n else b""
        if len(data) < n:
            raise _Abort
        return data

    def _write(self, data: bytes) -> None:
        try:
            self.connection.sendall(data)
        except OSError:
            if self.server.stop_event.is_set():
                raise _Stopped from None
            raise _ClientGone from None

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the server stops or the client goes away."""
        stop = self.server.stop_event
        if stop.is_set():
            raise _Stopped
        if seconds <= 0:
            return
        deadline = time.monotonic() + seconds
        sock = self.connection
        poller = select.poll() if hasattr(select, "poll") else None
        if poller is not None:
            poller.register(sock, select.POLLIN)
        client_sent_data = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if client_sent_data:
                # We cannot watch the socket any more (it stays readable); just wait.
                if stop.wait(remaining):
                    raise _Stopped
                continue
            try:
                if poller is not None:
                    readable = bool(poller.poll(remaining * 1000))
                else:
                    readable = bool(select.select([sock], [], [], remaining)[0])
            except (OSError, ValueError):
                readable = True
            if stop.is_set():
                raise _Stopped
            if not readable:
                continue
            try:
                peeked = sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                continue
            except OSError:
                raise _ClientGone from None
            if not peeked:
                raise _ClientGone
            client_sent_data = True

    def _reset(self) -> None:
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            return
        with self.server.conn_lock:
            self.server.rst.add(self.connection)
        self.close_connection = True

    def _head(self, status: int, content_type: str | None, extra: Sequence[str]) -> list[str]:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        lines = [f"HTTP/1.1 {status} {phrase}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Date: {_http_date()}")
        name = self.server.fake.name
        if name:
            lines.append(f"X-Fake-Ollama: {name}")
        lines.extend(extra)
        if self.close_connection:
            lines.append("Connection: close")
        return lines

    def _send(self, status: int, body: bytes, content_type: str | None = _JSON) -> None:
        if self._die_after is not None:
            raise _Abort  # die_midstream, non-streaming: close without answering
        if self._error_after is not None and status < 300:
            # error_midstream on a non-streaming response: a plain 500
            self._error_after = None
            self._error(500, "fake ollama: injected internal server error")
            return
        lines = self._head(status, content_type, (f"Content-Length: {len(body)}",))
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._write(head if self.command == "HEAD" else head + body)

    def _send_json(self, obj: Any, status: int = 200) -> None:
        self._send(status, _dumps(obj), _JSON)

    def _error(self, status: int, message: str) -> None:
        if self._path.startswith("/v1/"):
            kind = "invalid_request_error" if status == 400 else "api_error"
            body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": None, "code": None}}
        else:
            body = {"error": message}
        self._send_json(body, status)

    def _stream(self, content_type: str, items: Iterable[bytes], error_item: bytes) -> None:
        """Send ``items`` chunked: one HTTP chunk per item, each sent at once."""
        fake = self.server.fake
        die_after = self._die_after
        error_after = self._error_after
        chunked = self.request_version == "HTTP/1.1"
        extra = ["Transfer-Encoding: chunked"] if chunked else []
        if content_type == _SSE:
            extra.append("Cache-Control: no-cache")
        head = "\r\n".join(self._head(200, content_type, extra)) + "\r\n\r\n"
        self._write(head.encode("latin-1"))
        for sent, item in enumerate(items):
            if die_after is not None and sent >= die_after:
                raise _Abort
            if error_after is not None and sent >= error_after:
                item = error_item
            if sent and fake.chunk_delay > 0:
                self._pause(fake.chunk_delay)
            self._write(b"%x\r\n%s\r\n" % (len(item), item) if chunked else item)
            if item is error_item:
                break
        if die_after is not None:
            raise _Abort
        # Count before the last write so a client that saw the end also sees the count.
        fake._stream_completed(1)
        if chunked:
            try:
                self._write(b"0\r\n\r\n")
            except (_ClientGone, _Stopped):
                fake._stream_completed(-1)
                raise

    def _stream_ndjson(self, objects: Iterable[dict[str, Any]]) -> None:
        error = _dumps({"error": "fake ollama: injected error in the middle of the stream"}) + b"\n"
        self._stream(_NDJSON, (_dumps(obj) + b"\n" for obj in objects), error)

    def _stream_sse(self, objects: Iterable[dict[str, Any]]) -> None:
        def events() -> Iterator[bytes]:
            for obj in objects:
                yield b"data: " + _dumps(obj) + b"\n\n"
            yield b"data: [DONE]\n\n"

        error = {
            "message": "fake ollama: injected error in the middle of the stream",
            "type": "api_error",
        }
        self._stream(_SSE, events(), b"data: " + _dumps({"error": error}) + b"\n\n")

    # ---- request helpers ----------------------------------------------------

    def _obj(self) -> dict[str, Any]:
        if not self._body:
            raise _HTTPError(400, "missing request body")
        if self._json_error:
            raise _HTTPError(400, self._json_error)
        if not isinstance(self._parsed, dict):
            raise _HTTPError(400, "request body must be a JSON object")
        return self._parsed

    def _model(self, req: dict[str, Any], *keys: str) -> tuple[str, dict[str, Any]]:
        name: Any = None
        for key in keys or ("model", "name"):
            name = req.get(key)
            if name:
                break
        if not name or not isinstance(name, str):
            raise _HTTPError(400, "model is required")
        entry = self.server.fake._get_model(name)
        if entry is None:
            raise _HTTPError(404, f'model "{name}" not found, try pulling it first')
        return name, entry

    def _tokens(self, limit: Any) -> tuple[list[str], str]:
        tokens = list(self.server.fake.tokens)
        n = _int_or_none(limit)
        if n is not None and 0 <= n < len(tokens):
            return tokens[:n], "length"
        return tokens, "stop"

    # ---- native routes ------------------------------------------------------

    def _r_root(self) -> None:
        self._send(200, b"Ollama is running", _TEXT)

    def _r_version(self) -> None:
        self._send_json({"version": self.server.fake.version})

    def _r_tags(self) -> None:
        self._send_json({"models": self.server.fake._model_entries()})

    def _r_ps(self) -> None:
        self._send_json({"models": self.server.fake._loaded_entries()})

    def _generate_like(self, chat: bool) -> None:
        fake = self.server.fake
        req = self._obj()
        name, entry = self._model(req, "model")
        stream = req.get("stream")
        stream = True if stream is None else bool(stream)
        empty = not req.get("messages") if chat else not req.get("prompt")

        def piece(text: str) -> dict[str, Any]:
            if chat:
                return {"message": {"role": "assistant", "content": text}}
            return {"response": text}

        if empty:
            reason = "unload" if _is_zero_keep_alive(req.get("keep_alive")) else "load"
            if reason == "load":
                fake._load(entry)
            else:
                fake._unload(name)
            self._send_json(
                {
                    "model": name,
                    "created_at": _rfc3339(zulu=True),
                    **piece(""),
                    "done": True,
                    "done_reason": reason,
                }
            )
            return

        fake._load(entry)
        options = req.get("options") if isinstance(req.get("options"), dict) else {}
        tokens, reason = self._tokens(options.get("num_predict"))
        prompt_count = max(1, _word_count(req.get("messages") if chat else req.get("prompt")))
        final: dict[str, Any] = {"done": True, "done_reason": reason}
        if not chat:
            final["context"] = [1, 2, 3]
        final.update(
            total_duration=5_000_000 + 1_000_000 * len(tokens),
            load_duration=1_000_000,
            prompt_eval_count=prompt_count,
            prompt_eval_duration=2_000_000,
            eval_count=len(tokens),
            eval_duration=1_000_000 * len(tokens),
        )
        if not stream:
            self._send_json(
                {
                    "model": name,
                    "created_at": _rfc3339(zulu=True),
                    **piece("".join(tokens)),
                    **final,
                }
            )
            return

        def objects() -> Iterator[dict[str, Any]]:
            for token in tokens:
                yield {
                    "model": name,
                    "created_at": _rfc3339(zulu=True),
                    **piece(token),
                    "done": False,
                }
            yield {
                "model": name,
                "created_at": _rfc3339(zulu=True),
                **piece(""),
                **final,
            }

        self._stream_ndjson(objects())

    def _r_generate(self) -> None:
        self._generate_like(chat=False)

    def _r_chat(self) -> None:
        self._generate_like(chat=True)

    def _r_embed(self) -> None:
        fake = self.server.fake
        req = self._obj()
        name, entry = self._model(req, "model")
        raw = req.get("input")
        inputs: list[str] = []
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list):
            inputs = [str(x) for x in raw]
        dims = _int_or_none(req.get("dimensions")) or _EMBED_DIMS
        key = normalize_model_name(name)
        fake._load(entry)
        self._send_json(
            {
                "model": name,
                "embeddings": [_vector(f"{key}\0{text}", dims) for text in inputs],
                "total_duration": 2_000_000,
                "load_duration": 1_000_000,
                "prompt_eval_count": sum(max(1, len(t.split())) for t in inputs),
            }
        )

    def _r_embeddings(self) -> None:
        fake = self.server.fake
        req = self._obj()
        name, entry = self._model(req, "model")
        prompt = req.get("prompt")
        fake._load(entry)
        vector = _vector(f"{normalize_model_name(name)}\0{prompt}") if prompt else []
        self._send_json({"embedding": vector})

    def _r_show(self) -> None:
        req = self._obj()
        _, entry = self._model(req)
        family = entry["details"].get("family") or "llama"
        self._send_json(
            {
                "license": "",
                "modelfile": (f'# Modelfile generated by "ollama show"\nFROM {entry["name"]}\n'),
                "parameters": 'stop "<|eot_id|>"',
                "template": "{{ .Prompt }}",
                "details": entry["details"],
                "model_info": {
                    "general.architecture": family,
                    "general.basename": entry["name"].split(":", 1)[0],
                    "general.parameter_count": int(entry["size"]) * 2,
                    f"{family}.context_length": 8192,
                    f"{family}.embedding_length": _EMBED_DIMS,
                },
                "capabilities": _capabilities(entry),
                "modified_at": entry["modified_at"],
            }
        )

    def _progress(self, verb: str, digest: str, total: int) -> Iterator[dict[str, Any]]:
        for completed in (0, total // 2, total):
            yield {
                "status": f"{verb} {digest[:12]}",
                "digest": f"sha256:{digest}",
                "total": total,
                "completed": completed,
            }

    def _r_pull(self) -> None:
        fake = self.server.fake
        req = self._obj()
        name = req.get("model") or req.get("name")
        if not name or not isinstance(name, str):
            raise _HTTPError(400, "model is required")
        stream = req.get("stream")
        if stream is not None and not stream:
            fake.add_model(name)
            self._send_json({"status": "success"})
            return
        existing = fake._get_model(name)
        entry = existing or _make_model_entry(name)

        def objects() -> Iterator[dict[str, Any]]:
            yield {"status": "pulling manifest"}
            yield from self._progress("pulling", entry["digest"], int(entry["size"]))
            yield {"status": "verifying sha256 digest"}
            yield {"status": "writing manifest"}
            fake.add_model(name)
            yield {"status": "success"}

        self._stream_ndjson(objects())

    def _r_push(self) -> None:
        req = self._obj()
        _, entry = self._model(req)
        stream = req.get("stream")
        if stream is not None and not stream:
            self._send_json({"status": "success"})
            return

        def objects() -> Iterator[dict[str, Any]]:
            yield {"status": "retrieving manifest"}
            yield from self._progress("pushing", entry["digest"], int(entry["size"]))
            yield {"status": "pushing manifest"}
            yield {"status": "success"}

        self._stream_ndjson(objects())

    def _r_delete(self) -> None:
        req = self._obj()
        name = req.get("model") or req.get("name")
        if not name or not isinstance(name, str):
            raise _HTTPError(400, "model is required")
        if not self.server.fake.remove_model(name):
            raise _HTTPError(404, f"model '{name}' not found")
        self._send(200, b"", None)

    def _r_copy(self) -> None:
        fake = self.server.fake
        req = self._obj()
        source, destination = req.get("source"), req.get("destination")
        if not source or not destination or not isinstance(source, str) or not isinstance(destination, str):
            raise _HTTPError(400, "source and destination are required")
        entry = fake._get_model(source)
        if entry is None:
            raise _HTTPError(404, f'model "{source}" not found')
        copied = fake.add_model(destination, like=entry)
        copied["digest"] = entry["digest"]  # a copy shares the manifest digest
        self._send(200, b"", None)

    def _r_create(self) -> None:
        fake = self.server.fake
        req = self._obj()
        name = req.get("model") or req.get("name")
        if not name or not isinstance(name, str):
            raise _HTTPError(400, "model is required")
        base = req.get("from")
        files: dict[str, Any] = {}
        for key in ("files", "adapters"):
            value = req.get(key)
            if isinstance(value, dict):
                files.update(value)
        if not base and not files:
            raise _HTTPError(400, "neither 'from' or 'files' was specified")
        digests = [str(d) for d in files.values()]
        for digest in digests:
            if not fake._has_blob(digest):
                raise _HTTPError(
                    400,
                    f"missing blob {digest}, upload it with POST /api/blobs/{digest}",
                )
        like = fake._get_model(base) if isinstance(base, str) and base else None
        stream = req.get("stream")

        def finish() -> None:
            fake.add_model(name, like=like)

        if stream is not None and not stream:
            finish()
            self._send_json({"status": "success"})
            return

        def objects() -> Iterator[dict[str, Any]]:
            if like is not None:
                yield {"status": f"using existing layer sha256:{like['digest']}"}
            for digest in digests:
                yield {"status": f"using existing layer {digest}"}
            yield {"status": "writing manifest"}
            finish()
            yield {"status": "success"}

        self._stream_ndjson(objects())

    def _r_blob(self, digest: str) -> None:
        fake = self.server.fake
        algo, _, hexpart = digest.replace("-", ":", 1).partition(":")
        if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
            raise _HTTPError(400, "invalid digest format")
        digest = f"sha256:{hexpart}"
        if self.command == "HEAD":
            self._send(200 if fake._has_blob(digest) else 404, b"", None)
            return
        actual = "sha256:" + hashlib.sha256(self._body).hexdigest()
        if actual != digest:
            raise _HTTPError(400, f'digest mismatch, expected "{digest}", got "{actual}"')
        fake._put_blob(digest, self._body)
        self._send(201, b"", None)

    # ---- OpenAI-compatible routes -------------------------------------------

    def _openai_common(self) -> tuple[dict[str, Any], str, dict[str, Any]]:
        req = self._obj()
        name, entry = self._model(req, "model")
        self.server.fake._load(entry)
        return req, name, entry

    def _r_v1_chat(self) -> None:
        self._openai_completion(chat=True)

    def _r_v1_completions(self) -> None:
        self._openai_completion(chat=False)

    def _openai_completion(self, chat: bool) -> None:
        fake = self.server.fake
        req, name, _ = self._openai_common()
        limit = req.get("max_completion_tokens") if chat else None
        tokens, reason = self._tokens(limit if limit is not None else req.get("max_tokens"))
        created = int(time.time())
        prefix = "chatcmpl" if chat else "cmpl"
        ident = f"{prefix}-{fake._next_id()}"
        prompt_tokens = max(1, _word_count(req.get("messages") if chat else req.get("prompt")))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        common = {
            "id": ident,
            "created": created,
            "model": name,
            "system_fingerprint": _FINGERPRINT,
        }

        if not req.get("stream"):
            text = "".join(tokens)
            if chat:
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": reason,
                }
            else:
                choice = {
                    "text": text,
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": reason,
                }
            obj = "chat.completion" if chat else "text_completion"
            self._send_json(
                {
                    "id": ident,
                    "object": obj,
                    "created": created,
                    "model": name,
                    "system_fingerprint": _FINGERPRINT,
                    "choices": [choice],
                    "usage": usage,
                }
            )
            return

        stream_options = req.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(stream_options.get("include_usage"))
        obj = "chat.completion.chunk" if chat else "text_completion"

        def choice_for(text: str, finish: str | None) -> dict[str, Any]:
            if chat:
                return {
                    "index": 0,
                    "delta": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

        def objects() -> Iterator[dict[str, Any]]:
            for token in tokens:
                yield {**common, "object": obj, "choices": [choice_for(token, None)]}
            yield {**common, "object": obj, "choices": [choice_for("", reason)]}
            if include_usage:
                yield {**common, "object": obj, "choices": [], "usage": usage}

        self._stream_sse(objects())

    def _r_v1_embeddings(self) -> None:
        req, name, _ = self._openai_common()
        raw = req.get("input")
        if isinstance(raw, str):
            inputs = [raw]
        elif isinstance(raw, list) and raw:
            inputs = [x if isinstance(x, str) else json.dumps(x) for x in raw]
            if all(isinstance(x, int) for x in raw):
                inputs = [json.dumps(raw)]
        else:
            raise _HTTPError(400, "invalid input type")
        dims = _int_or_none(req.get("dimensions")) or _EMBED_DIMS
        key = normalize_model_name(name)
        data = [
            {
                "object": "embedding",
                "embedding": _vector(f"{key}\0{text}", dims),
                "index": i,
            }
            for i, text in enumerate(inputs)
        ]
        count = sum(max(1, len(t.split())) for t in inputs)
        self._send_json(
            {
                "object": "list",
                "data": data,
                "model": name,
                "usage": {"prompt_tokens": count, "total_tokens": count},
            }
        )

    def _v1_model(self, entry: dict[str, Any]) -> dict[str, Any]:
        created = int(datetime.fromisoformat(entry["modified_at"]).timestamp())
        return {
            "id": entry["name"],
            "object": "model",
            "created": created,
            "owned_by": "library",
        }

    def _r_v1_models(self) -> None:
        data = [self._v1_model(e) for e in self.server.fake._model_entries()]
        self._send_json({"object": "list", "data": data})

    def _r_v1_model(self, name: str) -> None:
        entry = self.server.fake._get_model(name)
        if entry is None:
            raise _HTTPError(404, f'model "{name}" not found')
        self._send_json(self._v1_model(entry))

    # ---- control routes -----------------------------------------------------

    def _control(self, path: str) -> None:
        fake = self.server.fake
        try:
            if path == "/_fake/control" and self.command == "POST":
                fake._apply_control(self._obj())
                self._send_json(fake._settings())
            elif path == "/_fake/control" and self.command in ("GET", "HEAD"):
                self._send_json(fake._settings())
            elif path == "/_fake/stats" and self.command in ("GET", "HEAD"):
                self._send_json(fake.stats())
            elif path == "/_fake/clear" and self.command == "POST":
                fake.clear()
                self._send_json({"status": "ok"})
            elif path == "/_fake/requests" and self.command in ("GET", "HEAD"):
                self._send_json(
                    [
                        {
                            "method": r.method,
                            "path": r.path,
                            "headers": dict(r.headers),
                            "json": r.json,
                            "time": r.time,
                        }
                        for r in list(fake.requests)
                    ]
                )
            else:
                self._send(404, b"404 page not found", _TEXT)
        except _HTTPError as exc:
            self._send_json({"error": exc.message}, exc.status)


_ROUTES: dict[str, dict[str, str]] = {
    "/": {"GET": "_r_root"},
    "/api/version": {"GET": "_r_version"},
    "/api/tags": {"GET": "_r_tags"},
    "/api/ps": {"GET": "_r_ps"},
    "/api/generate": {"POST": "_r_generate"},
    "/api/chat": {"POST": "_r_chat"},
    "/api/embed": {"POST": "_r_embed"},
    "/api/embeddings": {"POST": "_r_embeddings"},
    "/api/show": {"POST": "_r_show"},
    "/api/pull": {"POST": "_r_pull"},
    "/api/push": {"POST": "_r_push"},
    "/api/delete": {"DELETE": "_r_delete"},
    "/api/copy": {"POST": "_r_copy"},
    "/api/create": {"POST": "_r_create"},
    "/v1/chat/completions": {"POST": "_r_v1_chat"},
    "/v1/completions": {"POST": "_r_v1_completions"},
    "/v1/embeddings": {"POST": "_r_v1_embeddings"},
    "/v1/models": {"GET": "_r_v1_models"},
}

_PREFIX_ROUTES: tuple[tuple[str, dict[str, str]], ...] = (
    ("/api/blobs/", {"HEAD": "_r_blob", "POST": "_r_blob"}),
    ("/v1/models/", {"GET": "_r_v1_model"}),
)

_CONTROL_FLOATS = ("first_byte_delay", "chunk_delay", "hang_seconds")


# ---------------------------------------------------------------- public class


class FakeOllama:
    """A fake Ollama server on a loopback port; see the module docstring."""

    def __init__(
        self,
        models: Iterable[str] = ("llama3:latest",),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = "0.6.5",
        tokens: Sequence[str] = ("Hello", ",", " world", "!"),
        name: str = "",
    ) -> None:
        if isinstance(models, str):
            models = [models]
        self.host = host
        self.port = port
        self.version = version
        self.tokens: list[str] = list(tokens)
        self.name = name
        self.url = ""

        # fault controls
        self.mode = "ok"
        self.fault_paths: set[str] | None = set(INFERENCE_PATHS)
        self.first_byte_delay = 0.0
        self.chunk_delay = 0.0
        self.die_after_chunks = 2
        self.hang_seconds = 30.0

        # observation
        self._cond = threading.Condition(threading.RLock())
        self.requests: list[RecordedRequest] = []
        self.max_recorded: int | None = None  # keep at most this many recorded requests (None = all)
        self._counts: dict[tuple[str, str], int] = {}
        self.active = 0
        self.peak_active = 0  # the most requests in progress at once since the last clear
        self.disconnects = 0
        self.completed_streams = 0
        self._ids = 0

        self.models: dict[str, dict[str, Any]] = {}
        self.loaded: dict[str, dict[str, Any]] = {}
        self.blobs: dict[str, bytes] = {}
        for model in models:
            self.add_model(model)

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    def __repr__(self) -> str:
        return f"FakeOllama(name={self.name!r}, url={self.url!r}, mode={self.mode!r})"

    # ---- lifecycle ----------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> Self:
        """Bind (port 0 picks a free port, which then sticks) and serve in a thread."""
        with self._lifecycle:
            if self._server is not None:
                return self
            server = _Server((self.host, self.port), self)
            self.port = int(server.server_address[1])
            url_host = self.host
            if url_host in ("", "0.0.0.0"):
                url_host = "127.0.0.1"
            elif url_host == "::":
                url_host = "::1"
            if ":" in url_host:
                url_host = f"[{url_host}]"
            self.url = f"http://{url_host}:{self.port}"
            thread = threading.Thread(target=server.serve, name=f"fake-ollama-{self.port}", daemon=True)
            self._server, self._thread = server, thread
            thread.start()
            return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and all connections, wake handlers, join threads."""
        with self._lifecycle:
            server, thread = self._server, self._thread
            if server is None:
                return
            self._server = self._thread = None
            handler_threads = server.close_all()
            with contextlib.suppress(OSError):
                server.wake_w.send(b"x")
            if thread is not None:
                thread.join(timeout)
            server.server_close()
            deadline = time.monotonic() + timeout
            for handler_thread in handler_threads:
                handler_thread.join(max(0.0, deadline - time.monotonic()))
            server.wake_r.close()
            server.wake_w.close()
            with self._cond:
                self.active = 0
                self._cond.notify_all()

    def restart(self) -> None:
        """Stop (if running) and start again on the same port."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- observation --------------------------------------------------------

    def count(self, path: str | None = None, method: str | None = None) -> int:
        """Number of requests received (optionally for one path and/or method)."""
        method = method.upper() if method else None
        with self._cond:
            return sum(
                n
                for (m, p), n in self._counts.items()
                if (path is None or p == path) and (method is None or m == method)
            )

    def clear(self) -> None:
        """Forget recorded requests and counters (models, mode and settings stay)."""
        with self._cond:
            self.requests.clear()
            self._counts.clear()
            self.disconnects = 0
            self.completed_streams = 0
            self.peak_active = self.active
            self._cond.notify_all()

    def stats(self) -> dict[str, Any]:
        with self._cond:
            by_path: dict[str, int] = {}
            for (_, path), n in self._counts.items():
                by_path[path] = by_path.get(path, 0) + n
            return {
                "name": self.name,
                "count_by_path": by_path,
                "total": sum(by_path.values()),
                "active": self.active,
                "disconnects": self.disconnects,
                "completed_streams": self.completed_streams,
                "models": [entry["name"] for entry in self.models.values()],
                "loaded": [entry["name"] for entry in self.loaded.values()],
                "mode": self.mode,
            }

    def wait_for(self, predicate: Callable[[FakeOllama], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(self)`` holds; re-checked on every counter change."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    # ---- models -------------------------------------------------------------

    def add_model(self, name: str, *, like: dict[str, Any] | None = None) -> dict[str, Any]:
        """Add (or refresh) a model in ``models``; returns its tag entry."""
        entry = _make_model_entry(name, like=like)
        with self._cond:
            self.models[normalize_model_name(name)] = entry
        return entry

    def remove_model(self, name: str) -> bool:
        key = normalize_model_name(name)
        with self._cond:
            self.loaded.pop(key, None)
            return self.models.pop(key, None) is not None

    def _get_model(self, name: str) -> dict[str, Any] | None:
        with self._cond:
            return self.models.get(normalize_model_name(name))

    def _model_entries(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.models.values())

    def _loaded_entries(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self.loaded.values())

    def _load(self, entry: dict[str, Any]) -> None:
        key = normalize_model_name(entry["name"])
        with self._cond:
            current = self.loaded.get(key)
            if current is not None and current["digest"] == entry["digest"]:
                return
            self.loaded[key] = {
                "name": entry["name"],
                "model": entry["model"],
                "size": entry["size"],
                "digest": entry["digest"],
                "details": entry["details"],
                "expires_at": _rfc3339(time.time() + 300),
                "size_vram": entry["size"],
            }

    def _unload(self, name: str) -> None:
        with self._cond:
            self.loaded.pop(normalize_model_name(name), None)

    def _has_blob(self, digest: str) -> bool:
        with self._cond:
            return digest.replace("-", ":", 1) in self.blobs

    def _put_blob(self, digest: str, data: bytes) -> None:
        with self._cond:
            self.blobs[digest] = data

    # ---- bookkeeping called by the handler ----------------------------------

    def _record(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        parsed: Any,
    ) -> None:
        request = RecordedRequest(method, path, _Headers(headers), body, parsed, time.time())
        with self._cond:
            self.requests.append(request)
            limit = self.max_recorded
            if limit is not None and len(self.requests) > max(1, limit) * 2:
                del self.requests[: len(self.requests) - limit]
            key = (method, path)
            self._counts[key] = self._counts.get(key, 0) + 1
            self._cond.notify_all()

    def _enter(self) -> None:
        with self._cond:
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            self._cond.notify_all()

    def _leave(self) -> None:
        with self._cond:
            self.active = max(0, self.active - 1)
            self._cond.notify_all()

    def _disconnected(self) -> None:
        with self._cond:
            self.disconnects += 1
            self._cond.notify_all()

    def _stream_completed(self, delta: int) -> None:
        with self._cond:
            self.completed_streams += delta
            self._cond.notify_all()

    def _next_id(self) -> int:
        with self._cond:
            self._ids += 1
            return self._ids

    def _settings(self) -> dict[str, Any]:
        paths = self.fault_paths
        return {
            "mode": self.mode,
            "fault_paths": None if paths is None else sorted(paths),
            "first_byte_delay": self.first_byte_delay,
            "chunk_delay": self.chunk_delay,
            "die_after_chunks": self.die_after_chunks,
            "hang_seconds": self.hang_seconds,
            "tokens": list(self.tokens),
            "version": self.version,
        }

    def _apply_control(self, changes: dict[str, Any]) -> None:
        """Validate everything first, then apply (all or nothing)."""
        updates: dict[str, Any] = {}
        for key, value in changes.items():
            if key == "mode":
                if value not in MODES:
                    raise _HTTPError(400, f"unknown mode {value!r}; expected one of {list(MODES)}")
                updates[key] = value
            elif key in _CONTROL_FLOATS:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise _HTTPError(400, f"{key} must be a non-negative number")
                updates[key] = float(value)
            elif key == "die_after_chunks":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise _HTTPError(400, "die_after_chunks must be a non-negative integer")
                updates[key] = value
            elif key == "fault_paths":
                if value is not None and not (isinstance(value, list) and all(isinstance(p, str) for p in value)):
                    raise _HTTPError(400, "fault_paths must be a list of paths or null")
                updates[key] = None if value is None else set(value)
            elif key == "tokens":
                if not (isinstance(value, list) and all(isinstance(t, str) for t in value)):
                    raise _HTTPError(400, "tokens must be a list of strings")
                updates[key] = list(value)
            elif key == "version":
                if not isinstance(value, str):
                    raise _HTTPError(400, "version must be a string")
                updates[key] = value
            else:
                raise _HTTPError(400, f"unknown control attribute {key!r}")
        for key, value in updates.items():
            setattr(self, key, value)


# ------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fake_ollama", description="Serve a fake Ollama node.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on stdout)")
    parser.add_argument("--models", default="llama3:latest", help="comma-separated model names")
    parser.add_argument("--version", default="0.6.5", help="version reported by /api/version")
    parser.add_argument("--name", default="")
    parser.add_argument(
        "--tokens",
        default=None,
        help='JSON list of streamed tokens, e.g. \'["a","b"]\'',
    )
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--first-byte-delay", type=float, default=0.0)
    parser.add_argument("--mode", choices=MODES, default="ok")
    args = parser.parse_args(argv)

    kwargs: dict[str, Any] = {}
    if args.tokens is not None:
        kwargs["tokens"] = json.loads(args.tokens)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    fake = FakeOllama(
        models,
        host=args.host,
        port=args.port,
        version=args.version,
        name=args.name,
        **kwargs,
    )
    fake.chunk_delay = args.chunk_delay
    fake.first_byte_delay = args.first_byte_delay
    fake.mode = args.mode

    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake.start()
    print(f"fake ollama listening on {fake.url}", flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
