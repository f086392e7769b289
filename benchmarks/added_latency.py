"""Added latency of a non-streaming /api/generate: through the proxy versus straight to the node.

Starts a fake Ollama node (no token delay) and the proxy exactly as the README runs it
(`flask --app aivonx init`, then gunicorn with one gevent worker), then sends the same
request alternately to each, one at a time, over kept-alive connections. Both paths share
the client, so the difference of the medians is what the proxy adds.

    python -m benchmarks.added_latency [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BODY = {"model": "llama3", "prompt": "hi", "stream": False}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(session: requests.Session, url: str) -> float:
    started = time.perf_counter()
    response = session.post(url, json=BODY)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed * 1000


def run(count: int) -> dict:
    node_port, proxy_port = free_port(), free_port()
    node_url, proxy_url = f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{proxy_port}"
    workdir = tempfile.mkdtemp(prefix="aivonx-bench-")
    env = {
        **os.environ,
        "AIVONX_DATABASE_URL": f"sqlite:///{workdir}/aivonx.sqlite3",
        "AIVONX_NODES": node_url,
        "AIVONX_BIND": f"127.0.0.1:{proxy_port}",
        "AIVONX_REDIS_URL": "",
        # The log file stays on, as by default, but in this run's directory, not instance/.
        "AIVONX_LOG_FILE": f"{workdir}/logs/aivonx.log",
    }
    processes = []
    try:
        node = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_ollama", "--port", str(node_port), "--models", "llama3:latest"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        processes.append(node)
        wait_ready(node_url)
        subprocess.run([BIN / "flask", "--app", "aivonx", "init"], cwd=ROOT, env=env, check=True, capture_output=True)
        proxy = subprocess.Popen(
            [BIN / "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(proxy)
        wait_ready(proxy_url + "/")
        deadline = time.monotonic() + 15
        while not requests.get(proxy_url + "/api/tags").json()["models"]:
            if time.monotonic() > deadline:
                raise RuntimeError("the proxy never saw the node as active")
            time.sleep(0.1)

        direct, proxied = requests.Session(), requests.Session()
        for _ in range(200):  # warm up both paths and their connection pools
            measure(direct, node_url + "/api/generate")
            measure(proxied, proxy_url + "/api/generate")
        direct_ms, proxy_ms = [], []
        for i in range(count):
            # Alternate which goes first so drift on a noisy machine hits both alike.
            pair = [(direct, node_url, direct_ms), (proxied, proxy_url, proxy_ms)]
            for session, url, sink in pair if i % 2 == 0 else reversed(pair):
                sink.append(measure(session, url + "/api/generate"))
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)

    def summary(values: list[float]) -> dict:
        return {
            "p50_ms": round(statistics.median(values), 3),
            "p99_ms": round(percentile(values, 0.99), 3),
            "mean_ms": round(statistics.fmean(values), 3),
        }

    return {
        "benchmark": "non-streaming /api/generate, concurrency 1, sequential, keep-alive",
        "requests_per_path": count,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "direct": summary(direct_ms),
        "proxy": summary(proxy_ms),
        "added_p50_ms": round(statistics.median(proxy_ms) - statistics.median(direct_ms), 3),
        "added_p99_ms": round(percentile(proxy_ms, 0.99) - percentile(direct_ms, 0.99), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="requests per path (default 2000)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "added_latency.json"))
    args = parser.parse_args()
    result = run(args.requests)
    print(f"{'path':<8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for path in ("direct", "proxy"):
        row = result[path]
        print(f"{path:<8} {row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} {row['mean_ms']:>8.3f}")
    print(f"added by the proxy: p50 {result['added_p50_ms']:.3f} ms, p99 {result['added_p99_ms']:.3f} ms")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {output}")


if __name__ == "__main__":
    main()
