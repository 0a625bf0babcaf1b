"""The separate ingest process (app.service.ingest_worker, `availability ingest`) with a worker of the availability
stage alone (AVAILABILITY_STAGES=availability), end to end on the embedded broker: the outputs equal the engine run
on the ledger, the ingest stage's dead letters are the malformed records, offsets are committed, a SIGTERM stops
it cleanly, a kill -9 loses nothing, and refused credentials stop it at start with one line."""

from __future__ import annotations

import re
import threading
import time

import pytest

from app.engine import event_to_record
from app.errors import EXIT_CONFIGURATION_ERROR
from app.kafka.broker import EmbeddedBroker
from app.service.ingest_process import ingest_group_id
from app.settings import Settings
from app.wire.topics import LEDGER, POLICY_CHANGES, SOURCE_TOPICS, STORE_TRANSACTIONS, availability_topic
from tests.engine.factories import receipt, sale
from tests.service.harness import INGEST_ASSIGNED, WORKER_READY, committed_offsets, read_topic, wait_for_ledger_entries
from tests.service.scenario import (
    CHANNELS,
    FIRST_POLICY,
    HOT_SKUS,
    SKUS,
    assert_published_equals_engine,
    assert_versions_gapless,
    build_scenario,
    dead_letters,
    expected_from_sent,
    expected_outputs,
    ledger_of_sent_events,
    read_ledger,
    read_outputs,
    send_records,
    source_topic,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ASSIGNED = INGEST_ASSIGNED


def committed_source_offsets(bootstrap_servers: str, settings: Settings) -> int:
    """Sum of the ingest group's committed offsets over every source partition (offsets start at 0 on a fresh
    broker, so this is the number of source records whose batch was committed)."""
    committed = committed_offsets(bootstrap_servers, ingest_group_id(settings),
                                  [spec.name for spec in SOURCE_TOPICS], settings.partitions)
    return sum(max(offset, 0) for offset in committed.values())


def test_ingest_process_feeds_an_availability_only_worker(service_settings, workers, ingest_processes, topics_for,
                                                          bootstrap_servers):
    settings = service_settings(channels=CHANNELS, stages="availability")
    source = topics_for(settings)
    codec = source.codec
    worker = workers(settings)
    ingest = ingest_processes(settings)
    worker.wait_for_log(WORKER_READY, timeout=60)
    ingest.wait_for_log(ASSIGNED, timeout=60)
    assert f"group {ingest_group_id(settings)} reading source." in ingest.log_text()

    scenario = build_scenario()
    send_records(source, [(POLICY_CHANGES.name, FIRST_POLICY)])
    wait_for_ledger_entries(bootstrap_servers, codec, settings.partitions, "PolicyChange")
    malformed = send_records(source, scenario.first_half)
    hot = {sku.encode() for sku in HOT_SKUS}
    read_topic(bootstrap_servers, availability_topic("ecommerce").name, settings.partitions,
               until=lambda records: hot <= {r.key for r in records}, idle_seconds=0, timeout=60)
    malformed |= send_records(source, scenario.second_half)
    assert len(malformed) == len(scenario.malformed)

    expected = expected_from_sent(bootstrap_servers, codec, settings.partitions,
                                  [FIRST_POLICY, *scenario.sent_events()])
    published = read_outputs(bootstrap_servers, settings.partitions, expected)
    assert_published_equals_engine(published, expected, allow_repeats=False)
    assert_versions_gapless(published, codec)

    letters = dead_letters(bootstrap_servers, settings.partitions, want=len(malformed) + len(expected.rejections))
    from_ingest = [letter for letter in letters if source_topic(letter) != LEDGER.name]
    assert sorted(letter.value for letter in from_ingest) == sorted(malformed)
    # The ingest process ingested them, not the worker: the dead letters are logged by the former only.
    assert len(re.findall(r"dead-lettered source\.", ingest.log_text())) == len(malformed)
    assert "dead-lettered source." not in worker.log_text()

    # SIGTERM: the current batch is finished and committed, the process exits 0; every source record is committed.
    assert ingest.stop(grace_seconds=30) == 0, ingest.log_text()[-3000:]
    sent = 1 + len(scenario.first_half) + len(scenario.second_half)
    assert committed_source_offsets(bootstrap_servers, settings) == sent
    assert "ingest process: stopped after" in ingest.log_text()
    assert "Traceback" not in ingest.log_text() + worker.log_text()


class PacedFeed(threading.Thread):
    """Sends single-sale records at a steady rate, so that a kill lands while records are flowing."""

    def __init__(self, source, events: list, rate: float) -> None:
        super().__init__(daemon=True)
        self.source, self.events, self.rate = source, events, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            started = time.monotonic()
            for index, event in enumerate(self.events):
                self.source.send(STORE_TRANSACTIONS.name, event_to_record(event)[1], key=f"till-{index % 7}")
                self.sent = index + 1
                ahead = started + self.sent / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the load, not synchronisation
            self.source.flush()
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error


def test_ingest_process_killed_mid_stream_loses_nothing(service_settings, workers, ingest_processes, topics_for,
                                                        bootstrap_servers):
    settings = service_settings(channels=CHANNELS, stages="availability", batch_size=200)
    source = topics_for(settings)
    codec = source.codec
    worker = workers(settings)
    first = ingest_processes(settings)
    worker.wait_for_log(WORKER_READY, timeout=60)

    skus = SKUS[:50]
    stock = [receipt(1_000_000, "S01", sku=sku, event_id=f"stock-{sku}", time=index + 1)
             for index, sku in enumerate(skus)]
    send_records(source, [(POLICY_CHANGES.name, FIRST_POLICY)])
    wait_for_ledger_entries(bootstrap_servers, codec, settings.partitions, "PolicyChange")
    send_records(source, [(STORE_TRANSACTIONS.name, event) for event in stock])
    read_ledger(bootstrap_servers, codec, settings.partitions, {event.event_id for event in stock})

    sales = [sale(1, "S01", sku=skus[index % len(skus)], event_id=f"sale-{index}", time=1_000 + index)
             for index in range(3_000)]
    feed = PacedFeed(source, sales, rate=1_000.0)
    feed.start()
    deadline = time.monotonic() + 30
    while feed.sent < len(sales) // 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    first.kill()  # SIGKILL while records flow: no chance to finish, flush or commit
    assert feed.is_alive(), "the kill must land mid-stream"
    second = ingest_processes(settings)
    feed.join(timeout=60)
    assert feed.error is None and feed.sent == len(sales)

    sent = [FIRST_POLICY, *stock, *sales]
    entries = read_ledger(bootstrap_servers, codec, settings.partitions, {event.event_id for event in sent},
                          timeout=120)
    ids = [getattr(event, "event_id", None) for _, _, event, _ in entries]
    expected = expected_outputs(ledger_of_sent_events(entries, sent), codec)
    published = read_outputs(bootstrap_servers, settings.partitions, expected, timeout=60)
    assert_published_equals_engine(published, expected, allow_repeats=False)
    assert_versions_gapless(published, codec)
    assert second.stop(grace_seconds=30) == 0, second.log_text()[-3000:]
    assert "Traceback" not in second.log_text() + worker.log_text()
    duplicates = len(ids) - len(set(ids))
    print(f"ledger duplicates after the kill: {duplicates}")


def test_ingest_process_with_refused_credentials_fails_fast_with_one_line(tmp_path, service_settings,
                                                                          ingest_processes):
    password = "Tr0ub4dor-and-3-never-logged"
    with EmbeddedBroker(tmp_path / "authenticating-broker.log", authentication=True) as broker:
        settings = service_settings(kafka_bootstrap_servers=broker.bootstrap_servers,
                                    security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                                    sasl_username="availability", sasl_password=password)
        started = time.monotonic()
        ingest = ingest_processes(settings)
        status = ingest.process.wait(timeout=60)
        elapsed = time.monotonic() - started
    log = ingest.log_text()
    assert status == EXIT_CONFIGURATION_ERROR, log[-3000:]
    assert elapsed < 20, f"took {elapsed:.1f}s to give up"
    lines = log.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("availability ingest: error: the broker at"), log
    assert "SASL_PLAINTEXT SCRAM-SHA-512 as user 'availability'" in lines[0]
    assert password not in log
