"""The event-loop lag probe (app/service/loop_lag.py): what it reports, on a real loop held for a known time."""

from __future__ import annotations

import asyncio
import time

from app.service.loop_lag import EventLoopLagProbe
from app.service.metrics import ServiceMetrics


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the probe reported nothing in time"
        await asyncio.sleep(0.01)


def test_the_probe_reports_how_long_the_loop_was_held():
    reports: list[float] = []

    async def run() -> None:
        probe = EventLoopLagProbe(reports.append, interval_seconds=0.02)
        await probe.start()
        try:
            await _until(lambda: len(reports) >= 3)  # an idle loop: woken about on time
            idle = list(reports)
            reports.clear()
            time.sleep(0.3)  # the loop held, as a stage applying ledger records holds it
            await _until(lambda: reports)
            held = reports[0]
        finally:
            await probe.stop()
        assert max(idle) < 0.2 <= held  # held 0.3 s from somewhere inside a 0.02 s sleep
        assert held < 5

    asyncio.run(run())


def test_the_lag_is_exposed_as_a_histogram():
    metrics = ServiceMetrics()
    metrics.event_loop_lagged(0.003)
    metrics.event_loop_lagged(0.3)
    text = metrics.exposition().decode()
    assert 'availability_event_loop_lag_seconds_bucket{le="0.005"} 1.0' in text
    assert 'availability_event_loop_lag_seconds_bucket{le="0.5"} 2.0' in text
    assert "availability_event_loop_lag_seconds_count 2.0" in text
