"""PartitionsReader on a real broker: a pass that ends on a quiet period still reads every record its partitions
held when it started, however slowly the fetches come (app.replay.reading)."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.replay import reading
from app.replay.reading import PartitionsReader

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BATCHES = 12
PER_BATCH = 25
PER_DELIVERY = 10  # not a divisor of PER_BATCH: deliveries split batches


def written_in_batches(bootstrap_servers: str, partitions: int) -> str:
    """A topic whose partitions hold BATCHES batches of PER_BATCH records each (a flush after each batch)."""
    topic = f"reading-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    for future in admin.create_topics([NewTopic(topic, partitions, 1, config={"retention.ms": "-1"})]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 1000})
    for batch in range(BATCHES):
        for partition in range(partitions):
            for index in range(PER_BATCH):
                producer.produce(topic, f"{batch}-{index}".encode(), partition=partition)
        assert producer.flush(30) == 0
    return topic


class SlowFetches:
    """A reading consumer on a loaded machine: its records come at most PER_DELIVERY at a time, and a second passes
    with nothing between two deliveries (on the reader's clock, `clock`)."""

    def __init__(self, consumer: Consumer, clock: list[float]) -> None:
        self._consumer, self._clock = consumer, clock
        self._held: list = []
        self._quiet_next = True

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list:
        if self._quiet_next:
            self._quiet_next = False
            self._clock[0] += 1.0
            return []
        if not self._held:
            self._held = self._consumer.consume(num_messages=num_messages, timeout=timeout)
        delivered, self._held = self._held[:PER_DELIVERY], self._held[PER_DELIVERY:]
        self._quiet_next = bool(delivered)
        self._clock[0] += 0.001
        return delivered

    def __getattr__(self, name: str):
        return getattr(self._consumer, name)


def slow_fetches(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    real_consumer_for = reading.consumer_for
    monkeypatch.setattr(reading, "consumer_for", lambda *args, **kwargs: SlowFetches(
        real_consumer_for(*args, **kwargs), clock))
    monkeypatch.setattr(reading, "time", SimpleNamespace(monotonic=lambda: clock[0]))


@pytest.mark.parametrize("probe", ["saw nothing", "as it is"])
def test_a_quiet_period_never_ends_the_pass_before_the_records_of_its_start(bootstrap_servers, monkeypatch, probe):
    partitions = 3
    topic = written_in_batches(bootstrap_servers, partitions)
    slow_fetches(monkeypatch)
    if probe == "saw nothing":  # the probe of the last batches ran out of time (the end hints stay the watermarks)
        monkeypatch.setattr(PartitionsReader, "_probe_last_batches", lambda self, timeout: None)
    with PartitionsReader(bootstrap_servers, topic, idle_seconds=0.5) as reader:
        read = [(message.partition(), message.offset()) for batch in reader.batches() for message in batch]
    expected = [(partition, offset) for partition in range(partitions) for offset in range(BATCHES * PER_BATCH)]
    assert sorted(read) == expected
