"""The benchmarks' reader of a worker's /metrics: the memory parts, and the sampler's largest scrape per phase."""

from __future__ import annotations

import http.server
import time

import pytest

from benchmarks.worker_metrics import MemorySampler, scrape
from tests.serving import serving


class _Metrics(http.server.BaseHTTPRequestHandler):
    resident = [100.0]  # MiB, one per request: the last one repeats

    def do_GET(self):  # noqa: N802 - http.server's name
        resident = self.resident.pop(0) if len(self.resident) > 1 else self.resident[0]
        body = (
            'availability_ledger_events_applied_total{partition="0"} 7.0\n'
            'availability_ledger_events_applied_total{partition="1"} 5.0\n'
            f'availability_memory_bytes{{part="resident"}} {resident * 2**20}\n'
            f'availability_memory_bytes{{part="rocksdb_memtables"}} {3 * 2**20}\n'
            "availability_cached_sku_states 42.0\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def metrics_server():
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)) as server:
        yield server


def _wait_for(sampler: MemorySampler, counter: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while getattr(sampler, counter) < count:
        assert time.monotonic() < deadline, f"{getattr(sampler, counter)} {counter} in 10 s"
        time.sleep(0.01)


def test_scrape_sums_the_applied_entries_and_reads_the_parts_in_mib(metrics_server):
    _Metrics.resident = [100.0]
    applied, memory = scrape(metrics_server.server_address[1])
    assert applied == 12
    assert memory == {"resident": 100.0, "rocksdb_memtables": 3.0, "cached_sku_states": 42.0}


def test_the_sampler_keeps_the_largest_resident_set_of_each_phase(metrics_server):
    _Metrics.resident = [100.0, 300.0, 200.0]
    sampler = MemorySampler(metrics_server.server_address[1], interval_seconds=0.01)
    sampler.phase = "bulk"
    sampler.start()
    try:
        _wait_for(sampler, "scrapes", 3)
        sampler.phase = "live"
        seen = sampler.scrapes
        _wait_for(sampler, "scrapes", seen + 2)
    finally:
        sampler.stop()
    assert sampler.at_peak["bulk"]["resident"] == 300.0
    assert sampler.at_peak["live"]["resident"] == 200.0  # only scrapes taken during it
    assert sampler.overall_peak() == {"phase": "bulk", "resident": 300.0, "rocksdb_memtables": 3.0,
                                      "cached_sku_states": 42.0}


def test_a_worker_that_does_not_answer_is_skipped():
    sampler = MemorySampler(1, interval_seconds=0.01).start()  # port 1: nothing listens
    _wait_for(sampler, "attempts", 3)
    sampler.stop()
    assert sampler.scrapes == 0 and sampler.overall_peak() == {}
