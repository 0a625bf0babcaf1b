"""The worker's ingest stage in the `all` topology (app.service.ingest_thread): an IngestProcess on a thread of the
worker, in the confluent-kafka group `<app_id>-ingest`, started and stopped with the worker; a failure on that
thread ends the worker."""

from __future__ import annotations

import json
import threading

import pytest
from confluent_kafka import TopicPartition

from app.engine import event_to_record
from app.service.ingest_process import EXIT_INGEST_FAILED, IngestCounters, IngestProcess, ingest_group_id
from app.service.runtime import PipelineObserver
from app.settings import Settings
from app.wire.topics import POLICY_CHANGES, SOURCE_TOPICS, STORE_TRANSACTIONS, availability_topic
from tests.engine.factories import receipt
from tests.service.harness import (
    INGEST_ASSIGNED,
    WORKER_READY,
    WorkerProcess,
    committed_offsets,
    poll,
    read_topic,
    wait_for_ledger_entries,
)
from tests.service.scenario import CHANNELS, FIRST_POLICY


def committed_source_records(bootstrap_servers: str, settings: Settings) -> int:
    """Source records whose batch the ingest group committed (offsets start at 0 on a fresh broker)."""
    committed = committed_offsets(bootstrap_servers, ingest_group_id(settings),
                                  [spec.name for spec in SOURCE_TOPICS], settings.partitions)
    return sum(max(offset, 0) for offset in committed.values())


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_an_all_worker_ingests_through_its_own_consumer_group_and_stops_cleanly(service_settings, workers,
                                                                               topics_for, bootstrap_servers):
    settings = service_settings(channels=CHANNELS)
    assert settings.stages == "all"
    source = topics_for(settings)
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=90)
    worker.wait_for_log(INGEST_ASSIGNED, timeout=60)
    assert f"group {ingest_group_id(settings)} reading source." in worker.log_text()

    source.send(POLICY_CHANGES.name, event_to_record(FIRST_POLICY)[1])
    source.flush()
    wait_for_ledger_entries(bootstrap_servers, source.codec, settings.partitions, "PolicyChange")
    source.send(STORE_TRANSACTIONS.name, event_to_record(receipt(5, "S01", sku="SKU-T", event_id="t1", time=1))[1],
                key="SKU-T")
    source.flush()
    read_topic(bootstrap_servers, availability_topic(CHANNELS[0]).name, settings.partitions,
               until=lambda records: any(record.key == b"SKU-T" for record in records), idle_seconds=0)
    # Applied: the source records' batches were committed by the ingest group, right after their delivery.
    poll(lambda: committed_source_records(bootstrap_servers, settings), lambda committed: committed == 2, 30,
         "the ingest group's committed offsets past both source records")

    # SIGTERM: the ingest thread is stopped and its clients closed along with the Faust worker; exit 0.
    assert worker.stop(grace_seconds=30) == 0, worker.log_text()[-3000:]
    log = worker.log_text()
    assert "ingest: stopped after 2 source records" in log
    assert "Traceback" not in log and "CRITICAL" not in log


# The worker entry point with an ingest stage that fails on its first batch (a bug, not bad input).
WORKER_WITH_FAILING_INGEST = """
import sys
import app.service.ingest_process as ingest_process

def failing_micro_batch(*args, **kwargs):
    raise RuntimeError("injected ingest failure")

ingest_process.ingest_micro_batch = failing_micro_batch
from app.service.worker import main
sys.exit(main())
"""


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_failure_of_the_ingest_thread_ends_the_worker_without_committing(service_settings, topics_for,
                                                                           bootstrap_servers):
    settings = service_settings(channels=CHANNELS)
    source = topics_for(settings)
    worker = WorkerProcess(settings, program=WORKER_WITH_FAILING_INGEST).start()
    try:
        worker.wait_for_log(WORKER_READY, timeout=90)
        worker.wait_for_log(INGEST_ASSIGNED, timeout=60)
        source.send(POLICY_CHANGES.name, event_to_record(FIRST_POLICY)[1])
        source.flush()
        assert worker.process.wait(timeout=60) == EXIT_INGEST_FAILED, worker.log_text()[-3000:]
    finally:
        worker.stop(grace_seconds=10)
    log = worker.log_text()
    assert "[CRITICAL] worker: ingest failed: injected ingest failure; exiting (70)" in log, log[-3000:]
    assert committed_source_records(bootstrap_servers, settings) == 0, "nothing of the failed batch is committed"


class Recorder(PipelineObserver):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def ingested(self, source_topic: str, event_type: str, count: int = 1) -> None:
        self.calls.append(("ingested", source_topic, event_type, count))

    def dead_lettered(self, stage: str, source_topic: str, reason: str) -> None:
        self.calls.append(("dead", stage, source_topic, reason))


def test_ingest_counters_keep_totals_and_report_to_the_workers_observer():
    observer = Recorder()
    counters = IngestCounters(observer)
    counters.ingested(STORE_TRANSACTIONS.name, "StockMovement", 3)
    counters.dead_lettered("ingest", STORE_TRANSACTIONS.name, "UNDECODABLE_RECORD")
    assert (counters.events, counters.dead_letters) == (3, 1)
    assert observer.calls == [("ingested", STORE_TRANSACTIONS.name, "StockMovement", 3),
                              ("dead", "ingest", STORE_TRANSACTIONS.name, "UNDECODABLE_RECORD")]
    alone = IngestCounters()  # no observer: totals only
    alone.ingested(STORE_TRANSACTIONS.name, "StockMovement")
    assert alone.events == 1


def test_source_lag_is_librdkafkas_statistic_for_the_assigned_partitions_only(settings_factory):
    process = IngestProcess(settings_factory(), "127.0.0.1:9")  # no broker needed: nothing is consumed
    try:
        assert process.source_lag() == {}
        process._on_assign(None, [TopicPartition(STORE_TRANSACTIONS.name, partition) for partition in (0, 1)])
        partitions = {"0": {"consumer_lag": 7}, "1": {"consumer_lag": -1}, "2": {"consumer_lag": 3},
                      "-1": {"consumer_lag": -1}}  # 1: not known yet; 2: not ours; -1: librdkafka's internal one
        process._on_statistics(json.dumps({"topics": {STORE_TRANSACTIONS.name: {"partitions": partitions}}}))
        assert process.source_lag() == {(STORE_TRANSACTIONS.name, 0): 7}
        process._on_revoke(None, [TopicPartition(STORE_TRANSACTIONS.name, 0)])
        assert process.source_lag() == {}
    finally:
        process.close()



class RunningIngest:
    """An IngestProcess running on a thread, as a worker's ingest stage runs it (without the worker)."""

    def __init__(self, settings: Settings, bootstrap_servers: str) -> None:
        self.process = IngestProcess(settings, bootstrap_servers)
        self.stop_requested = threading.Event()
        self.thread = threading.Thread(target=self.process.run, args=(self.stop_requested.is_set,), daemon=True)
        self.thread.start()

    def assigned(self) -> bool:
        return bool(self.process._assigned)

    def stop(self) -> None:
        self.stop_requested.set()
        self.thread.join(timeout=30)
        self.process.close()


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_a_consumer_stopped_during_a_rebalance_does_not_lock_the_group_out(service_settings, topics_for,
                                                                            bootstrap_servers):
    """Two ingest consumers; the first leaves, and the second is stopped while it rejoins (the embedded broker holds
    a join for about half the session timeout). A third must then be assigned the partitions within seconds: a
    consumer closed with its join pending used to stay in the group for good, and nothing was ingested again."""
    settings = service_settings(channels=CHANNELS)
    topics_for(settings)
    first, second = RunningIngest(settings, bootstrap_servers), RunningIngest(settings, bootstrap_servers)
    third = None
    try:
        poll(lambda: first.assigned() and second.assigned(), bool, 60, "both ingest consumers assigned")
        first.stop()
        poll(lambda: second.process._rebalancing, bool, 30, "the second consumer rejoining after the first left")
        second.stop()
        third = RunningIngest(settings, bootstrap_servers)
        poll(third.assigned, bool, 30, "the third consumer assigned the source partitions")
    finally:
        for running in (first, second, third):
            if running is not None and running.thread.is_alive():
                running.stop()
