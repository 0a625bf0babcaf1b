"""The peak workload generator and the benchmark's arithmetic: pure, no broker."""

from __future__ import annotations

from collections import Counter

import pytest

from app.engine import MemoryStore, PartitionEngine, Rejection, ReservationDecision, event_from_record
from app.settings import Settings
from app.wire.serialization import AvroCodec
from app.wire.topics import RESERVATION_COMMANDS, STOCK_MOVEMENTS, STORE_TRANSACTIONS, ledger_partition
from benchmarks import analysis
from benchmarks.generator import CHANNELS, RateSchedule, Workload, WorkloadConfig

SMALL = WorkloadConfig(skus=5_000, stores=40)


def events_of(records):
    for record in records:
        if record.topic is STOCK_MOVEMENTS:
            for movement in record.value["movements"]:
                yield "StockMovement", movement
        elif record.topic is RESERVATION_COMMANDS:
            yield "ReservationCommand", record.value
        else:
            yield "StockMovement", record.value


def apply_in_send_order(workload: Workload, records, loads) -> Counter:
    """The pure engine over the policy, the stock loads and the records in the order they are sent."""
    engines: dict[int, PartitionEngine] = {}
    offsets: Counter = Counter()
    outcomes: Counter = Counter()
    policy = event_from_record("PolicyChange", workload.policy())

    def apply(sku: str, event) -> None:
        partition = workload.partition_of(sku)
        engine = engines.get(partition)
        if engine is None:
            engine = engines[partition] = PartitionEngine(partition, MemoryStore(), frozenset(CHANNELS))
            engine.apply(policy, 0)
            offsets[partition] = 1
        for output in engine.apply(event, offsets[partition]):
            if type(output) is Rejection:
                outcomes[f"rejection:{output.reason}"] += 1
            elif type(output) is ReservationDecision and output.reason is not None:
                outcomes[f"refused:{output.reason}"] += 1
            else:
                outcomes[type(output).__name__] += 1
        offsets[partition] += 1

    for load in loads:
        apply(load.sku, event_from_record("StockMovement", workload.stock_load_record(load)))
    for record_name, value in events_of(records):
        apply(value["sku"], event_from_record(record_name, value))
    return outcomes


def test_same_seed_same_records_and_another_seed_others():
    first = list(Workload(SMALL).records(3_000))
    again = list(Workload(SMALL).records(3_000))
    other = list(Workload(WorkloadConfig(skus=5_000, stores=40, seed=7)).records(3_000))
    assert first == again
    assert [record.value for record in first] != [record.value for record in other]


def test_every_record_encodes_with_the_project_codec_and_event_ids_are_unique():
    codec = AvroCodec(Settings())
    workload = Workload(SMALL)
    records = list(workload.records(4_000))
    ids = [value["event_id"] for _, value in events_of(records)]
    assert len(ids) == len(set(ids)) == workload.events_generated
    for record in records:
        assert codec.decode(record.topic, codec.encode(record.topic, record.value)).value is not None
    for load in workload.take_stock_loads():
        codec.encode(STORE_TRANSACTIONS, workload.stock_load_record(load))
    codec.encode("source.policy-changes", workload.policy())


def test_the_mix_has_the_documented_shares():
    workload = Workload(WorkloadConfig())
    records = list(workload.records(40_000))
    kinds = Counter()
    for record in records:
        kinds[record.topic.name] += record.events
        if record.topic is STOCK_MOVEMENTS:
            assert record.key.startswith("wms-DC")
    total = sum(kinds.values())
    assert total == 40_000
    assert kinds[RESERVATION_COMMANDS.name] / total == pytest.approx(0.20, abs=0.02)
    assert kinds[STOCK_MOVEMENTS.name] / total == pytest.approx(0.35, abs=0.02)
    assert kinds[STORE_TRANSACTIONS.name] / total == pytest.approx(0.45, abs=0.02)
    batches = [record for record in records if record.topic is STOCK_MOVEMENTS]
    assert all(record.events == 200 for record in batches[:-5])  # the last batch of each DC feed may be partial
    channels = Counter(record.value["channel"] for record in records if record.topic is RESERVATION_COMMANDS)
    assert set(channels) == set(CHANNELS)


def test_sku_popularity_is_zipf():
    workload = Workload(WorkloadConfig(), mix="single")
    counts = Counter(value["sku"] for _, value in events_of(workload.records(40_000)))
    top = counts.most_common(1)[0]
    assert top[0] == "SKU000000"
    # rank r has weight 1/(r+1)^1.1: the top SKU is sold about 2.1x as often as the second, 12.6x the tenth
    assert counts["SKU000000"] / counts["SKU000009"] == pytest.approx(10 ** 1.1, rel=0.35)
    assert len(counts) > 5_000  # the long tail is there


def test_single_and_bulk_mixes_use_only_their_topics():
    single = Workload(SMALL, mix="single")
    assert {record.topic for record in single.records(2_000)} == {STORE_TRANSACTIONS, RESERVATION_COMMANDS}
    bulk = Workload(SMALL, mix="bulk")
    assert {record.topic for record in bulk.records(2_000)} == {STOCK_MOVEMENTS}


@pytest.mark.parametrize("mix", ["mixed", "single", "bulk"])
def test_the_engine_applies_the_workload_without_rejections(mix):
    workload = Workload(SMALL, mix=mix)
    records = list(workload.records(6_000))
    outcomes = apply_in_send_order(workload, records, workload.take_stock_loads())
    rejected = {kind: count for kind, count in outcomes.items() if kind.startswith(("rejection", "refused"))}
    assert sum(rejected.values()) <= 2, rejected  # a count racing a journal overflow is the one known exception
    assert outcomes["ChannelAvailability"] > 6_000


def test_a_transfer_is_received_on_the_same_feed_after_it_was_shipped():
    workload = Workload(SMALL, mix="bulk")
    in_transit: Counter = Counter()
    received = 0
    for record in workload.records(6_000):
        for movement in record.value["movements"]:
            if movement["type"] == "TRANSFER_SHIPPED":
                assert record.key == f"wms-{movement['location']}"
                in_transit[(movement["sku"], movement["location"], movement["counterparty_location"])] += \
                    movement["quantity"]
            elif movement["type"] == "TRANSFER_RECEIVED":
                assert record.key == f"wms-{movement['counterparty_location']}"
                key = (movement["sku"], movement["counterparty_location"], movement["location"])
                assert in_transit[key] >= movement["quantity"]
                in_transit[key] -= movement["quantity"]
                received += 1
    assert received > 1_000


def test_records_carry_each_events_ledger_partition():
    workload = Workload(SMALL)
    for record in workload.records(1_000):
        assert list(record.partitions) == [ledger_partition(value["sku"], 8) for _, value in events_of([record])]


def test_probes_cover_every_ledger_partition():
    workload = Workload(SMALL)
    probes = workload.probe_records("warm")
    assert sorted(record.partitions[0] for record in probes) == list(range(8))
    assert all(record.value["quantity"] > 1 for record in probes)  # beyond the store safety stock: it publishes


def test_rate_schedule_bursts_and_inverse():
    schedule = RateSchedule(100.0, ((10.0, 5.0, 4.0),))
    assert schedule.rate_at(5) == 100 and schedule.rate_at(12) == 400 and schedule.rate_at(20) == 100
    assert schedule.events_by(10) == pytest.approx(1_000)
    assert schedule.events_by(15) == pytest.approx(3_000)
    assert schedule.events_by(20) == pytest.approx(3_500)
    for seconds in (0.5, 9.9, 10.0, 12.3, 15.0, 19.0):
        assert schedule.time_of(schedule.events_by(seconds)) == pytest.approx(seconds)
    with pytest.raises(ValueError):
        RateSchedule(10.0, ((1.0, 5.0, 4.0), (3.0, 1.0, 2.0)))


def test_throughput_is_the_slope_between_10_and_90_percent():
    # 1,000 events: a slow start, then 100 events/s
    series = [(0.0, 1)] + [(2000.0 + 10 * index, index + 1) for index in range(1, 1000)]
    figure = analysis.throughput(series, 1000)
    assert figure.events_per_second == pytest.approx(100.0, rel=0.01)
    assert figure.overall_events_per_second < figure.events_per_second


def test_progress_counts_events_from_the_section_start():
    # (timestamp, partition, events of the partition through the causing entry); the section holds events 6..8 of
    # partition 0 and 4..5 of partition 1
    outputs = [(100, 0, 6), (110, 1, 4), (120, 0, 8), (130, 0, 5), (140, 1, 3), (150, 0, 7), (160, 1, 6),
               (170, 1, None)]
    series = analysis.progress_series(outputs, {0: 5, 1: 3}, {0: 8, 1: 5})
    assert series == [(100, 1), (110, 2), (120, 4)]


def test_ledger_map_counts_the_events_of_batched_records():
    ledger = analysis.LedgerMap(2)
    ledger.add(0, 0, 1000, ["policy"])
    ledger.add(0, 1, 1010, ["a", "b", "c"])  # a batch of three
    ledger.add(0, 2, 1020, [])  # a clock tick: no event
    ledger.add(0, 3, 1030, ["d"])
    ledger.add(0, 5, 1040, ["c", "e", "d", "f"])  # a re-ingested batch repeats c and d (and offset 4 is a gap)
    assert ledger.events(0) == 7 and ledger.events(1) == 0 and ledger.repeated_events == 2
    assert [ledger.events_through(0, 1, index) for index in range(3)] == [2, 3, 4]
    assert ledger.events_through(0, 2, 0) == 4 and ledger.events_through(0, 3, 0) == 5
    assert [ledger.events_through(0, 5, index) for index in range(4)] == [5, 6, 6, 7]
    assert ledger.events_through(0, 4, 0) is None and ledger.events_through(0, 6, 0) is None
    assert [ledger.events_before(0, offset) for offset in (0, 1, 2, 3, 4, 5, 6, 99)] == [0, 1, 4, 4, 5, 5, 7, 7]
    # the committed offset that has applied the first n events of partition 0
    assert [ledger.end_offset(0, events) for events in range(9)] == [0, 1, 2, 2, 2, 4, 6, 6, None]
    assert ledger.end_offset(1, 0) == 0 and ledger.end_offset(1, 1) is None
    assert ledger.records_between(0, 1, 4) == 3
    assert list(ledger.ledgered()) == [(1000, 0, 1), (1010, 0, 4), (1020, 0, 4), (1030, 0, 5), (1040, 0, 7)]


def test_work_per_cpu_second_counts_the_events_applied_within_the_window():
    applied = [(1000.0, 100.0), (2000.0, 400.0), (3000.0, 1000.0)]  # cumulative events applied over time
    # from 1.5 s to 3 s: the count at 3 s less the count last known at 1.5 s (100, at 1 s)
    assert analysis.work_per_cpu_second(applied, 1500, 3000, cpu_seconds=2.0) == {
        "events_applied": 900, "service_events_per_cpu_second": 450}
    assert analysis.work_per_cpu_second(applied, 0, 500, cpu_seconds=1.0)["events_applied"] == 0  # before any
    # windows that meet add up to the whole: the live run's three windows to its events
    whole = analysis.work_per_cpu_second(applied, 0, 3000, 1.0)["events_applied"]
    parts = [analysis.work_per_cpu_second(applied, low, high, 1.0)["events_applied"]
             for low, high in ((0, 1500), (1500, 2500), (2500, 3000))]
    assert sum(parts) == whole == 1000
    assert analysis.work_per_cpu_second(applied, 0, 3000, cpu_seconds=0.0)["service_events_per_cpu_second"] is None


def test_live_rate_while_behind_counts_from_the_burst_to_catch_up_or_the_last_record_sent():
    # sent: 100/s for 10 s, then a burst of 400/s from 10 s to 20 s, then 100/s again until 40 s
    produced = [(t * 1000, 100 * min(t, 10) + 400 * max(0, min(t, 20) - 10) + 100 * max(0, t - 20))
                for t in range(0, 41)]
    # the service keeps up until the burst, then applies 250/s until it has caught up
    applied, done, sent_at = [], 0.0, dict(produced)
    for t in range(0, 61):
        sent = sent_at.get(t * 1000, produced[-1][1])
        done = sent if t <= 10 else min(sent, done + 250)
        applied.append((t * 1000, done))
    lag = analysis.lag_series(produced, applied, 0, 60_000, step_ms=1000)
    # caught up at 30 s (1,000 + 4,000 + 1,000 sent; 1,000 + 20 x 250 applied): the window is 10 s to 30 s
    rate = analysis.live_rate_while_behind(applied, lag, produced, 10_000, 20_000, threshold=0)
    assert rate == {"events_per_second": 250.0, "window_seconds": 20.0, "events_applied": 5000,
                    "window_end": "lag back within the threshold", "kept_up": False}
    # the records end (at 25 s) before the lag is back: the window ends with the last record sent, so the plain
    # backlog drained after it is not counted as live
    cut = [point for point in produced if point[0] <= 25_000]
    lag = analysis.lag_series(cut, applied, 0, 60_000, step_ms=1000)
    rate = analysis.live_rate_while_behind(applied, lag, cut, 10_000, 20_000, threshold=0)
    assert rate["window_end"] == "last record sent" and rate["window_seconds"] == 15.0
    assert rate["events_per_second"] == 250.0
    # a service that keeps up with the burst (here a second behind it) shows the burst's rate, as a lower bound
    late = [(t + 1000, done) for t, done in produced]
    lag = analysis.lag_series(produced, late, 0, 60_000, step_ms=1000)
    rate = analysis.live_rate_while_behind(late, lag, produced, 10_000, 20_000, threshold=400)
    assert rate["kept_up"] and rate["window_end"] == "burst's end (kept up with it)"
    # over the burst's 10 s it applied the 3,700 events sent from 9 s to 19 s: 370/s, 92.5% of what was offered
    assert rate["events_per_second"] == 370.0 and rate["window_seconds"] == 10.0
    # the same lateness over a burst it does not keep up with is a service behind it
    slow = [(t, done * 0.8) for t, done in late]
    lag = analysis.lag_series(produced, slow, 0, 60_000, step_ms=1000)
    assert analysis.live_rate_while_behind(slow, lag, produced, 10_000, 20_000, threshold=400)["kept_up"] is False
    assert analysis.live_rate_while_behind([], [], [], 0, 0, 0)["events_per_second"] is None


def test_latency_lag_catch_up_and_capacity():
    summary = analysis.latency_summary(range(1, 1001))
    assert (summary["p50_ms"], summary["p99_ms"], summary["p999_ms"]) == (500, 990, 999)
    produced = [(0, 100), (1000, 200), (2000, 300)]
    done = [(500, 100), (1500, 150), (2500, 300)]
    lag = analysis.lag_series(produced, done, 0, 3000, step_ms=500)
    assert [value for _, value in lag] == [100, 0, 100, 50, 150, 0, 0]
    assert analysis.catch_up_seconds(lag, 2000, threshold=0) == 0.5
    capacity = analysis.capacity_line(10_000, 1_000, 0.8, partitions=8)
    assert capacity["workers_at_full_load"] == 13 and capacity["workers_at_latency_load"] == 25
    assert capacity["needs_more_partitions"]


def test_work_per_cpu_second_by_part_splits_the_run_at_the_first_reading_past_each_part():
    # 100 units of work, read as (work done, CPU seconds): the first half at 10 per CPU second, the second at 5
    progress = [(25, 2.5), (50, 5.0), (75, 10.0), (100, 15.0)]
    rows = analysis.work_per_cpu_second_by_part(progress, 100, parts=4)
    assert [row["work_per_cpu_second"] for row in rows] == [10, 10, 5, 5]
    assert sum(row["work"] for row in rows) == 100 and sum(row["cpu_seconds"] for row in rows) == 15.0
    # readings further apart than a part: a part whose first reading past it is the previous part's is None
    rows = analysis.work_per_cpu_second_by_part([(60, 6.0), (100, 14.0)], 100, parts=4)
    assert [row["work"] for row in rows] == [60, None, 40, None]
    assert [row["work_per_cpu_second"] for row in rows] == [10, None, 5, None]
    # fewer readings than asked for: None, and the next part starts where that one started
    progress = [(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0), (50, 5.0), (55, 6.0), (70, 7.0), (100, 8.0)]
    rows = analysis.work_per_cpu_second_by_part(progress, 100, parts=2, min_readings=5)
    assert [row["work"] for row in rows] == [50, None]
    rows = analysis.work_per_cpu_second_by_part(progress, 100, parts=4, min_readings=3)
    assert [row["work"] for row in rows] == [30, None, 70, None]  # the third part holds the second's work too
    # a run that ended short of its total: the parts never reached are None
    assert [row["work"] for row in analysis.work_per_cpu_second_by_part([(30, 1.0)], 100, parts=2)] == [None, None]
