"""Reading a run's records back: the figures of a benchmark are computed from them, so a reader that stops early
turns a slow broker into sections that seem to have published nothing."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from benchmarks.harness import read_records

RECORDS = 40_000  # several consume() batches of 10,000: the first one is not the whole topic
PARTITIONS = 4
PAUSE_SECONDS = 3.0  # longer than the quiet spell (2 s) after which the reader used to assume the end


@pytest.mark.integration
def test_every_record_is_read_back_although_the_broker_stops_answering_for_longer_than_a_quiet_spell(
        dedicated_broker) -> None:
    bootstrap = dedicated_broker.bootstrap_servers
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("outputs", num_partitions=PARTITIONS, replication_factor=1,
                                  config={"retention.ms": "-1"})])["outputs"].result(timeout=10)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for index in range(RECORDS):
        producer.produce("outputs", f"value-{index}".encode(), key=f"key-{index % 97}".encode())
        if index % 5_000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    del producer  # no client of ours left to reconnect once the broker stops

    values = []
    for message in read_records(bootstrap, ["outputs"]):
        if not values:
            # the broker hangs after the first record: no answer to any fetch for longer than a quiet spell
            dedicated_broker.pause()
            try:
                time.sleep(PAUSE_SECONDS)  # the fault's duration, not a synchronisation
            finally:
                dedicated_broker.resume()
        values.append(message.value())
    assert len(values) == RECORDS
    assert set(values) == {f"value-{index}".encode() for index in range(RECORDS)}
