"""`python -m benchmarks --quick` runs end to end and writes a report with every scenario.

Only completion and the report's shape are checked: timings on a shared machine say nothing
and are never asserted. nginx and wrk are optional here: without them the quick mode uses
its own Python generator and reports "nginx: not installed", and that path is run too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

SCENARIOS = ("latency_c1", "throughput", "streaming", "hold", "fleet")

# The harness starts its own proxy on SQLite + in-memory state whatever the suite's backend,
# so the PostgreSQL run would repeat the same minute and a half for nothing.
pytestmark = pytest.mark.sqlite_only


def run_quick(tmp_path: Path, *extra: str) -> dict:
    output = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(output), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "targets (moonshots)" in done.stdout  # the table was printed
    return json.loads(output.read_text())


def check_report(report: dict, paths: set[str]) -> None:
    for scenario in SCENARIOS:
        assert report[scenario], scenario
    assert set(report["latency_c1"]) == paths
    for rows in report["throughput"].values():
        assert set(rows) == paths
        assert all(row["requests"] > 0 for row in rows.values())
    assert set(report["streaming"]) == paths
    assert all(row["streams"] > 0 for row in report["streaming"].values())
    hold = report["hold"]["aivonx"]
    assert hold["completed"] + hold["failed"] == hold["streams"]
    for rows in report["fleet"].values():
        assert set(rows) == paths
    assert report["verdict"]


@pytest.mark.timeout(300)
def test_quick_benchmark_with_what_is_installed(tmp_path):
    report = run_quick(tmp_path)
    with_nginx = not report["nginx"].startswith("nginx: ")
    check_report(report, {"direct", "aivonx", "nginx"} if with_nginx else {"direct", "aivonx"})


@pytest.mark.timeout(300)
def test_quick_benchmark_without_nginx_or_wrk(tmp_path):
    report = run_quick(tmp_path, "--no-nginx", "--generator", "python")
    assert report["nginx"].startswith("nginx: ")
    assert report["generator"]["plain"].startswith("benchmarks.client")
    check_report(report, {"direct", "aivonx"})
