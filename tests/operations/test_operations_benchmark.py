"""The operations benchmark runs as documented: small sizes in the default suite (the command's drift count must
equal the expected one, the command's preview the one computed in process), the documented sizes with -m slow.
Results go to a temporary directory (BENCHMARK_RESULTS_DIR), never over benchmarks/results/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def run_benchmark(tmp_path: Path, *arguments: str, timeout: float) -> dict:
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("AVAILABILITY_") and name != "KAFKA_BOOTSTRAP_SERVERS"}
    environment["BENCHMARK_RESULTS_DIR"] = str(tmp_path)
    finished = subprocess.run([sys.executable, "-m", "benchmarks.operations_benchmark", *arguments], cwd=REPO_ROOT,
                              env=environment, capture_output=True, text=True, timeout=timeout)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert (tmp_path / "operations.md").is_file()
    return json.loads((tmp_path / "operations.json").read_text())


@pytest.mark.timeout(300)
def test_small_runs_of_both_benchmarks(tmp_path):
    results = run_benchmark(tmp_path, "reconcile", "--rows", "20000", timeout=240)
    assert results["reconcile"]["drifts"] == 200 and results["reconcile"]["bad_rows"] == 20
    results = run_benchmark(tmp_path, "preview", "--skus", "2000", timeout=240)
    assert results["preview"]["skus"] == 2000 and "reconcile" in results  # each run keeps the other's figures


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_million_rows_reconcile_in_under_a_minute(tmp_path):
    figures = run_benchmark(tmp_path, "reconcile", "--rows", "1000000", timeout=1500)["reconcile"]
    assert figures["drifts"] == 10_000 and figures["bad_rows"] == 1_000
    assert figures["seconds_end_to_end"] < 60


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_preview_of_100000_skus(tmp_path):
    figures = run_benchmark(tmp_path, "preview", "--skus", "100000", timeout=1500)["preview"]
    assert figures["skus"] == 100_000 and figures["keys_changed"] > 0
