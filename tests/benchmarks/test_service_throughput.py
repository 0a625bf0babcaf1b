"""`python -m benchmarks.service_throughput`, as docs/PERFORMANCE.md and docs/ARCHITECTURE.md cite it, at a small
size: it runs as written and its figures hold together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_the_availability_stage_benchmark_runs_and_reports_coherent_figures(tmp_path: Path) -> None:
    environment = {**os.environ, "BENCHMARK_RESULTS_DIR": str(tmp_path)}
    completed = subprocess.run([sys.executable, "-m", "benchmarks.service_throughput", "--events", "3000"],
                               cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=550)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads((tmp_path / "service_throughput.json").read_text())
    assert result["events"] == 3000 and result["ledger_entries"] > 3000  # policy and stock loads too
    assert result["entries_per_second"] > 0 and result["entries_per_cpu_second"] > 0
    assert result["ledger_records"] < result["ledger_entries"]  # batch records
    # a key changed several times by one ledger record is published once
    assert 0 < result["availability_records"] < result["availability_records_one_per_entry"]
    assert result["worker_peak_rss_mib"] > 50
