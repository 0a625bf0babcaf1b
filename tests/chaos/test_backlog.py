"""A backlog of a million events waiting when the worker starts: its memory stays bounded (RSS sampled from /proc
throughout) and it catches up; the output equals the engine run on the ledger."""

from __future__ import annotations

import threading
import time

import pytest

from tests.chaos.checker import check_against_engine
from tests.chaos.results import record_figures, rss_bytes
from tests.chaos.workload import Workload, waves
from tests.service.harness import WORKER_READY, wait_for_ledger_entries

pytestmark = [pytest.mark.chaos]

BACKLOG_EVENTS = 1_000_000
RSS_BOUND_BYTES = 1536 * 1024 * 1024  # generous: what matters is that it does not grow with the backlog
MIB = 1024 * 1024


class RssSampler(threading.Thread):
    """Samples a process's resident set size every `interval` seconds until stopped."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []
        self._stop_event = threading.Event()
        self._began = time.monotonic()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            rss = rss_bytes(self.pid)
            if rss is None:
                return
            self.samples.append((time.monotonic() - self._began, rss))

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def peak(self) -> int:
        return max(rss for _, rss in self.samples)

    def at_fraction(self, fraction: float) -> int:
        return self.samples[min(len(self.samples) - 1, int(len(self.samples) * fraction))][1]


@pytest.mark.timeout(2700)
def test_a_million_event_backlog_is_caught_up_in_bounded_memory(chaos_settings, source_for, workers, broker):
    settings = chaos_settings()
    source = source_for(settings)
    workload = Workload(seed=71, sku_count=20_000, store_count=100, dc_count=3, locations_per_sku=5)
    # The policy must be on the ledger first (sources are ingested independently): a worker puts it there, then
    # stops, and the backlog piles up while no worker runs.
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=90)
    workload.send_policy(source)
    wait_for_ledger_entries(broker.bootstrap_servers, source.codec, settings.partitions, "PolicyChange")
    assert worker.stop() == 0

    produce_started = time.monotonic()
    workload.send_seed_stock(source)
    for size in waves(BACKLOG_EVENTS - workload.sent_events, 100_000):
        workload.send_wave(source, size)
    produce_seconds = time.monotonic() - produce_started

    started = time.monotonic()
    worker = workers(settings)
    sampler = RssSampler(worker.process.pid)
    sampler.start()
    try:
        worker.wait_for_log(WORKER_READY, timeout=300)
        report = check_against_engine(broker.bootstrap_servers, settings, source.codec, workload.sent.values(),
                                      timeout=2400)
        caught_up = time.monotonic() - started  # the last expected output is read within ~1 s of its publication
    finally:
        sampler.stop()
    assert sampler.samples, "no RSS sample of the worker"
    figures = {
        "backlog_events": workload.sent_events, "invalid_events_in_backlog": workload.invalid_events_sent,
        "produce_seconds": round(produce_seconds, 1), "catch_up_seconds": round(caught_up, 1),
        "events_per_second": round(report.source_events / caught_up),
        "worker_rss_mib": {"first_sample": round(sampler.samples[0][1] / MIB), "at_25%": round(sampler.at_fraction(0.25) / MIB),
                           "at_50%": round(sampler.at_fraction(0.5) / MIB), "at_75%": round(sampler.at_fraction(0.75) / MIB),
                           "last": round(sampler.samples[-1][1] / MIB), "peak": round(sampler.peak() / MIB)},
        "rss_samples": len(sampler.samples), **report.figures(),
    }
    record_figures("backlog_1m", figures)
    assert workload.sent_events >= BACKLOG_EVENTS * 0.99
    assert worker.process.poll() is None, "the worker died catching up"
    assert sampler.peak() < RSS_BOUND_BYTES, figures["worker_rss_mib"]
    # Bounded, not growing with the backlog: the second half of the catch-up holds no more than 1.5x the first.
    assert sampler.at_fraction(0.95) < 1.5 * max(sampler.at_fraction(0.5), 200 * MIB), figures["worker_rss_mib"]
    report.assert_holds()
