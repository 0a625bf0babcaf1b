"""The benchmarks whose documented runs take the default suite's budget (half a minute to a few minutes each: they
run as written with -m slow, tests/benchmarks/test_performance_doc.py, OUT_OF_BUDGET) run here at toy size, with the
same checks of what they compare."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import broker_fetch_cost, decode_benchmark, replay_benchmark
from tests.benchmarks.test_performance_doc import check_decode_result, check_engine_result

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(arguments: list[str], results: Path) -> None:
    """`python -m <arguments>` from the project root, writing its results to `results`."""
    completed = subprocess.run([sys.executable, "-m", *arguments], cwd=REPO_ROOT, capture_output=True, text=True,
                               env={**os.environ, "BENCHMARK_RESULTS_DIR": str(results)}, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.mark.integration
@pytest.mark.parametrize("consumer", [False, True])
def test_a_run_reports_the_brokers_cpu_by_window_and_its_consumer_reads_everything(consumer, embedded_broker_starts):
    result = broker_fetch_cost.run(rate=500, seconds=2.5, window=1.0, linger_ms=5, consumer=consumer)
    assert 1_200 <= result["messages"] <= 1_250  # 500 a second for 2.5 s
    assert len(result["broker_cores_by_window"]) == 2
    assert all(cores >= 0 for cores in result["broker_cores_by_window"])
    assert result["received"] == (result["messages"] if consumer else None)


def test_both_decoders_and_both_encoders_agree_on_a_small_ledger():
    check_decode_result(decode_benchmark.measure(events=2_000, repeats=1))


@pytest.mark.integration
def test_a_small_replay_applies_every_ledger_entry(embedded_broker_starts):
    result = replay_benchmark.run(events=5_000, partitions=4, processes=(1, 2))
    assert result["replay"]["events"] == result["ledger_entries"] >= result["requested_events"]
    assert result["replay"]["events_per_second"] > 0 and result["ledger_records"] > 0
    one, two = result["replays"]
    assert (one["processes"], two["processes"]) == (1, 2) and two["events"] == one["events"]
    assert two["records"] == one["records"] and two["ratio_to_first"] > 0


def test_a_small_engine_run_measures_the_realistic_stream_and_every_location_count(tmp_path: Path):
    run_benchmark(["benchmarks.engine_benchmark", "--events", "3000", "--rounds", "2", "--skus", "2000"], tmp_path)
    result = json.loads((tmp_path / "engine.json").read_text())
    check_engine_result(result, tmp_path)
    assert result["realistic"]["skus"] == 2_000 and [row["skus"] for row in result["scaling"]] == [400, 200, 200]
