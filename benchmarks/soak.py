"""Soak test: minutes of mixed load while nodes are killed and restarted at random.

Starts N fake Ollama nodes (``python -m tests.fake_ollama``, one subprocess each) and the
proxy as the README runs it (``flask --app aivonx init``, then gunicorn with gevent
workers): by default on the embedded SQLite file with in-memory state and one worker;
``--redis URL`` (and optionally ``--database URL``) runs two workers sharing Redis. Then
``--clients`` threads send mixed streaming and non-streaming requests (/api/generate,
/api/chat, /api/embed, /v1/chat/completions) for ``--duration`` seconds while a killer
SIGKILLs a random node every ``--kill-every`` seconds (on average) and restarts it on the same
port a few seconds later. At the end it prints what happened and exits non-zero when the
proxy is to blame for anything.

    python -m benchmarks.soak --duration 300          # make soak
    python -m benchmarks.soak --duration 120 --redis redis://127.0.0.1:6379/0

The rule, "every request that could be served was served":

* A request that got an error answer (or no answer) counts as a proxy failure only when at
  least one node with the model was up for the whole time the request was in flight (from
  before it was sent until its answer ended). If every node was down at some moment of that
  window, it is reported as "no node could serve", not as a failure. All nodes have the
  model, and by default one node at most is down at a time, so normally every request counts.
* A stream whose node was killed after the first byte cannot be retried (the client already
  has bytes): it must end with an ``{"error": ...}`` line (or an SSE error event). Those are
  reported as mid-stream cuts, not failures; a stream that ends with neither its final
  ``done`` chunk nor an error line is a silent cut and counts as a failure.
* Counters: after the load stops, the management API's active-request total must be 0.
* Memory: every worker's RSS (from /proc) at the start of the load and at the end.

Everything started here is stopped by its PID in ``finally``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MODEL = "llama3:latest"
PASSWORD = "soak-admin-password"
TOKENS = [f"tok{i} " for i in range(20)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what}: not within {timeout}s")


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL after `timeout`, by PID."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (gunicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command may contain spaces and parentheses: fields start after the last ")".
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


# -- the nodes ---------------------------------------------------------------------------------


class Node:
    """A fake Ollama node in a subprocess; its up times are recorded for the serving rule."""

    def __init__(self, index: int, chunk_delay: float, logdir: Path) -> None:
        self.name = f"node{index}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.chunk_delay = chunk_delay
        self.log_path = logdir / f"{self.name}.log"
        self.process: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.up_since: float | None = None
        self.up_intervals: list[tuple[float, float]] = []  # closed intervals, monotonic time
        self.kills = 0

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "tests.fake_ollama", "--port", str(self.port), "--name", self.name,
                    "--models", f"{MODEL},nomic-embed-text:latest", "--tokens", json.dumps(TOKENS),
                    "--chunk-delay", str(self.chunk_delay),
                ],
                cwd=ROOT, stdout=log, stderr=log,
            )  # fmt: skip
        wait_until(lambda: requests.get(self.url + "/api/version", timeout=1).ok, 15, f"{self.name} answering")
        with self.lock:
            self.up_since = time.monotonic()

    def kill(self) -> None:
        with self.lock:
            if self.up_since is not None:
                # Counted as down from just before the kill: a request the kill cut is not excused twice.
                self.up_intervals.append((self.up_since, time.monotonic()))
            self.up_since = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.kills += 1

    @property
    def up(self) -> bool:
        return self.up_since is not None

    def was_up_throughout(self, start: float, end: float) -> bool:
        with self.lock:
            intervals = [*self.up_intervals, *([(self.up_since, float("inf"))] if self.up_since is not None else [])]
        return any(since <= start and end <= until for since, until in intervals)


# -- the proxy -----------------------------------------------------------------------------------


@dataclass
class Proxy:
    url: str
    process: subprocess.Popen
    log_path: Path
    headers: dict[str, str] = field(default_factory=dict)

    def workers(self) -> list[int]:
        return children_of(self.process.pid)

    def active_total(self) -> int:
        response = requests.get(self.url + "/api/proxy/active-requests", headers=self.headers, timeout=10)
        response.raise_for_status()
        return int(response.json()["total"])


def start_proxy(args: argparse.Namespace, nodes: list[Node], workdir: Path) -> Proxy:
    port = free_port()
    env = {
        **os.environ,
        "AIVONX_ENV": "development",
        "AIVONX_SECRET_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
        "AIVONX_ADMIN_PASSWORD": PASSWORD,
        "AIVONX_DATABASE_URL": args.database or f"sqlite:///{workdir / 'aivonx.sqlite3'}",
        "AIVONX_NODES": ",".join(node.url for node in nodes),
        "AIVONX_BIND": f"127.0.0.1:{port}",
        "AIVONX_WORKERS": str(args.workers),
        "AIVONX_STANDBY_INTERVAL": "1",
        "AIVONX_HEALTH_INTERVAL": "5",
        "AIVONX_GRACEFUL_TIMEOUT": "5",
        "AIVONX_LOG_LEVEL": "WARNING",  # one line per request would be most of the run's I/O
    }
    env.pop("AIVONX_REDIS_URL", None)
    if args.redis:
        env.update(AIVONX_REDIS_URL=args.redis, AIVONX_REDIS_PREFIX=args.redis_prefix)
    init = subprocess.run(
        [BIN / "flask", "--app", "aivonx", "init"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    if init.returncode != 0:
        raise RuntimeError(f"flask init failed:\n{init.stderr}")
    log_path = workdir / "gunicorn.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [BIN / "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
    proxy = Proxy(f"http://127.0.0.1:{port}", process, log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited:\n" + log_path.read_text()[-3000:])
        return len(requests.get(proxy.url + "/api/tags", timeout=2).json()["models"]) > 0

    wait_until(ready, 60, "the proxy serving")
    wait_until(lambda: len(proxy.workers()) == args.workers, 30, "every worker started")
    credentials = {"username": "admin", "password": PASSWORD}
    login = requests.post(proxy.url + "/api/account/login", json=credentials, timeout=10)
    login.raise_for_status()
    proxy.headers = {"Authorization": f"Bearer {login.json()['access']}"}
    return proxy


# -- the load ------------------------------------------------------------------------------------

OK, MIDSTREAM, SILENT_CUT, FAILED = "ok", "midstream error line", "silent cut", "failed"


@dataclass
class Outcome:
    kind: str
    started: float
    ended: float
    reason: str = ""


def one_request(session: requests.Session, url: str, rng: random.Random) -> tuple[str, str]:
    """Send one random request; (kind, reason)."""
    roll = rng.random()
    if roll < 0.35:
        route, body, stream = "/api/generate", {"model": "llama3", "prompt": "soak"}, True
    elif roll < 0.55:
        route, stream = "/api/chat", True
        body = {"model": "llama3", "messages": [{"role": "user", "content": "soak"}]}
    elif roll < 0.8:
        route, body, stream = "/api/generate", {"model": "llama3", "prompt": "soak", "stream": False}, False
    elif roll < 0.9:
        route, body, stream = "/api/embed", {"model": "nomic-embed-text", "input": "soak"}, False
    else:
        route, stream = "/v1/chat/completions", True
        body = {"model": "llama3", "messages": [{"role": "user", "content": "soak"}], "stream": True}
    response = session.post(url + route, json=body, stream=stream, timeout=(5, 60))
    with response:
        if response.status_code != 200:
            return FAILED, f"HTTP {response.status_code}: {response.text[:120]}"
        if not stream:
            payload = response.json()
            complete = "embeddings" in payload if route == "/api/embed" else payload.get("done") is True
            return (OK, "") if complete else (FAILED, f"incomplete answer: {str(payload)[:120]}")
        text = b"".join(response.iter_content(chunk_size=None)).decode("utf-8", "replace")
    if route.startswith("/v1/"):
        events = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
        if events and events[-1] == "[DONE]":
            return OK, ""
        if any('"error"' in event for event in events):
            return MIDSTREAM, ""
        return SILENT_CUT, text[-120:]
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    if lines and "error" in lines[-1]:
        return MIDSTREAM, ""
    if lines and lines[-1].get("done") is True:
        return OK, ""
    return SILENT_CUT, text[-120:]


def client_loop(url: str, deadline: float, seed: int, outcomes: list[Outcome], lock: threading.Lock) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            kind, reason = one_request(session, url, rng)
        except (requests.RequestException, ValueError) as exc:
            kind, reason = FAILED, f"{type(exc).__name__}: {str(exc)[:120]}"
            session.close()
            session = requests.Session()  # a broken keep-alive connection is not reused
        outcome = Outcome(kind, started, time.monotonic(), reason)
        with lock:
            outcomes.append(outcome)
    session.close()


def killer_loop(nodes: list[Node], deadline: float, args: argparse.Namespace, rng: random.Random) -> None:
    while True:
        pause = rng.uniform(0.5, 1.5) * args.kill_every
        if time.monotonic() + pause + args.max_down + 5 > deadline:
            return  # no kill whose restart would fall after the end
        time.sleep(pause)
        up = [node for node in nodes if node.up]
        if len(up) <= args.keep_up:
            continue
        victim = rng.choice(up)
        victim.kill()
        time.sleep(rng.uniform(args.min_down, args.max_down))
        victim.start()


def classify(outcomes: list[Outcome], nodes: list[Node]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for outcome in outcomes:
        if outcome.kind == FAILED:
            servable = any(node.was_up_throughout(outcome.started, outcome.ended) for node in nodes)
            kind = "failed (proxy)" if servable else "failed (no node could serve)"
            counts[kind] += 1
            if servable:
                reasons[outcome.reason.split(":")[0] + ": " + outcome.reason[:90]] += 1
        else:
            counts[outcome.kind] += 1
    return {"counts": counts, "reasons": reasons}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300, help="seconds of load (default 300)")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32, help="concurrent client threads")
    parser.add_argument("--kill-every", type=float, default=15, help="mean seconds between node kills")
    parser.add_argument("--min-down", type=float, default=2, help="shortest time a killed node stays down")
    parser.add_argument("--max-down", type=float, default=5, help="longest time a killed node stays down")
    parser.add_argument("--keep-up", type=int, default=1, help="never kill when only this many nodes are up")
    parser.add_argument("--chunk-delay", type=float, default=0.02, help="node's delay between streamed tokens")
    parser.add_argument("--redis", help="Redis URL: shared state and two workers")
    parser.add_argument("--database", help="SQLAlchemy URL (default: a SQLite file in a temporary directory)")
    parser.add_argument("--workers", type=int, help="gunicorn workers (default 1, or 2 with --redis)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    args.workers = args.workers or (2 if args.redis else 1)
    args.redis_prefix = f"aivonx-soak-{uuid.uuid4().hex[:8]}:"

    nodes: list[Node] = []
    proxy: Proxy | None = None
    with tempfile.TemporaryDirectory(prefix="aivonx-soak-") as tmp:
        workdir = Path(tmp)
        try:
            nodes = [Node(i + 1, args.chunk_delay, workdir) for i in range(args.nodes)]
            for node in nodes:
                node.start()
            proxy = start_proxy(args, nodes, workdir)
            workers = proxy.workers()
            # Warm up (imports, connection pools) before the memory baseline.
            for _ in range(50):
                requests.post(proxy.url + "/api/generate", json={"model": "llama3", "prompt": "w"}, timeout=30)
            rss_start = {pid: rss_kib(pid) for pid in workers}
            print(
                f"soak: {args.nodes} nodes, {args.workers} worker(s), {args.clients} clients, "
                f"{args.duration:g}s, state: {'redis' if args.redis else 'memory'}, "
                f"database: {'given' if args.database else 'sqlite'}",
                flush=True,
            )

            outcomes: list[Outcome] = []
            lock = threading.Lock()
            deadline = time.monotonic() + args.duration
            rng = random.Random(args.seed)
            threads = [
                threading.Thread(target=client_loop, args=(proxy.url, deadline, args.seed * 1000 + i, outcomes, lock))
                for i in range(args.clients)
            ]
            killer = threading.Thread(target=killer_loop, args=(nodes, deadline, args, rng))
            for thread in [*threads, killer]:
                thread.daemon = True
                thread.start()
            while killer.is_alive() or any(t.is_alive() for t in threads):
                time.sleep(1)
                if proxy.process.poll() is not None:
                    raise RuntimeError("gunicorn died:\n" + proxy.log_path.read_text()[-3000:])

            time.sleep(2)  # let the last releases land
            active = proxy.active_total()
            workers_end = proxy.workers()
            rss_end = {pid: rss_kib(pid) for pid in workers_end}
            result = classify(outcomes, nodes)
            counts = result["counts"]
            failed = counts["failed (proxy)"] + counts[SILENT_CUT]

            print(f"requests sent:                {len(outcomes)}")
            print(f"served ok:                    {counts[OK]}")
            print(f"mid-stream cuts, error line:  {counts[MIDSTREAM]}")
            print(f"failed, no node could serve:  {counts['failed (no node could serve)']}")
            print(f"failed, proxy to blame:       {counts['failed (proxy)']}")
            print(f"silent stream cuts:           {counts[SILENT_CUT]}")
            for reason, n in result["reasons"].most_common(8):
                print(f"    {n:6d}  {reason}")
            print(f"node kills survived:          {sum(node.kills for node in nodes)}")
            print(f"active counters at end:       {active}")
            same = workers == workers_end
            print(f"workers:                      {workers} -> {workers_end}{'' if same else ' (replaced!)'}")
            for pid in sorted(set(workers) | set(workers_end)):
                start, end = rss_start.get(pid), rss_end.get(pid)
                print(f"worker {pid} RSS:  start {start} KiB, end {end} KiB")
            ok = failed == 0 and active == 0 and same
            print("soak:", "PASS" if ok else "FAIL")
            return 0 if ok else 1
        finally:
            if proxy is not None:
                stop_process(proxy.process)
            for node in nodes:
                stop_process(node.process)
            if args.redis:
                import redis

                client = redis.Redis.from_url(args.redis)
                keys = list(client.scan_iter(f"{args.redis_prefix}*"))
                if keys:
                    client.delete(*keys)
                client.close()


if __name__ == "__main__":
    raise SystemExit(main())
