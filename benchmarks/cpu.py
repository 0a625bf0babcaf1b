"""CPU seconds of processes, from /proc/<pid>/stat (Linux), for the per-core figures of the peak benchmark, and
their peak resident set (`peak_rss_mib`).

`cpu_seconds(pid)` is utime + stime of the process (all its threads: librdkafka's and aiokafka's included) plus
cutime + cstime (its children that have ended) plus the same of its live descendants; with `descendants=False`,
utime + stime alone (the harness, whose children are the processes measured on their own). `CpuSampler` samples a few
named processes (and of the whole machine) over time, so that the CPU of any window can be read afterwards (linear
between samples).
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and parentheses


def _children(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return children


def cpu_seconds(pid: int | str = "self", descendants: bool = True) -> float | None:
    """utime + stime (+ cutime + cstime and the live descendants' unless `descendants` is False) of `pid`, in
    seconds; None: no such process."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # fields[0] is the state (field 3 of proc(5)); utime, stime, cutime, cstime are fields 14-17
    total = sum(int(value) for value in fields[11:15 if descendants else 13]) / _TICKS
    if descendants:
        for child in _children(os.getpid() if pid == "self" else int(pid)):
            total += cpu_seconds(child) or 0.0
    return total


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set (VmHWM of /proc/<pid>/status), in MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def machine_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has been busy (every core, every process, ours or not), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    # cpu user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(value) for value in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


class CpuSampler:
    """CPU seconds of named processes, sampled when `sample()` is called; `between(name, t0, t1)` reads a window.

    Times are wall-clock milliseconds (`time.time() * 1000`), the clock of the records' CreateTime. A process that
    ended keeps its last sample."""

    def __init__(self) -> None:
        self._readers: dict[str, Callable[[], float | None]] = {}
        self._series: dict[str, tuple[list[float], list[float]]] = {}

    def track(self, name: str, pid: int | None, descendants: bool = True) -> None:
        """Sample `pid` as `name` from now on (with its descendants' CPU unless `descendants` is False)."""
        if pid is not None:
            self._readers[name] = lambda: cpu_seconds(pid, descendants)
            self._series.setdefault(name, ([], []))

    def track_machine(self, name: str = "machine") -> None:
        """Sample the whole machine's busy CPU seconds as `name`: other jobs on a shared machine show there."""
        self._readers[name] = machine_cpu_seconds
        self._series.setdefault(name, ([], []))

    @property
    def names(self) -> list[str]:
        return list(self._series)

    def sample(self) -> None:
        now = time.time() * 1000
        for name, read in list(self._readers.items()):
            seconds = read()
            if seconds is None:
                self._readers.pop(name)  # ended: its series keeps the last sample
                continue
            times, values = self._series[name]
            times.append(now)
            values.append(seconds)

    def at(self, name: str, timestamp_ms: float) -> float | None:
        """CPU seconds of `name` at `timestamp_ms`, linear between the samples around it (None: no sample)."""
        times, values = self._series.get(name, ([], []))
        if not times:
            return None
        index = bisect.bisect_left(times, timestamp_ms)
        if index == 0:
            return values[0]
        if index == len(times):
            return values[-1]
        t0, t1 = times[index - 1], times[index]
        v0, v1 = values[index - 1], values[index]
        return v0 + (v1 - v0) * (timestamp_ms - t0) / (t1 - t0) if t1 > t0 else v1

    def between(self, name: str, start_ms: float, end_ms: float) -> float | None:
        start, end = self.at(name, start_ms), self.at(name, end_ms)
        return None if start is None or end is None else round(max(0.0, end - start), 3)

    def window(self, start_ms: float, end_ms: float, names: list[str] | None = None) -> dict[str, float | None]:
        return {name: self.between(name, start_ms, end_ms) for name in (names or self.names)}
