"""The benchmark harness: aivonx against a direct connection and nginx, in one run.

Starts fast fake Ollama nodes (`benchmarks.node`, one process, one port per node), the proxy
exactly as the README runs it (`flask --app aivonx init`, then `gunicorn -c gunicorn.conf.py
wsgi:app`: gevent workers, default worker count, SQLite + in-memory state, request log on),
and nginx (`least_conn` upstream over the same nodes) as the near-native bound; then measures
each path in the same run:

1. non-streaming `/api/generate` latency at concurrency 1 (p50, p99, added ms);
2. throughput and p99 at concurrency 64 and 256;
3. streaming: time to the first line and per-chunk delay (node stamp to client arrival),
   the node writing a chunk every 5 ms;
4. thousands of concurrent long streams through one worker: completions and worker memory;
5. the cost as the fleet grows (3, 30, 300 nodes registered);
6. with `--redis URL` only: throughput with 1 and 2 workers sharing that Redis (production
   mode's state), to show what a second worker adds on this machine.

Plain requests are sent by wrk (with `wrk_post.lua`), streams by `benchmarks.client`
(asyncio, raw sockets); both run as their own processes, whose CPU time is reported so a
saturated generator shows. Everything listens on 127.0.0.1 and is stopped by PID at the end,
also on Ctrl-C or error.

    python -m benchmarks [--quick] [--output PATH] [sizes...]     (`make bench`)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LUA = Path(__file__).with_name("wrk_post.lua")
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "latest.json"
PLAIN_BODY = json.dumps({"model": "llama3", "prompt": "hi", "stream": False})
MODEL = "llama3:latest"
CLK_TCK = os.sysconf("SC_CLK_TCK")

TARGETS = {
    "added_p50_ms": 1.0,
    "added_p99_ms": 3.0,
    "throughput_ratio_c64": 0.5,
    "chunk_delay_added_p99_ms": 1.0,
    "ttfb_added_p50_ms": 2.0,
    "stream_memory_kib": 64.0,
}


def stream_body(chunks: int, interval_ms: float) -> str:
    return json.dumps(
        {"model": "llama3", "prompt": "hi", "options": {"num_predict": chunks}, "bench_interval_ms": interval_ms}
    )


@dataclass
class Sizes:
    """Every size and duration of a run; `--quick` swaps in tiny ones."""

    nodes: int = 3
    latency_rounds: int = 6
    latency_seconds: float = 2.0
    concurrency: tuple[int, ...] = (64, 256)
    throughput_seconds: float = 5.0
    warmup_seconds: float = 1.0
    stream_users: int = 4
    stream_count: int = 24
    stream_chunks: int = 100
    stream_interval_ms: float = 5.0
    hold_streams: int = 2000
    hold_chunks: int = 20
    hold_interval_ms: float = 1000.0
    hold_nginx: bool = True
    fleet: tuple[int, ...] = (3, 30, 300)
    fleet_rounds: int = 3
    fleet_seconds: float = 1.5
    fleet_concurrency: int = 64


QUICK = Sizes(
    latency_rounds=1,
    latency_seconds=1,
    concurrency=(4, 16),
    throughput_seconds=1,
    warmup_seconds=0,
    stream_users=2,
    stream_count=4,
    stream_chunks=20,
    hold_streams=40,
    hold_chunks=6,
    hold_interval_ms=100.0,
    fleet=(3, 10),
    fleet_rounds=1,
    fleet_seconds=0.5,
    fleet_concurrency=8,
)


# -- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return sorted(found)


def percentile_hist(hist: Iterable[tuple[int, int]], q: float) -> float:
    """Nearest-rank percentile of a (value, count) histogram."""
    items = sorted(hist)
    total = sum(count for _, count in items)
    if not total:
        return math.nan
    rank = max(1, math.ceil(q * total))
    seen = 0
    for value, count in items:
        seen += count
        if seen >= rank:
            return float(value)
    return float(items[-1][0])


def percentile(values: Sequence[float], q: float) -> float:
    return percentile_hist(Counter(values).items(), q)


def ms(us: float) -> float:
    return round(us / 1000, 3)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException, OSError, ValueError, KeyError):
            if predicate():
                return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else "unknown"


def ensure_tools(install: bool) -> dict[str, bool]:
    """Which of nginx and wrk are usable; installs the Debian packages first when asked."""
    missing = [tool for tool in ("nginx", "wrk") if not find_tool(tool)]
    if missing and install:
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise SystemExit(
                f"{', '.join(missing)} not installed and cannot install them here (needs root and apt-get): "
                "run `apt-get install -y nginx wrk`, or pass --no-install to run without them"
            )
        print(f"installing {' '.join(missing)} (apt-get install -y nginx wrk) ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(["apt-get", "install", "-y", "nginx", "wrk"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"apt-get install -y nginx wrk failed:\n{done.stderr[-2000:]}")
    return {tool: find_tool(tool) is not None for tool in ("nginx", "wrk")}


def find_tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


# -- the processes ---------------------------------------------------------------------------


@dataclass
class Proxy:
    url: str
    master: subprocess.Popen
    worker_pids: list[int]
    log: Path
    nodes: int


@dataclass
class Harness:
    sizes: Sizes
    workdir: Path
    use_wrk: bool
    use_nginx: bool
    processes: list[subprocess.Popen] = field(default_factory=list)
    stop_signals: dict[int, int] = field(default_factory=dict)
    node_ports: list[int] = field(default_factory=list)
    node_pid: int = 0
    nginx_ports: dict[int, int] = field(default_factory=dict)
    nginx_worker: int = 0

    # ---- lifecycle

    def spawn(self, argv: Sequence[str | Path], **kwargs: Any) -> subprocess.Popen:
        # Own session: a Ctrl-C reaches only the harness, which then stops everything in order.
        process = subprocess.Popen([str(a) for a in argv], cwd=ROOT, start_new_session=True, **kwargs)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        sig = self.stop_signals.pop(process.pid, signal.SIGTERM)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        if process in self.processes:
            self.processes.remove(process)

    def close(self) -> None:
        for process in reversed(list(self.processes)):
            self.stop(process)

    # ---- nodes, proxy, nginx

    def start_nodes(self, count: int) -> None:
        process = self.spawn(
            [sys.executable, "-m", "benchmarks.node", "--count", count, "--models", MODEL],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark node process exited before listening")
        self.node_ports = json.loads(line)["ports"]
        self.node_pid = process.pid

    def node_urls(self, count: int) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.node_ports[:count]]

    def start_proxy(self, nodes: int, label: str, extra_env: dict[str, str] | None = None) -> Proxy:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        password = secrets.token_urlsafe(12)
        env = {
            **os.environ,
            "AIVONX_DATABASE_URL": f"sqlite:///{self.workdir}/{label}.sqlite3",
            "AIVONX_NODES": ",".join(self.node_urls(nodes)),
            "AIVONX_BIND": f"127.0.0.1:{port}",
            "AIVONX_REDIS_URL": "",
            "AIVONX_SECRET_KEY": secrets.token_urlsafe(32),
            "AIVONX_ADMIN_USER": "bench",
            "AIVONX_ADMIN_PASSWORD": password,
            # The log file stays on as by default, but in this run's directory, not instance/.
            "AIVONX_LOG_FILE": str(self.workdir / f"{label}-logs" / "aivonx.log"),
            **(extra_env or {}),
        }
        init = subprocess.run(
            [BIN / "flask", "--app", "aivonx", "init"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        if init.returncode != 0:
            raise RuntimeError(f"flask --app aivonx init failed:\n{init.stderr[-2000:]}")
        log = self.workdir / f"proxy-{label}.log"
        with log.open("wb") as sink:
            # The request log (one JSON line per request) goes to a file, as a process manager would take it.
            master = self.spawn(
                [BIN / "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"], env=env, stdout=sink, stderr=sink
            )
        wait_for(lambda: requests.get(url + "/", timeout=1).ok, 60, f"the proxy on {url}")
        token = requests.post(
            url + "/api/account/login", json={"username": "bench", "password": password}, timeout=10
        ).json()["access"]

        def all_active() -> bool:
            state = requests.get(url + "/api/proxy/state", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            return len(state.json()["pools"]["active"]) == nodes

        # Every worker probes on its own (no Redis); one worker is the default.
        wait_for(all_active, 90, f"{nodes} active nodes in the proxy", interval=0.3)
        workers = children(master.pid)
        return Proxy(url=url, master=master, worker_pids=workers, log=log, nodes=nodes)

    def stop_proxy(self, proxy: Proxy) -> None:
        self.stop(proxy.master)

    def start_nginx(self, fleets: Iterable[int]) -> None:
        prefix = self.workdir / "nginx"
        prefix.mkdir()
        blocks = []
        for count in sorted(set(fleets)):
            port = free_port()
            self.nginx_ports[count] = port
            servers = "".join(f"    server 127.0.0.1:{p};\n" for p in self.node_ports[:count])
            blocks.append(
                f"  upstream fleet{count} {{\n    least_conn;\n{servers}"
                "    keepalive 256;\n    keepalive_requests 1000000;\n  }\n"
                f"  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n"
                f"      proxy_pass http://fleet{count};\n      proxy_http_version 1.1;\n"
                '      proxy_set_header Connection "";\n      proxy_buffering off;\n'
                "      proxy_read_timeout 300s;\n    }\n  }\n"
            )
        user = "user root;\n" if os.geteuid() == 0 else ""
        temp = "".join(
            f"  {kind}_temp_path {prefix}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = (
            f"{user}worker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log warn;\n"
            "worker_rlimit_nofile 20000;\nevents {\n  worker_connections 10000;\n}\n"
            "http {\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 75s;\n"
            f"{temp}{''.join(blocks)}}}\n"
        )
        (prefix / "nginx.conf").write_text(conf)
        nginx = find_tool("nginx")
        master = self.spawn(
            [nginx, "-p", prefix, "-e", prefix / "error.log", "-c", prefix / "nginx.conf", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        first = next(iter(self.nginx_ports.values()))
        try:
            wait_for(lambda: requests.get(f"http://127.0.0.1:{first}/api/version", timeout=1).ok, 20, "nginx")
        except RuntimeError:
            raise RuntimeError(f"nginx did not start: {(prefix / 'error.log').read_text()[-1500:]}") from None
        self.nginx_worker = children(master.pid)[0]

    # ---- load generators

    def _run_generator(self, argv: Sequence[str | Path], env: dict[str, str] | None = None) -> tuple[str, float]:
        """Run a generator to its end; its stdout and its CPU seconds (from wait4's rusage)."""
        with tempfile.TemporaryFile("w+") as out:
            process = subprocess.Popen([str(a) for a in argv], cwd=ROOT, stdout=out, env=env, start_new_session=True)
            self.processes.append(process)
            try:
                _, status, usage = os.wait4(process.pid, 0)
            finally:
                self.processes.remove(process)
            process.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            text = out.read()
        if process.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited with {process.returncode}: {text[-1000:]}")
        return text, usage.ru_utime + usage.ru_stime

    def plain_load(self, url: str, connections: int, seconds: float, watch: dict[str, int]) -> dict[str, Any]:
        """Non-streaming POSTs for `seconds` over `connections` kept-alive connections."""
        before = {name: cpu_seconds(pid) for name, pid in watch.items()}
        started = time.perf_counter()
        if self.use_wrk:
            # wrk takes whole seconds only.
            argv = [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                LUA,
                url,
            ]
            text, gen_cpu = self._run_generator(argv, env={**os.environ, "BENCH_BODY": PLAIN_BODY})
            line = next(line for line in text.splitlines() if line.startswith("BENCH_JSON "))
            result = json.loads(line.removeprefix("BENCH_JSON "))
            result["errors"] = {k: v for k, v in result["errors"].items() if v}
        else:
            argv = [sys.executable, "-m", "benchmarks.client", "plain", url, "--body", PLAIN_BODY,
                    "--connections", connections, "--duration", seconds]  # fmt: skip
            text, gen_cpu = self._run_generator(argv)
            result = json.loads(text.strip().splitlines()[-1])
        wall = time.perf_counter() - started
        result["cpu_percent"] = {"generator": round(100 * gen_cpu / wall, 1)} | {
            name: round(100 * (cpu_seconds(pid) - before[name]) / wall, 1) for name, pid in watch.items()
        }
        return result

    def stream_client(self, mode: str, url: str, body: str, **options: Any) -> tuple[dict[str, Any], float]:
        argv: list[Any] = [sys.executable, "-m", "benchmarks.client", mode, url, "--body", body]
        for key, value in options.items():
            argv += [f"--{key}", value]
        text, gen_cpu = self._run_generator(argv)
        return json.loads(text.strip().splitlines()[-1]), gen_cpu


# -- the scenarios -------------------------------------------------------------------------


def summarize_plain(results: list[dict[str, Any]]) -> dict[str, Any]:
    hist: Counter[int] = Counter()
    requests_ = 0
    duration = 0.0
    errors: Counter[str] = Counter()
    for result in results:
        hist.update({value: count for value, count in result["hist"]})
        requests_ += result["requests"]
        duration += result["duration_s"]
        errors.update(result.get("errors") or {})
    return {
        "requests": requests_,
        "req_per_s": round(requests_ / duration, 1) if duration else 0.0,
        "p50_ms": ms(percentile_hist(hist.items(), 0.50)),
        "p99_ms": ms(percentile_hist(hist.items(), 0.99)),
        "errors": dict(errors),
    }


def latency_c1(h: Harness, targets: dict[str, str], rounds: int, seconds: float, warmup: float) -> dict[str, Any]:
    """Concurrency 1, in short rounds whose order rotates, so drift on a noisy machine hits every path."""
    names = list(targets)
    for name in names:
        if warmup > 0:
            h.plain_load(targets[name], 1, warmup, {})  # warm-up: pools, caches
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            runs[name].append(h.plain_load(targets[name], 1, seconds, {}))
    out = {name: summarize_plain(runs[name]) for name in names}
    for name in names:
        if name != "direct":
            out[name]["added_p50_ms"] = round(out[name]["p50_ms"] - out["direct"]["p50_ms"], 3)
            out[name]["added_p99_ms"] = round(out[name]["p99_ms"] - out["direct"]["p99_ms"], 3)
    return out


def throughput(
    h: Harness, targets: dict[str, str], concurrency: int, seconds: float, warmup: float, watch: dict[str, int]
) -> dict[str, Any]:
    out = {}
    for name, url in targets.items():
        if warmup > 0:
            h.plain_load(url, concurrency, warmup, {})
        result = h.plain_load(url, concurrency, seconds, watch)
        summary = summarize_plain([result])
        summary["cpu_percent"] = result["cpu_percent"]
        out[name] = summary
    for name in out:
        if name != "direct" and out["direct"]["req_per_s"]:
            out[name]["ratio_to_direct"] = round(out[name]["req_per_s"] / out["direct"]["req_per_s"], 3)
    return out


def streaming(h: Harness, targets: dict[str, str], sizes: Sizes) -> dict[str, Any]:
    body = stream_body(sizes.stream_chunks, sizes.stream_interval_ms)
    out = {}
    for name, url in targets.items():
        h.stream_client("latency", url, stream_body(2, 0), connections=1, streams=2)  # warm-up
        stagger = sizes.stream_chunks * sizes.stream_interval_ms / 1000 / sizes.stream_users
        result, gen_cpu = h.stream_client(
            "latency", url, body, connections=sizes.stream_users, streams=sizes.stream_count, stagger=stagger
        )
        out[name] = {
            "streams": result["streams"],
            "errors": result["errors"],
            "chunks": len(result["delay_us"]),
            "ttfb_p50_ms": ms(percentile(result["ttfb_us"], 0.5)),
            "ttfb_p99_ms": ms(percentile(result["ttfb_us"], 0.99)),
            "chunk_delay_p50_ms": ms(percentile(result["delay_us"], 0.5)),
            "chunk_delay_p99_ms": ms(percentile(result["delay_us"], 0.99)),
            "generator_cpu_s": round(gen_cpu, 2),
        }
    for name, row in out.items():
        if name != "direct":
            for key in ("ttfb_p50_ms", "ttfb_p99_ms", "chunk_delay_p50_ms", "chunk_delay_p99_ms"):
                row["added_" + key] = round(row[key] - out["direct"][key], 3)
    return out


def hold_streams(h: Harness, url: str, pid: int, sizes: Sizes) -> dict[str, Any]:
    """`hold_streams` concurrent long streams; RSS of `pid` before, while all are open, and peak."""
    h.stream_client("hold", url, stream_body(2, 10), streams=min(50, sizes.hold_streams), batch=50)  # warm-up
    time.sleep(1)
    before = rss_kib(pid)
    samples: list[int] = []
    at_all_open: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.2):
            with contextlib.suppress(OSError):
                samples.append(rss_kib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    body = stream_body(sizes.hold_chunks, sizes.hold_interval_ms)
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    argv = [sys.executable, "-m", "benchmarks.client", "hold", url, "--body", body,
            "--streams", str(sizes.hold_streams), "--batch", "100", "--pause", "0.05"]  # fmt: skip
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    h.processes.append(process)
    result: dict[str, Any] = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            event = json.loads(line)
            if event.get("event") == "all_open":
                at_all_open.append(rss_kib(pid))
            else:
                result = event
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    finally:
        h.processes.remove(process)
        stop.set()
        sampler.join()
    wall = time.perf_counter() - started
    if process.returncode != 0 or not result:
        raise RuntimeError(f"the hold client failed with {process.returncode}")
    during = at_all_open[0] if at_all_open else max(samples, default=before)
    peak = max([*samples, during])
    time.sleep(1)
    n = sizes.hold_streams
    return {
        "streams": n,
        "completed": result["completed"],
        "failed": n - result["completed"],
        "errors": result["errors"],
        "all_open": result["all_open"],
        "duration_s": result["duration_s"],
        "rss_before_kib": before,
        "rss_all_open_kib": during,
        "rss_peak_kib": peak,
        "rss_after_kib": rss_kib(pid),
        "per_stream_kib": round((during - before) / n, 1),
        "per_stream_peak_kib": round((peak - before) / n, 1),
        "cpu_percent": {
            "generator": round(100 * (usage.ru_utime + usage.ru_stime) / wall, 1),
            "server": round(100 * (cpu_seconds(pid) - cpu_before) / wall, 1),
        },
    }


# -- the run -------------------------------------------------------------------------------


def scale_workers(h: Harness, direct_url: str, redis_url: str, sizes: Sizes, watch: Any) -> dict[str, Any]:
    """Throughput at the first concurrency with 1, then 2 workers sharing Redis, one proxy at a time."""
    import redis

    concurrency = sizes.concurrency[0]
    out: dict[str, Any] = {}
    for workers in (1, 2):
        prefix = f"aivonx-bench-{secrets.token_hex(6)}:"
        env = {"AIVONX_WORKERS": str(workers), "AIVONX_REDIS_URL": redis_url, "AIVONX_REDIS_PREFIX": prefix}
        proxy = h.start_proxy(sizes.nodes, f"redis{workers}", env)
        try:
            targets = {"direct": direct_url, "aivonx": proxy.url + "/api/generate"}
            rows = throughput(h, targets, concurrency, sizes.throughput_seconds, sizes.warmup_seconds, watch(proxy))
        finally:
            h.stop_proxy(proxy)
            client = redis.Redis.from_url(redis_url)
            keys = list(client.scan_iter(f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()
        out[str(workers)] = rows
    return out


def run(sizes: Sizes, *, install: bool, nginx: bool, generator: str, redis_url: str | None = None) -> dict[str, Any]:
    needed = nginx or generator != "python"
    tools = ensure_tools(install and needed)
    use_wrk = generator == "wrk" or (generator == "auto" and tools["wrk"])
    if generator == "wrk" and not tools["wrk"]:
        raise SystemExit("--generator wrk: wrk is not installed (apt-get install -y wrk)")
    use_nginx = nginx and tools["nginx"]
    if use_wrk:
        plain_generator = tool_version(["wrk", "--version"]).split(" Copyright")[0]
    else:
        why = "wrk not installed" if not tools["wrk"] else "--generator python"
        plain_generator = f"benchmarks.client plain, asyncio ({why})"
    if use_nginx:
        nginx_label = tool_version([find_tool("nginx") or "nginx", "-v"])
    else:
        nginx_label = "nginx: skipped (--no-nginx)" if tools["nginx"] else "nginx: not installed"
    # Thousands of streams need thousands of descriptors in the proxy, the nodes and the client.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "arch": platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "note": "nodes, proxy, nginx and the load generator share these cores",
        },
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(sizes).items()},
        "generator": {"plain": plain_generator, "streams": "benchmarks.client (asyncio, raw sockets)"},
        "nginx": nginx_label,
        "proxy": "gunicorn -c gunicorn.conf.py wsgi:app (gevent, AIVONX_WORKERS="
        + os.environ.get("AIVONX_WORKERS", "1")
        + "), SQLite, in-memory state, request log on",
        "targets": TARGETS,
    }
    workdir = Path(tempfile.mkdtemp(prefix="aivonx-bench-"))
    h = Harness(sizes=sizes, workdir=workdir, use_wrk=use_wrk, use_nginx=use_nginx)
    fleets = sorted({sizes.nodes, *sizes.fleet})
    try:
        h.start_nodes(max(fleets))
        if use_nginx:
            h.start_nginx(fleets)
        path = "/api/generate"

        def targets(proxy: Proxy, nodes: int) -> dict[str, str]:
            out = {"direct": h.node_urls(1)[0] + path, "aivonx": proxy.url + path}
            if use_nginx:
                out["nginx"] = f"http://127.0.0.1:{h.nginx_ports[nodes]}{path}"
            return out

        def watch(proxy: Proxy) -> dict[str, int]:
            out = {"node": h.node_pid}
            out |= {f"aivonx_worker{i}": pid for i, pid in enumerate(proxy.worker_pids)}
            if use_nginx:
                out["nginx_worker"] = h.nginx_worker
            return out

        progress(f"nodes on {len(h.node_ports)} ports; proxy over {sizes.nodes}")
        proxy = h.start_proxy(sizes.nodes, "main")
        main_targets = targets(proxy, sizes.nodes)
        progress("1. latency at concurrency 1")
        report["latency_c1"] = latency_c1(
            h, main_targets, sizes.latency_rounds, sizes.latency_seconds, sizes.warmup_seconds
        )
        progress("2. throughput")
        report["throughput"] = {
            str(c): throughput(h, main_targets, c, sizes.throughput_seconds, sizes.warmup_seconds, watch(proxy))
            for c in sizes.concurrency
        }
        progress("3. streaming")
        report["streaming"] = streaming(h, main_targets, sizes)

        progress("5. fleet")
        report["fleet"] = {}
        for count in sizes.fleet:
            if count != sizes.nodes:
                h.stop_proxy(proxy)
                proxy = h.start_proxy(count, f"fleet{count}")
            fleet_targets = targets(proxy, count)
            row = latency_c1(h, fleet_targets, sizes.fleet_rounds, sizes.fleet_seconds, sizes.warmup_seconds)
            tput = throughput(
                h, fleet_targets, sizes.fleet_concurrency, sizes.fleet_seconds * 2, sizes.warmup_seconds, watch(proxy)
            )
            for name in row:
                row[name][f"req_per_s_c{sizes.fleet_concurrency}"] = tput[name]["req_per_s"]
                row[name][f"p99_ms_c{sizes.fleet_concurrency}"] = tput[name]["p99_ms"]
            report["fleet"][str(count)] = row
        h.stop_proxy(proxy)

        if redis_url:
            progress("6. 1 and 2 workers sharing Redis")
            report["workers"] = scale_workers(h, h.node_urls(1)[0] + path, redis_url, sizes, watch)

        progress(f"4. {sizes.hold_streams} concurrent streams through one worker")
        # gunicorn's worker_connections (default 1000) caps concurrent connections per worker.
        conns = str(max(sizes.hold_streams + 100, int(os.environ.get("AIVONX_WORKER_CONNECTIONS", "1000"))))
        proxy = h.start_proxy(sizes.nodes, "hold", {"AIVONX_WORKERS": "1", "AIVONX_WORKER_CONNECTIONS": conns})
        report["hold"] = {
            "aivonx": hold_streams(h, proxy.url + path, proxy.worker_pids[0], sizes)
            | {"worker_connections": int(conns)}
        }
        log = proxy.log.read_text(errors="replace")
        report["hold"]["aivonx"]["pool_full_warnings"] = log.count("Connection pool is full")
        h.stop_proxy(proxy)
        if use_nginx and sizes.hold_nginx:
            nginx_url = f"http://127.0.0.1:{h.nginx_ports[sizes.nodes]}{path}"
            report["hold"]["nginx"] = hold_streams(h, nginx_url, h.nginx_worker, sizes)
        report["proxy_log_errors"] = sum(
            p.read_text(errors="replace").count('"level": "ERROR"') for p in workdir.glob("proxy-*.log")
        )
    finally:
        h.close()
        shutil.rmtree(workdir, ignore_errors=True)
    report["verdict"] = verdict(report)
    return report


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def verdict(report: dict[str, Any]) -> dict[str, Any]:
    """Each moonshot target against this run's figure (a figure, never an assertion)."""
    lat = report["latency_c1"]["aivonx"]
    out: dict[str, Any] = {
        "added_p50_ms": [lat["added_p50_ms"], TARGETS["added_p50_ms"]],
        "added_p99_ms": [lat["added_p99_ms"], TARGETS["added_p99_ms"]],
    }
    first = str(report["sizes"]["concurrency"][0])
    out[f"throughput_ratio_c{first}"] = [report["throughput"][first]["aivonx"].get("ratio_to_direct"), 0.5]
    stream = report["streaming"]["aivonx"]
    out["chunk_delay_added_p99_ms"] = [stream["added_chunk_delay_p99_ms"], TARGETS["chunk_delay_added_p99_ms"]]
    out["ttfb_added_p50_ms"] = [stream["added_ttfb_p50_ms"], TARGETS["ttfb_added_p50_ms"]]
    hold = report["hold"]["aivonx"]
    out["stream_memory_kib"] = [hold["per_stream_kib"], TARGETS["stream_memory_kib"]]
    out["streams_failed"] = [hold["failed"], 0]
    result = {}
    for key, (value, target) in out.items():
        higher_is_better = key.startswith("throughput")
        met = value is not None and (value >= target if higher_is_better else value <= target)
        result[key] = {"value": value, "target": target, "met": met}
    return result


# -- output --------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    lines = []
    add = lines.append
    m = report["machine"]
    add(f"aivonx benchmark, {report['date']}: {m['arch']}, {m['cores']} cores shared by nodes, proxy, nginx "
        f"and generator; Python {m['python']}")  # fmt: skip
    add(f"proxy: {report['proxy']}")
    if report["nginx"].startswith("nginx: "):
        add(f"reference: {report['nginx']}")
    else:
        add(f"reference: {report['nginx']} (least_conn, 1 worker, keepalive upstream, proxy_buffering off)")
    add(f"generator: {report['generator']['plain']}; streams: {report['generator']['streams']}")
    add("")
    add("1. non-streaming /api/generate, concurrency 1")
    add(f"   {'path':<8} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}")
    for name, row in report["latency_c1"].items():
        a50 = f"{row['added_p50_ms']:+.3f}" if "added_p50_ms" in row else ""
        a99 = f"{row['added_p99_ms']:+.3f}" if "added_p99_ms" in row else ""
        add(f"   {name:<8} {row['requests']:>9} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} {a50:>10} {a99:>10}")
    add("")
    add("2. throughput, non-streaming (CPU % of one core: generator / node process / aivonx worker / nginx worker)")
    add(f"   {'conc':>4} {'path':<8} {'req/s':>9} {'vs direct':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}  cpu %")
    for conc, rows in report["throughput"].items():
        for name, row in rows.items():
            cpu = row["cpu_percent"]
            cpus = "/".join(str(round(cpu.get(k, 0))) for k in ("generator", "node", "aivonx_worker0", "nginx_worker"))
            ratio = f"{row['ratio_to_direct']:.2f}" if "ratio_to_direct" in row else ""
            errors = sum(row["errors"].values())
            add(f"   {conc:>4} {name:<8} {row['req_per_s']:>9.0f} {ratio:>9} {row['p50_ms']:>8.2f} "
                f"{row['p99_ms']:>8.2f} {errors:>7}  {cpus}")  # fmt: skip
    add("")
    s = report["sizes"]
    add(f"3. streaming: a chunk every {s['stream_interval_ms']:g} ms, {s['stream_chunks']} chunks, "
        f"{s['stream_users']} concurrent streams; delay = client arrival - node stamp")  # fmt: skip
    add(f"   {'path':<8} {'ttfb p50':>9} {'ttfb p99':>9} {'+ttfb p50':>10} {'delay p50':>10} {'delay p99':>10} "
        f"{'+delay p50':>11} {'+delay p99':>11}")  # fmt: skip
    for name, row in report["streaming"].items():
        extra = [f"{row.get(k, 0):+.3f}" if k in row else "" for k in
                 ("added_ttfb_p50_ms", "added_chunk_delay_p50_ms", "added_chunk_delay_p99_ms")]  # fmt: skip
        delays = f"{row['chunk_delay_p50_ms']:>10.3f} {row['chunk_delay_p99_ms']:>10.3f}"
        add(f"   {name:<8} {row['ttfb_p50_ms']:>9.3f} {row['ttfb_p99_ms']:>9.3f} {extra[0]:>10} "
            f"{delays} {extra[1]:>11} {extra[2]:>11}")  # fmt: skip
    add("")
    add(f"4. {s['hold_streams']} concurrent streams ({s['hold_chunks']} chunks, one every "
        f"{s['hold_interval_ms']:g} ms) through one worker")  # fmt: skip
    add(f"   {'path':<8} {'completed':>9} {'failed':>6} {'RSS before':>11} {'RSS open':>10} {'RSS peak':>10} "
        f"{'KiB/stream':>10}  cpu % gen/server")  # fmt: skip
    for name, row in report["hold"].items():
        add(f"   {name:<8} {row['completed']:>9} {row['failed']:>6} {row['rss_before_kib']:>8} KiB "
            f"{row['rss_all_open_kib']:>6} KiB {row['rss_peak_kib']:>6} KiB {row['per_stream_kib']:>10.1f}  "
            f"{round(row['cpu_percent']['generator'])}/{round(row['cpu_percent']['server'])}")  # fmt: skip
    add("")
    c = s["fleet_concurrency"]
    add(f"5. fleet size: concurrency 1 latency and concurrency {c} throughput")
    add(f"   {'nodes':>5} {'path':<8} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {f'req/s c{c}':>10} "
        f"{f'p99 c{c}':>9}")  # fmt: skip
    for count, rows in report["fleet"].items():
        for name, row in rows.items():
            a50 = f"{row['added_p50_ms']:+.3f}" if "added_p50_ms" in row else ""
            add(f"   {count:>5} {name:<8} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} {a50:>10} "
                f"{row[f'req_per_s_c{c}']:>10.0f} {row[f'p99_ms_c{c}']:>9.2f}")  # fmt: skip
    if "workers" in report:
        add("")
        add(f"6. throughput at concurrency {s['concurrency'][0]}, workers sharing Redis "
            "(CPU % of one core: generator / node process / worker 1 / worker 2)")  # fmt: skip
        add(f"   {'workers':>7} {'path':<8} {'req/s':>9} {'vs direct':>9} {'p50 ms':>8} {'p99 ms':>8} "
            f"{'errors':>7}  cpu %")  # fmt: skip
        for workers, rows in report["workers"].items():
            for name, row in rows.items():
                cpu = row["cpu_percent"]
                keys = ("generator", "node", "aivonx_worker0", "aivonx_worker1")
                cpus = "/".join(str(round(cpu.get(k, 0))) for k in keys)
                ratio = f"{row['ratio_to_direct']:.2f}" if "ratio_to_direct" in row else ""
                add(f"   {workers:>7} {name:<8} {row['req_per_s']:>9.0f} {ratio:>9} {row['p50_ms']:>8.2f} "
                    f"{row['p99_ms']:>8.2f} {sum(row['errors'].values()):>7}  {cpus}")  # fmt: skip
    add("")
    add("targets (moonshots):")
    for key, v in report["verdict"].items():
        add(f"   {key:<28} {v['value']!s:>10}  target {v['target']!s:>6}  {'met' if v['met'] else 'NOT met'}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke check in well under a minute")
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT), help=f"JSON results (default {DEFAULT_OUTPUT})")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx reference")
    parser.add_argument(
        "--no-install", action="store_true", help="never apt-get install nginx/wrk (the default with --quick)"
    )
    parser.add_argument(
        "--generator", choices=("auto", "wrk", "python"), default="auto",
        help="plain-request load generator (auto: wrk when installed)",
    )  # fmt: skip
    ints = "nodes latency_rounds stream_users stream_count stream_chunks hold_streams hold_chunks fleet_rounds"
    for name in [*ints.split(), "fleet_concurrency"]:
        parser.add_argument("--" + name.replace("_", "-"), type=int)
    floats = "latency_seconds throughput_seconds warmup_seconds stream_interval_ms hold_interval_ms fleet_seconds"
    for name in floats.split():
        parser.add_argument("--" + name.replace("_", "-"), type=float)
    parser.add_argument("--concurrency", help="comma-separated, e.g. 64,256")
    parser.add_argument("--redis", metavar="URL", help="also measure 1 and 2 workers sharing this Redis (scenario 6)")
    parser.add_argument("--fleet", help="comma-separated fleet sizes, e.g. 3,30,300")
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = QUICK if args.quick else Sizes()
    changes: dict[str, Any] = {}
    for name in vars(sizes):
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in ("concurrency", "fleet"):
            value = tuple(int(v) for v in str(value).split(",") if v.strip())
        changes[name] = value
    return Sizes(**(vars(sizes) | changes))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = sizes_from(args)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks, which stop every process

    signal.signal(signal.SIGTERM, on_term)
    try:
        report = run(
            sizes,
            install=not (args.no_install or args.quick),
            nginx=not args.no_nginx,
            generator=args.generator,
            redis_url=args.redis,
        )
    except KeyboardInterrupt:
        print("interrupted; every process the benchmark started was stopped", file=sys.stderr)
        return 130
    print(table(report))
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {output}")
    return 0
