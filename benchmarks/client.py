"""Load generator for streams (and plain requests when wrk is not installed): asyncio, raw sockets.

Runs as its own process so the harness can read its CPU time; prints one JSON object as its
last stdout line (and `{"event": "all_open"}` in `hold` mode once every stream has started).

Modes:
  plain    `--connections` keep-alive connections send non-streaming requests for
           `--duration` seconds; latency histogram in microseconds (wrk's stand-in).
  latency  `--connections` keep-alive connections each run streams one after another until
           `--streams` streams are done; per stream the time to the first NDJSON line, per
           line the delay between the node's stamp (`sent_ns`) and its arrival here.
  hold     `--streams` concurrent streams, one connection each, opened in batches; counts
           the ones that completed (final `"done":true` line and the end of the chunked body).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

SENT_NS = re.compile(rb'"sent_ns":(\d+)')


class HTTPError(Exception):
    pass


def request_bytes(host: str, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    status_line = await reader.readline()
    if not status_line:
        raise HTTPError("connection closed before the status line")
    status = int(status_line.split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n"):
            return status, headers
        if not line:
            raise HTTPError("connection closed in the headers")
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()


async def read_chunks(reader: asyncio.StreamReader):  # type: ignore[no-untyped-def]
    """Yield each HTTP chunk's data as it arrives (the end of the body ends the iteration)."""
    while True:
        size_line = await reader.readline()
        if not size_line:
            raise HTTPError("connection closed mid-body")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            await reader.readline()  # the empty trailer
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def one_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status, headers = await read_head(reader)
    if b"content-length" in headers:
        return status, await reader.readexactly(int(headers[b"content-length"]))
    parts = [chunk async for chunk in read_chunks(reader)]
    return status, b"".join(parts)


async def stream_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, delays: list[int] | None
) -> int:
    """One streamed request; returns nanoseconds to the first complete NDJSON line."""
    started = time.time_ns()
    writer.write(request)
    status, _headers = await read_head(reader)
    if status != 200:
        body = await reader.read(300)
        raise HTTPError(f"HTTP {status}: {body[:200]!r}")
    first = 0
    done = False
    pending = b""
    async for data in read_chunks(reader):
        now = time.time_ns()
        pending += data
        if b"\n" not in pending:
            continue
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not first:
                first = now - started
            if delays is not None and (match := SENT_NS.search(line)):
                delays.append(now - int(match.group(1)))
            if b'"done":true' in line:
                done = True
    if not done:
        raise HTTPError("stream ended without its final line")
    return first


async def run_plain(host: str, port: int, path: str, body: bytes, connections: int, duration: float) -> dict:
    request = request_bytes(host, path, body)
    latencies: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    stop_at = time.perf_counter() + duration

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                started = time.perf_counter_ns()
                writer.write(request)
                status, _ = await one_response(reader)
                latencies[(time.perf_counter_ns() - started) // 1000] += 1
                if status != 200:
                    errors[f"HTTP {status}"] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    results = await asyncio.gather(*(worker() for _ in range(connections)), return_exceptions=True)
    elapsed = time.perf_counter() - started
    for result in results:
        if isinstance(result, BaseException):
            errors[type(result).__name__] += 1
    return {
        "requests": sum(latencies.values()),
        "duration_s": elapsed,
        "errors": dict(errors),
        "hist": sorted(latencies.items()),
    }


async def run_latency(
    host: str, port: int, path: str, body: bytes, connections: int, streams: int, stagger: float = 0.0
) -> dict[str, Any]:
    request = request_bytes(host, path, body)
    ttfb_ns: list[int] = []
    delays: list[int] = []
    errors: Counter[str] = Counter()
    remaining = [streams]

    async def user(offset: float) -> None:
        # Streams of equal length started together stay in step, and every round's requests
        # would then queue behind each other at the proxy: spread the users' starts.
        await asyncio.sleep(offset)
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while remaining[0] > 0:
                remaining[0] -= 1
                try:
                    ttfb_ns.append(await stream_once(reader, writer, request, delays))
                except (HTTPError, OSError, asyncio.IncompleteReadError) as exc:
                    errors[str(exc)[:100]] += 1
                    return
        finally:
            writer.close()

    await asyncio.gather(*(user(i * stagger) for i in range(connections)))
    return {
        "streams": len(ttfb_ns),
        "errors": dict(errors),
        "ttfb_us": [t // 1000 for t in ttfb_ns],
        "delay_us": [d // 1000 for d in delays],
    }


async def run_hold(
    host: str, port: int, path: str, body: bytes, streams: int, batch: int, pause: float, timeout: float
) -> dict[str, Any]:
    request = request_bytes(host, path, body)
    errors: Counter[str] = Counter()
    opened = [0]
    completed = [0]
    all_open = asyncio.Event()

    tasks = []
    began = time.perf_counter()

    async def one_tracked() -> None:
        started = False
        writer = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status, _ = await read_head(reader)
            if status != 200:
                raise HTTPError(f"HTTP {status}")
            seen_done = False
            async for data in read_chunks(reader):
                if not started:
                    started = True
                    opened[0] += 1
                    if opened[0] == streams:
                        all_open.set()
                if b'"done":true' in data:
                    seen_done = True
            if not seen_done:
                raise HTTPError("stream ended without its final line")
            completed[0] += 1
        except (HTTPError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[(str(exc) or type(exc).__name__)[:100]] += 1
        finally:
            if writer is not None:
                writer.close()

    async def announce() -> None:
        await all_open.wait()
        print(json.dumps({"event": "all_open", "after_s": round(time.perf_counter() - began, 3)}), flush=True)

    announcer = asyncio.create_task(announce())
    for i in range(streams):
        tasks.append(asyncio.create_task(one_tracked()))
        if (i + 1) % batch == 0:
            await asyncio.sleep(pause)  # a burst of thousands of SYNs would overflow the accept queue
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*tasks), timeout)
    announcer.cancel()
    return {
        "streams": streams,
        "opened": opened[0],
        "completed": completed[0],
        "errors": dict(errors),
        "all_open": all_open.is_set(),
        "duration_s": round(time.perf_counter() - began, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client", description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("plain", "latency", "hold"))
    parser.add_argument("url", help="e.g. http://127.0.0.1:11434/api/generate")
    parser.add_argument("--body", required=True, help="the JSON request body")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--batch", type=int, default=100, help="hold: streams opened per batch")
    parser.add_argument("--pause", type=float, default=0.05, help="hold: seconds between batches")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--stagger", type=float, default=0.0, help="latency: seconds between the users' starts")
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    host, port, path, body = url.hostname or "127.0.0.1", url.port or 80, url.path, args.body.encode()
    if args.mode == "plain":
        result = asyncio.run(run_plain(host, port, path, body, args.connections, args.duration))
    elif args.mode == "latency":
        result = asyncio.run(run_latency(host, port, path, body, args.connections, args.streams, args.stagger))
    else:
        result = asyncio.run(run_hold(host, port, path, body, args.streams, args.batch, args.pause, args.timeout))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
