"""kill -9 in the middle of micro-batches that hold thousands of events of one hot SKU, several times: the ingest
stage writes those batches to the ledger again after each crash (the same entries, thousands of positions apart),
and the availability stage must apply each event exactly once. Three kill -9 of a worker during such a backlog once
left 7-15% phantom stock; the expected figures are 0 double counts and 0 losses.

The ingest stage (the worker's ingest thread in `all`, the ingest process in `split`) commits right after each
batch's acknowledgements, a window a kill rarely hits: after killing the process that ingests, the test sets the
ingest group's committed offset back to the start of the wave, which is what a kill just before that commit leaves,
so the whole wave is written again.

Checked two ways: the published records against the engine run on the events as they were sent, each once
(tests.chaos.checker), and the hot SKU's stock against plain arithmetic over what was sent."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from app.engine import MemoryStore, PartitionEngine, event_to_record
from app.service.ingest_process import ingest_group_id
from app.wire.topics import STOCK_MOVEMENTS, availability_topic
from tests.chaos.checker import check_against_engine, read_ledger_entries
from tests.chaos.results import record_figures
from tests.chaos.workload import CHAOS_CHANNELS, Workload
from tests.engine.factories import receipt, sale
from tests.service.harness import (
    INGEST_ASSIGNED,
    WORKER_READY,
    committed_offsets,
    poll,
    read_topic,
    wait_for_ledger_entries,
)
from tests.service.scenario import ledger_of_sent_events

pytestmark = [pytest.mark.chaos]

ECOMMERCE = availability_topic("ecommerce").name
HOT_SKU = "HOT-SKU-1"  # none of the workload's SKUs: its stock is plain arithmetic over the hot waves
HOT_LOCATION = "DC0"
OPENING_STOCK = 100_000
EVENTS_PER_WAVE = 6_000
MOVEMENTS_PER_RECORD = 500


def hot_wave(wave: int) -> list:
    """Receipts of 3 and sales of 1 at one location of the hot SKU, alternating: no sale can be refused."""
    events = []
    for n in range(EVENTS_PER_WAVE):
        event_id = f"hot-{wave}-{n}"
        at = 1_000_000 + wave * EVENTS_PER_WAVE + n
        events.append(receipt(3, HOT_LOCATION, sku=HOT_SKU, event_id=event_id, time=at) if n % 2 == 0
                      else sale(1, HOT_LOCATION, sku=HOT_SKU, event_id=event_id, time=at))
    return events


def send_bulk(bootstrap_servers: str, codec, workload: Workload, events: list) -> tuple[int, int]:
    """Send `events` as StockMovementBatch records keyed by the hot SKU; returns (partition, offset) of the first."""
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5})
    landed = []
    for start in range(0, len(events), MOVEMENTS_PER_RECORD):
        part = events[start:start + MOVEMENTS_PER_RECORD]
        value = codec.encode(STOCK_MOVEMENTS.name, {"movements": [event_to_record(e)[1] for e in part]})
        producer.produce(STOCK_MOVEMENTS.name, value, HOT_SKU.encode(),
                         on_delivery=lambda error, message: landed.append((error, message.partition(),
                                                                           message.offset())))
    assert producer.flush(30) == 0
    assert all(error is None for error, _, _ in landed), landed
    workload.record(*events)
    return min((partition, offset) for _, partition, offset in landed)


def rewind_ingest_group(bootstrap_servers: str, settings, partition: int, offset: int) -> None:
    """Commit `offset` for the ingest group on the hot SKU's source partition, as a member of the group (the broker
    refuses commits from outside it): join, wait for the partition's assignment, commit, leave."""
    group = ingest_group_id(settings)
    assigned: list = []
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group, "enable.auto.commit": False,
                         "session.timeout.ms": 6_000, "heartbeat.interval.ms": 500})
    try:
        consumer.subscribe([STOCK_MOVEMENTS.name], on_assign=lambda _, partitions: assigned.extend(partitions))
        deadline = time.monotonic() + 90
        while not any(tp.partition == partition for tp in assigned):
            assert time.monotonic() < deadline, "the ingest group never assigned the source partition"
            consumer.poll(0.2)
        consumer.commit(offsets=[TopicPartition(STOCK_MOVEMENTS.name, partition, offset)], asynchronous=False)
    finally:
        consumer.close()
    poll(lambda: committed_offsets(bootstrap_servers, group, [STOCK_MOVEMENTS.name], settings.partitions),
         lambda committed: committed[STOCK_MOVEMENTS.name, partition] == offset, timeout=30,
         what="the ingest group's offset set back to the start of the wave")


def hot_outputs(bootstrap_servers: str, partitions: int, at_least: int) -> int:
    """Wait until the hot SKU has `at_least` ecommerce records: the stage is in the middle of its backlog."""
    records = read_topic(bootstrap_servers, ECOMMERCE, partitions, idle_seconds=0, timeout=120,
                         until=lambda found: sum(r.key == HOT_SKU.encode() for r in found) >= at_least)
    return sum(r.key == HOT_SKU.encode() for r in records)


def expected_sellable(workload: Workload) -> int:
    """The hot SKU's sellable units at HOT_LOCATION, from the events sent, each once."""
    total = 0
    for event in workload.sent.values():
        if getattr(event, "sku", None) == HOT_SKU and getattr(event, "location", None) == HOT_LOCATION:
            total += event.quantity if event.type.value == "RECEIPT" else -event.quantity
    return total


def oracle_sellable(bootstrap_servers, codec, workload: Workload, partitions: int) -> int:
    """The same figure from the engine run on the events as sent (the checker's oracle)."""
    sent = list(workload.sent.values())
    entries = ledger_of_sent_events(read_ledger_entries(bootstrap_servers, codec, {e.event_id for e in sent}), sent)
    engines: dict[int, PartitionEngine] = {}
    for partition, position, event in entries:
        engine = engines.get(partition)
        if engine is None:
            engine = engines[partition] = PartitionEngine(partition, MemoryStore(), frozenset(CHAOS_CHANNELS))
        engine.apply(event, position)
    for engine in engines.values():
        state = engine.store.get_sku_state(HOT_SKU)
        if state is not None:
            return state.positions[HOT_LOCATION].sellable
    raise AssertionError(f"{HOT_SKU} has no state")


def run_hot_backlog(chaos_settings, source_for, start_workers, kill_during_backlog, broker, name: str) -> None:
    settings = chaos_settings(batch_size=1000)
    source = source_for(settings)
    workload = Workload(seed=71, sku_count=50)
    worker = start_workers(settings)
    workload.send_policy(source)
    wait_for_ledger_entries(broker.bootstrap_servers, source.codec, settings.partitions, "PolicyChange")
    workload.send_seed_stock(source)
    send_bulk(broker.bootstrap_servers, source.codec, workload,
              [receipt(OPENING_STOCK, HOT_LOCATION, sku=HOT_SKU, event_id="hot-opening", time=999_999)])
    seen = hot_outputs(broker.bootstrap_servers, settings.partitions, 1)
    kills = 3
    for wave in range(kills):
        first = send_bulk(broker.bootstrap_servers, source.codec, workload, hot_wave(wave))
        # the wave's first ledger record applied (a record publishes the hot key once, docs/CONTRACT.md): the
        # stage is in the middle of the wave's 12 records
        seen = hot_outputs(broker.bootstrap_servers, settings.partitions, seen + 1)
        worker = kill_during_backlog(settings, worker, first)
    workload.send_wave(source, 2_000)

    report = check_against_engine(broker.bootstrap_servers, settings, source.codec, workload.sent.values(),
                                  timeout=600)
    sellable = oracle_sellable(broker.bootstrap_servers, source.codec, workload, settings.partitions)
    record_figures(name, {"kills": kills, "hot_events": kills * EVENTS_PER_WAVE, "events_sent": workload.sent_events,
                          "hot_sellable": sellable, "hot_sellable_expected": expected_sellable(workload),
                          **report.figures()})
    report.assert_holds()
    assert sellable == expected_sellable(workload) == OPENING_STOCK + kills * EVENTS_PER_WAVE  # +3 -1 per pair
    assert report.figures()["ledger_repeats"] > 0, "no crash landed mid-batch: the test proved nothing"


@pytest.mark.timeout(1200)
def test_worker_killed_three_times_during_a_hot_sku_backlog(chaos_settings, source_for, workers, broker):
    def kill_worker(settings, worker, first):
        worker.kill()
        rewind_ingest_group(broker.bootstrap_servers, settings, *first)  # its ingest thread died with it
        restarted = workers(settings)  # same data dir: RocksDB as the crash left it
        restarted.wait_for_log(WORKER_READY, timeout=120)
        return restarted

    def start(settings):
        worker = workers(settings)
        worker.wait_for_log(WORKER_READY, timeout=90)
        return worker

    run_hot_backlog(chaos_settings, source_for, start, kill_worker, broker, "hot_sku_worker_kill_9")


@pytest.mark.timeout(1200)
def test_ingest_process_and_worker_killed_during_a_hot_sku_backlog(chaos_settings, source_for, workers,
                                                                  ingest_processes, broker):
    """Split topology: the ingest process is killed in the middle of its micro-batches (twice), the worker once."""
    kills: list[str] = []
    processes = {}

    def kill_one(settings, worker, first):
        if len(kills) == 1:  # the second kill takes the worker
            worker.kill()
            kills.append("worker")
            restarted = workers(settings)
            restarted.wait_for_log(WORKER_READY, timeout=120)
            return restarted
        processes["ingest"].kill()
        kills.append("ingest")
        rewind_ingest_group(broker.bootstrap_servers, settings, *first)
        processes["ingest"] = ingest_processes(settings)
        processes["ingest"].wait_for_log(INGEST_ASSIGNED, timeout=60)
        return worker

    def start(settings):
        worker = workers(settings)
        worker.wait_for_log(WORKER_READY, timeout=90)
        processes["ingest"] = ingest_processes(settings)
        processes["ingest"].wait_for_log(INGEST_ASSIGNED, timeout=60)
        return worker

    def split_settings(**overrides):
        return chaos_settings(stages="availability", **overrides)

    run_hot_backlog(split_settings, source_for, start, kill_one, broker, "hot_sku_ingest_and_worker_kill_9")
    assert kills == ["ingest", "worker", "ingest"]
