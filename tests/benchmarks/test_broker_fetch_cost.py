"""benchmarks.broker_fetch_cost at toy size: each run measures the broker's CPU by window and its consumer reads every
message sent (the documented run, about a minute, is in tests/benchmarks/test_performance_doc.py with -m slow)."""

from __future__ import annotations

import pytest

from benchmarks.broker_fetch_cost import run


@pytest.mark.integration
@pytest.mark.parametrize("consumer", [False, True])
def test_a_run_reports_the_brokers_cpu_by_window_and_its_consumer_reads_everything(consumer, embedded_broker_starts):
    result = run(rate=500, seconds=2.5, window=1.0, linger_ms=5, consumer=consumer)
    assert 1_200 <= result["messages"] <= 1_250  # 500 a second for 2.5 s
    assert len(result["broker_cores_by_window"]) == 2
    assert all(cores >= 0 for cores in result["broker_cores_by_window"])
    assert result["received"] == (result["messages"] if consumer else None)
