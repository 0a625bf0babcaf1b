"""Reading a worker's /metrics from a benchmark: the ledger entries it applied and where its memory is.

`MemorySampler` reads the memory parts (`availability_memory_bytes`, `availability_cached_sku_states`:
docs/OPERATIONS.md) every few seconds on a thread of its own, and keeps, for each phase the benchmark names, the
largest resident set seen and the parts of that scrape, so a report says in which phase a worker's memory peaked and
what it held then.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

APPLIED_METRIC = "availability_ledger_events_applied_total"
MEMORY_METRIC = "availability_memory_bytes"
CACHED_STATES_METRIC = "availability_cached_sku_states"


def _metrics_text(web_port: int, timeout_seconds: float) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=timeout_seconds) as response:
        return response.read().decode()


def scrape(web_port: int, timeout_seconds: float = 5.0) -> tuple[int, dict[str, float]]:
    """From one read of the worker's /metrics: the ledger entries applied, and its memory by part
    (`availability_memory_bytes`, in MiB) with the SKU states it holds decoded."""
    text = _metrics_text(web_port, timeout_seconds)
    applied = 0.0
    memory: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.startswith(APPLIED_METRIC):
            applied += float(value)
        elif name.startswith(MEMORY_METRIC + "{"):
            memory[name.split('part="', 1)[1].split('"', 1)[0]] = round(float(value) / 2**20, 1)
        elif name == CACHED_STATES_METRIC:
            memory["cached_sku_states"] = float(value)
    return int(applied), memory


def histogram(web_port: int, name: str, timeout_seconds: float = 60.0) -> tuple[int, dict[str, int]]:
    """A histogram of the worker's /metrics: (observations, for each bucket bound the observations above it)."""
    count, at_most = 0, {}
    for family in text_string_to_metric_families(_metrics_text(web_port, timeout_seconds)):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_count":
                count = int(sample.value)
            elif sample.name == f"{name}_bucket" and sample.labels["le"] != "+Inf":
                at_most[sample.labels["le"]] = int(sample.value)
    return count, {bound: count - below for bound, below in at_most.items()}


class MemorySampler:
    """Scrapes one worker's memory parts every `interval_seconds` until `stop()`; `phase` names what the benchmark
    is doing. A scrape that fails (the worker starting, restarting or gone) is skipped."""

    def __init__(self, web_port: int, interval_seconds: float = 2.0,
                 on_scrape: Callable[[str, dict[str, float]], None] | None = None) -> None:
        self._web_port = web_port
        self._on_scrape = on_scrape  # (phase, memory parts) of each scrape: benchmarks.memory_census.PhaseCensuses
        self._interval = interval_seconds
        self.phase = "start"
        self.at_peak: dict[str, dict[str, float]] = {}  # phase -> the parts of its scrape with the largest resident
        self.attempts = 0
        self.scrapes = 0  # the attempts that read the parts
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, dict[str, float]]:
        self._stopped.set()
        self._thread.join(timeout=10)
        return self.at_peak

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            phase = self.phase
            try:
                _, memory = scrape(self._web_port)
            except OSError:
                continue
            finally:
                self.attempts += 1
            resident = memory.get("resident")
            if resident is None:
                continue
            self.scrapes += 1
            if resident >= self.at_peak.get(phase, {}).get("resident", 0.0):
                self.at_peak[phase] = memory
            if self._on_scrape is not None:
                self._on_scrape(phase, memory)

    def overall_peak(self) -> dict[str, float | str]:
        """The parts of the scrape with the largest resident set of any phase, with that phase's name."""
        if not self.at_peak:
            return {}
        phase, memory = max(self.at_peak.items(), key=lambda item: item[1].get("resident", 0.0))
        return {"phase": phase, **memory}
