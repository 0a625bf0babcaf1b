"""The arithmetic of the peak benchmark: throughput, latency percentiles, lag, catch-up and capacity. Pure.

Inputs are what the benchmark read back from the broker: record timestamps (milliseconds, producer CreateTime: all
processes on one machine and one clock) and ledger positions. A ledger record holds one event or a batch of them
(app/wire/ledger.py), so progress is counted in events, not offsets: a `LedgerMap`, built from reading the ledger, knows
how many events each ledger partition holds up to every entry. Progress of the availability stage is measured from
the position (`ledger_partition`, `ledger_offset`, `ledger_index`) that every availability record carries: once an
output of entry (o, i) of partition p exists, the stage has applied every event of p up to and including that entry
(it applies each partition in ledger order). Nothing here uses high watermarks: the embedded broker reports a
partition's high watermark as the start of its last batch.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_ms: Iterable[float]) -> dict:
    values = sorted(latencies_ms)
    return {
        "count": len(values),
        "p50_ms": percentile(values, 0.50),
        "p99_ms": percentile(values, 0.99),
        "p999_ms": percentile(values, 0.999),
        "max_ms": values[-1] if values else None,
    }


@dataclass
class _PartitionLedger:
    offsets: array = field(default_factory=lambda: array("q"))  # of the records read, ascending
    events_after: array = field(default_factory=lambda: array("q"))  # events of the partition through each record
    timestamps: array = field(default_factory=lambda: array("q"))  # CreateTime of each record, ms
    seen: set[str] = field(default_factory=set)  # event ids, to count an event written twice once
    partial: dict[int, array] = field(default_factory=dict)  # offset -> events through each entry (records with
    # repeated events only; elsewhere entry i is the record's (i+1)-th event)

    @property
    def events(self) -> int:
        return self.events_after[-1] if self.events_after else 0


class LedgerMap:
    """How many events each ledger partition holds up to every ledger position, from reading the ledger in order.

    `add` takes each record's entries as their event ids (empty for a clock tick, which is no event). An event id
    already seen in the partition (the ingest stage writes a batch again after a crash) counts once: its first
    copy is the one the engine applies. Counts are cumulative from the start of the partition."""

    def __init__(self, partitions: int) -> None:
        self._partitions = [_PartitionLedger() for _ in range(partitions)]
        self.records = 0
        self.repeated_events = 0
        self.repeated_examples: list[str] = []  # the first few, as "event_id at partition:offset"

    def add(self, partition: int, offset: int, timestamp: int, event_ids: Sequence[str]) -> None:
        ledger = self._partitions[partition]
        if ledger.offsets and offset <= ledger.offsets[-1]:
            raise ValueError(f"ledger partition {partition}: offset {offset} after {ledger.offsets[-1]}")
        before = ledger.events
        through = array("q")
        for event_id in event_ids:
            if event_id not in ledger.seen:
                ledger.seen.add(event_id)
                before += 1
            elif len(self.repeated_examples) < 5:
                self.repeated_examples.append(f"{event_id} at {partition}:{offset}")
            through.append(before)
        new = before - ledger.events
        if new != len(event_ids):
            self.repeated_events += len(event_ids) - new
            ledger.partial[offset] = through
        ledger.offsets.append(offset)
        ledger.events_after.append(before)
        ledger.timestamps.append(timestamp)
        self.records += 1

    def events(self, partition: int) -> int:
        """Events of `partition` read so far."""
        return self._partitions[partition].events

    def events_before(self, partition: int, offset: int) -> int:
        """Events in the records before `offset` (what a committed offset of `offset` has applied), as far as read."""
        ledger = self._partitions[partition]
        index = bisect.bisect_left(ledger.offsets, offset)
        return ledger.events_after[index - 1] if index else 0

    def events_through(self, partition: int, offset: int, index: int) -> int | None:
        """Events of `partition` up to and including entry `index` of the record at `offset` (None: not read)."""
        ledger = self._partitions[partition]
        position = bisect.bisect_left(ledger.offsets, offset)
        if position == len(ledger.offsets) or ledger.offsets[position] != offset:
            return None
        partial = ledger.partial.get(offset)
        if partial is not None:
            return partial[min(index, len(partial) - 1)]
        before = ledger.events_after[position - 1] if position else 0
        return min(before + index + 1, ledger.events_after[position])

    def end_offset(self, partition: int, events: int) -> int | None:
        """The first offset after the record that holds the partition's `events`-th event: what the group's
        committed offset must reach for those events to be applied (0 for none; None: not on the ledger yet)."""
        if events <= 0:
            return 0
        ledger = self._partitions[partition]
        position = bisect.bisect_left(ledger.events_after, events)
        return ledger.offsets[position] + 1 if position < len(ledger.offsets) else None

    def records_between(self, partition: int, start_offset: int, end_offset: int) -> int:
        offsets = self._partitions[partition].offsets
        return bisect.bisect_left(offsets, end_offset) - bisect.bisect_left(offsets, start_offset)

    def ledgered(self) -> Iterator[tuple[int, int, int]]:
        """(CreateTime, partition, events of the partition through the record) of every record read."""
        for partition, ledger in enumerate(self._partitions):
            yield from zip(ledger.timestamps, [partition] * len(ledger.offsets), ledger.events_after)


def progress_series(positions: Iterable[tuple[int, int, int | None]], start_events: dict[int, int],
                    end_events: dict[int, int] | None = None) -> list[tuple[int, int]]:
    """(timestamp ms, events done since the section's start) after each position, in time order.

    `positions` are (timestamp, ledger partition, events of the partition done through that point) of output
    records (`LedgerMap.events_through` of their position) or of ledger records (`LedgerMap.ledgered`);
    `start_events[p]` are the events partition p held before the section, `end_events[p]` through its end (points
    outside, or None, are ignored). A partition's count is the most it reached so far (outputs of one partition
    arrive in ledger order; a position with no output is covered by the next one that has one)."""
    relevant = sorted(
        (timestamp, partition, through)
        for timestamp, partition, through in positions
        if through is not None and partition in start_events and start_events[partition] < through
        and (end_events is None or through <= end_events[partition])
    )
    applied: dict[int, int] = {}
    total = 0
    series: list[tuple[int, int]] = []
    for timestamp, partition, through in relevant:
        done = through - start_events[partition]
        previous = applied.get(partition, 0)
        if done > previous:
            total += done - previous
            applied[partition] = done
            if series and series[-1][0] == timestamp:
                series[-1] = (timestamp, total)
            else:
                series.append((timestamp, total))
    return series


def time_to_reach(series: Sequence[tuple[float, float]], count: float) -> float | None:
    """First time at which the cumulative `series` reaches `count`."""
    for timestamp, done in series:
        if done >= count:
            return timestamp
    return None


def count_at(series: Sequence[tuple[float, float]], timestamp: float) -> float:
    """Cumulative count of `series` at `timestamp` (0 before its first point)."""
    index = bisect.bisect_right([point[0] for point in series], timestamp) - 1
    return series[index][1] if index >= 0 else 0


def work_per_cpu_second(applied: Sequence[tuple[float, float]], start_ms: float, end_ms: float,
                        cpu_seconds: float) -> dict:
    """Events applied between two times (`applied`: cumulative count over time) and per CPU second of the processes
    that applied them (None without CPU seconds)."""
    events = count_at(applied, end_ms) - count_at(applied, start_ms)
    return {"events_applied": round(events),
            "service_events_per_cpu_second": round(events / cpu_seconds) if cpu_seconds > 0 else None}


def work_per_cpu_second_by_part(progress: Sequence[tuple[float, float]], total: float, parts: int = 10,
                                min_readings: int = 1) -> list[dict]:
    """Work per CPU second in each of `parts` equal parts of a run's `total` work, from cumulative (work done, CPU
    seconds) readings in order: part k runs from the first reading at or past k/parts of the total to the first at or
    past (k+1)/parts, so its work and CPU seconds are what the readings saw between them. A part that fewer than
    `min_readings` readings end apart from the one before it is None, and the next part starts where it started:
    the work counter and the CPU clock are read at slightly different moments, which a part of few readings
    magnifies."""
    readings = [(0.0, 0.0), *progress]
    rows: list[dict] = []
    start = 0  # index of the reading the current part starts from
    for k in range(1, parts + 1):
        boundary = total * k / parts
        end = next((index for index in range(start, len(readings)) if readings[index][0] >= boundary), None)
        work = cpu = None
        if end is not None and end - start >= min_readings:
            work = readings[end][0] - readings[start][0]
            cpu = readings[end][1] - readings[start][1]
        if not work or not cpu or cpu <= 0:
            rows.append({"part": k, "work": None, "cpu_seconds": None, "work_per_cpu_second": None})
            continue
        rows.append({"part": k, "work": round(work), "cpu_seconds": round(cpu, 2),
                     "work_per_cpu_second": round(work / cpu)})
        start = end
    return rows


@dataclass(frozen=True)
class Throughput:
    events: int
    events_per_second: float | None  # the 10%-90% slope
    overall_events_per_second: float | None  # first point to last
    seconds: float | None  # first point to last
    whole_section_events_per_second: float | None = None  # from the section's start (first record sent) to the last
    whole_section_seconds: float | None = None

    def as_dict(self) -> dict:
        return {"events": self.events, "events_per_second": _round(self.events_per_second),
                "overall_events_per_second": _round(self.overall_events_per_second),
                "seconds": None if self.seconds is None else round(self.seconds, 2),
                "whole_section_events_per_second": _round(self.whole_section_events_per_second),
                "whole_section_seconds": None if self.whole_section_seconds is None
                else round(self.whole_section_seconds, 2)}


def throughput(series: Sequence[tuple[float, float]], events: int, low: float = 0.1, high: float = 0.9,
               started_ms: float | None = None) -> Throughput:
    """Rates of a section of `events` events from its cumulative (timestamp ms, count) series: the slope between the
    times the count reached `low` and `high` of them (which leaves out start-up and the tail), and, given the
    section's start `started_ms` (its first record sent, or a baseline's first record received), the whole-section
    rate: every event done over the time from that start to the last point (start-up and tail included)."""
    if not series or events <= 0:
        return Throughput(events, None, None, None)
    t_low, t_high = time_to_reach(series, low * events), time_to_reach(series, high * events)
    sustained = None
    if t_low is not None and t_high is not None and t_high > t_low:
        sustained = (high - low) * events / ((t_high - t_low) / 1000)
    first, last = series[0][0], series[-1][0]
    overall = series[-1][1] / ((last - first) / 1000) if last > first else None
    whole = whole_seconds = None
    if started_ms is not None and last > started_ms:
        whole_seconds = (last - started_ms) / 1000
        whole = series[-1][1] / whole_seconds
    return Throughput(events, sustained, overall, (last - first) / 1000, whole, whole_seconds)


def per_core(events: float | None, cpu_seconds: float | None) -> float | None:
    """Events per CPU second: the rate per core used, whatever the number of processes that used it."""
    if not events or not cpu_seconds:
        return None
    return round(events / cpu_seconds, 1)


def rate_over_time(series: Sequence[tuple[float, float]], origin_ms: float, bin_seconds: float = 1.0
                   ) -> list[tuple[float, float]]:
    """(seconds since origin, events per second in that bin) from a cumulative series."""
    if not series:
        return []
    bins: dict[int, float] = {}
    previous = 0.0
    for timestamp, done in series:
        index = int((timestamp - origin_ms) / 1000 // bin_seconds)
        bins[index] = bins.get(index, 0.0) + done - previous
        previous = done
    return [(index * bin_seconds, count / bin_seconds) for index, count in sorted(bins.items())]


def latency_over_time(samples: Sequence[tuple[float, float]], origin_ms: float, bin_seconds: float = 1.0
                      ) -> list[tuple[float, float, float]]:
    """(seconds since origin, p50, p99) of latencies binned by the time their event was sent."""
    bins: dict[int, list[float]] = {}
    for sent_ms, latency in samples:
        bins.setdefault(int((sent_ms - origin_ms) / 1000 // bin_seconds), []).append(latency)
    out = []
    for index, values in sorted(bins.items()):
        values.sort()
        out.append((index * bin_seconds, percentile(values, 0.5), percentile(values, 0.99)))
    return out


def lag_series(produced: Sequence[tuple[float, float]], done: Sequence[tuple[float, float]], start_ms: float,
               end_ms: float, step_ms: float = 100.0) -> list[tuple[float, float]]:
    """(timestamp ms, produced - done) on a grid: events sent but not yet ledgered (or published)."""
    out = []
    produced_times = [point[0] for point in produced]
    done_times = [point[0] for point in done]
    grid = []
    timestamp = start_ms
    while timestamp < end_ms:
        grid.append(timestamp)
        timestamp += step_ms
    grid.append(end_ms)  # the last point is the end itself, however the grid falls
    for timestamp in grid:
        sent = _value_at(produced, produced_times, timestamp)
        finished = _value_at(done, done_times, timestamp)
        out.append((timestamp, max(0.0, sent - finished)))
    return out


def catch_up_seconds(lag: Sequence[tuple[float, float]], burst_end_ms: float, threshold: float) -> float | None:
    """Seconds from the end of a burst until the lag is back within `threshold` (None: not within the data)."""
    for timestamp, value in lag:
        if timestamp >= burst_end_ms and value <= threshold:
            return (timestamp - burst_end_ms) / 1000
    return None


def live_rate_while_behind(applied: Sequence[tuple[float, float]], lag: Sequence[tuple[float, float]],
                           produced: Sequence[tuple[float, float]], from_ms: float, burst_end_ms: float,
                           threshold: float) -> dict:
    """The rate at which the service applies a live stream that outruns it: the events applied from `from_ms` (the
    burst's start, when the offered rate is several times the steady one) to the earlier of the lag being back
    within `threshold` after the burst (`catch_up_seconds`) and the last record sent, over the time between. Within
    that window records keep arriving while a backlog waits, so the service applies as fast as it can on a live
    stream; after the last record it drains a plain backlog, which is the rate this one is compared with.

    That holds only if the burst outran the service. `kept_up` says it did not (it applied at least 90% of what
    the burst offered, over the burst): the rate is then the burst's, a lower bound of what the service can do
    live, not a measure of it. events_per_second is None when there is no data."""
    empty = {"events_per_second": None, "window_seconds": 0.0, "events_applied": 0, "window_end": None,
             "kept_up": None}
    if not applied or not produced:
        return empty
    last_sent = produced[-1][0]
    catch_up = catch_up_seconds(lag, burst_end_ms, threshold)
    caught_up_at = None if catch_up is None else burst_end_ms + catch_up * 1000
    if caught_up_at is not None and caught_up_at <= last_sent:
        end, why = caught_up_at, "lag back within the threshold"
    else:
        end, why = last_sent, "last record sent"
    burst_end = min(burst_end_ms, end)
    offered = count_at(produced, burst_end) - count_at(produced, from_ms)
    taken = count_at(applied, burst_end) - count_at(applied, from_ms)
    kept_up = taken >= 0.9 * offered
    if kept_up:  # the burst's own window: after it the offered rate falls back, and so would the figure
        end, why = burst_end, "burst's end (kept up with it)"
    seconds = (end - from_ms) / 1000
    if seconds <= 0:
        return {**empty, "window_end": why}
    events = count_at(applied, end) - count_at(applied, from_ms)
    return {"events_per_second": round(events / seconds, 1), "window_seconds": round(seconds, 1),
            "events_applied": round(events), "window_end": why, "kept_up": kept_up}


def capacity_line(target_rate: float, per_worker_rate: float | None, scaling_efficiency: float | None,
                  partitions: int, utilisation: float = 0.5) -> dict:
    """Workers needed for `target_rate` events/s.

    Model: N workers sustain N x per_worker_rate x efficiency, where efficiency is the measured rate of 2 workers
    over twice the rate of one (1.0 if not measured, capped at 1). `at_full_load` runs the workers at their
    sustained maximum (no headroom for bursts); `at_latency_load` keeps them at `utilisation` of it, the load at
    which the latency target is stated. A worker is one consumer of the ledger, so N beyond `partitions` needs
    more partitions."""
    if not per_worker_rate:
        return {"target_events_per_second": target_rate, "workers_at_full_load": None, "workers_at_latency_load": None}
    efficiency = min(1.0, scaling_efficiency) if scaling_efficiency else 1.0
    measured = scaling_efficiency is not None
    effective = per_worker_rate * efficiency
    full = math.ceil(target_rate / effective)
    headroom = math.ceil(target_rate / (effective * utilisation))
    return {
        "target_events_per_second": target_rate,
        "per_worker_events_per_second": _round(per_worker_rate),
        "scaling_efficiency": round(efficiency, 3),
        "scaling_efficiency_measured": measured,
        "scaling_efficiency_capped": measured and scaling_efficiency > 1.0,
        "utilisation_for_latency": utilisation,
        "workers_at_full_load": full,
        "workers_at_latency_load": headroom,
        "partitions": partitions,
        "needs_more_partitions": headroom > partitions,
    }


def ingest_capacity_line(target_rate: float, per_process_rate: float | None, scaling_efficiency: float | None,
                         source_partitions: int, utilisation: float = 0.5) -> dict:
    """Ingest processes needed for `target_rate` events/s (the `split` topology), by the model of `capacity_line`
    with the ingest stage's own rate per process. Ingest processes share the source topics' partitions, so N beyond
    `source_partitions` needs more of them."""
    line = capacity_line(target_rate, per_process_rate, scaling_efficiency, source_partitions, utilisation)
    renamed = {"per_worker_events_per_second": "per_process_events_per_second",
               "workers_at_full_load": "processes_at_full_load", "workers_at_latency_load": "processes_at_latency_load",
               "partitions": "source_partitions", "needs_more_partitions": "needs_more_source_partitions"}
    return {renamed.get(key, key): value for key, value in line.items()}


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return round(value / baseline, 4)


def _value_at(series: Sequence[tuple[float, float]], times: list[float], timestamp: float) -> float:
    index = bisect.bisect_right(times, timestamp) - 1
    return series[index][1] if index >= 0 else 0.0


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
