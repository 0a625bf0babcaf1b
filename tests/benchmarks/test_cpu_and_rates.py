"""CPU seconds from /proc and the rates built on them (whole section, per core), without a broker."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from benchmarks import analysis
from benchmarks.cpu import CpuSampler, cpu_seconds, machine_cpu_seconds


def _spin(seconds: float) -> None:
    deadline = time.process_time() + seconds
    while time.process_time() < deadline:
        pass


def test_cpu_seconds_of_a_process_grow_with_its_work() -> None:
    before = cpu_seconds(descendants=False)
    _spin(0.3)
    assert cpu_seconds(descendants=False) - before == pytest.approx(0.3, abs=0.1)
    assert cpu_seconds(2**22 + 12345) is None  # no such process


def test_cpu_seconds_include_live_children() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\nend = time.process_time() + 0.5\n"
                              "while time.process_time() < end: pass\nprint('spun', flush=True)\nsys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline() == b"spun\n"  # it has spent its 0.5 s and is still alive
        assert cpu_seconds() - cpu_seconds(descendants=False) >= 0.45
    finally:
        child.communicate(b"")


def test_sampler_reads_a_window_between_samples() -> None:
    sampler = CpuSampler()
    sampler._series["w"] = ([1000.0, 2000.0, 3000.0], [1.0, 1.5, 3.5])
    assert sampler.between("w", 1000, 3000) == 2.5
    assert sampler.between("w", 1500, 2500) == pytest.approx(1.25)  # linear between samples
    assert sampler.between("w", 0, 10_000) == 2.5  # flat outside the samples
    assert sampler.window(1000, 2000) == {"w": 0.5}


def test_whole_section_rate_counts_from_the_first_record_sent() -> None:
    # 1,000 events applied evenly between t=2 s and t=3 s of a section whose first record was sent at t=0
    series = [(2000 + index, index + 1) for index in range(1000)]
    figure = analysis.throughput(series, 1000, started_ms=0)
    assert figure.events_per_second == pytest.approx(1000, rel=0.01)
    assert figure.whole_section_events_per_second == pytest.approx(1000 / 2.999, rel=0.001)
    assert figure.whole_section_events_per_second <= figure.overall_events_per_second
    assert analysis.throughput(series, 1000).whole_section_events_per_second is None


def test_per_core_is_events_per_cpu_second() -> None:
    assert analysis.per_core(10_000, 2.0) == 5_000
    assert analysis.per_core(10_000, 0) is None and analysis.per_core(None, 1.0) is None


def test_machine_cpu_seconds_count_every_process() -> None:
    before = cpu_seconds(descendants=False), machine_cpu_seconds()
    _spin(0.3)
    own = cpu_seconds(descendants=False) - before[0]
    assert machine_cpu_seconds() - before[1] >= own - 0.05  # our own work is part of the machine's
