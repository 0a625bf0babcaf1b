"""Backfills and the wall clock: a clock tick carries the wall clock of the moment it was appended, so a ledger of
historical events with ticks from today expires every reservation that was live at the time. `availability replay
--without-clock-ticks` replays such a ledger with partition clocks that follow event times alone."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from app.engine import ClockTick
from app.kafka.admin import create_topics
from app.replay.namespace import output_topics
from app.service.ingest import LedgerWriter
from app.tools.cli import main
from app.wire.serialization import AvroCodec
from app.wire.topics import LEDGER, RESERVATION_DECISIONS, ledger_key, ledger_partition
from tests.engine.factories import policy, receipt, reserve
from tests.replay.test_replay import use_settings_in_commands
from tests.service.harness import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LAST_YEAR = 1_700_000_000_000  # the backfill's event times
TODAY = 1_800_000_000_000  # when the ticks were appended


def write_backfill_ledger(settings, bootstrap_servers: str) -> None:
    """Stock and a reservation expiring an hour after it was made, a year ago; a tick of today; nothing else."""
    codec = AvroCodec(settings)
    writer = LedgerWriter(codec, settings.partitions)
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    for append in writer.broadcast(writer.entry_value(policy(event_time=LAST_YEAR), None, TODAY)):
        producer.produce(LEDGER.name, append.value, append.key, partition=append.partition)
    partition = ledger_partition("SKU1", settings.partitions)
    for event in (receipt(10, "S1", time=LAST_YEAR, event_id="stock"),
                  reserve("R-backfill", 2, time=LAST_YEAR + 1, expires_at=LAST_YEAR + 3_600_000)):
        producer.produce(LEDGER.name, writer.entry_value(event, None, TODAY), ledger_key("SKU1").encode(),
                         partition=partition)
    for append in writer.broadcast(writer.entry_value(ClockTick(TODAY), None, TODAY)):
        producer.produce(LEDGER.name, append.value, append.key, partition=append.partition)
    assert producer.flush(10) == 0


def decisions_of(settings, bootstrap_servers: str, namespace: str) -> list[str]:
    topic = output_topics(settings, namespace)[RESERVATION_DECISIONS.name].name
    codec = AvroCodec(settings)
    records = read_topic(bootstrap_servers, topic, settings.partitions, idle_seconds=0.5)
    return [codec.decode(RESERVATION_DECISIONS.name, r.value).value["outcome"] for r in records]


def test_replay_without_clock_ticks_keeps_a_backfill_s_reservations(settings_factory, bootstrap_servers,
                                                                    monkeypatch):
    settings = settings_factory(channels=("ecommerce",), partitions=2)
    create_topics(settings, bootstrap_servers)
    write_backfill_ledger(settings, bootstrap_servers)
    use_settings_in_commands(monkeypatch, settings)

    assert main(["replay", "--name", "with-ticks", "--quiet", "--idle", "0.5", "-b", bootstrap_servers]) == 0
    assert decisions_of(settings, bootstrap_servers, "with-ticks") == ["ACCEPTED", "EXPIRED"]

    assert main(["replay", "--name", "backfill", "--without-clock-ticks", "--quiet", "--idle", "0.5",
                 "-b", bootstrap_servers]) == 0
    assert decisions_of(settings, bootstrap_servers, "backfill") == ["ACCEPTED"]
