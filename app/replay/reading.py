"""Read topic partitions from given offsets to their end, with a consumer of our own (no group, no commits).

When is a partition at its end? Never from the high watermark alone: the embedded Tansu broker reports it as the
START of a partition's last batch, not the offset after its last record. So the high watermarks taken when reading
starts are only a lower bound: reading ends once every partition has reached its bound AND no record has arrived
for `idle_seconds`. Records appended while reading (the live service may be running) are read if they arrive
before that quiet period; a reader is a bounded pass, not a follower.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from app.kafka_config import client_config

if TYPE_CHECKING:
    from confluent_kafka import Message

    from app.settings import Settings

CONSUME_BATCH = 10_000
PROBE_SECONDS = 2.0  # at most this long to look at the last batches (progress estimate only)
STALL_SECONDS = 60.0  # a partition short of its known end and silent this long: give up


class ReadError(Exception):
    """A topic could not be read (missing topic, broker error). The message names the topic; check that it
    exists (`availability topics create`, or the replay that should have written it) and that the broker runs."""


def consumer_for(bootstrap_servers: str, settings: Settings | None = None) -> Consumer:
    """A reading consumer; `settings` supply the client security options (none: a plaintext connection)."""
    # A group id is required by the client, but nothing joins or commits: partitions are assigned explicitly.
    options = {
        "group.id": f"availability-reader-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
    }
    if settings is None:
        return Consumer({"bootstrap.servers": bootstrap_servers, **options})
    return Consumer(client_config(settings, bootstrap_servers, **options))


def partition_count(consumer: Consumer, topic: str, timeout: float = 10.0) -> int:
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise ReadError(f"topic {topic} does not exist or has no partitions")
    return len(metadata.partitions)


def offsets_at_time(consumer: Consumer, topic: str, partitions: int, timestamp_ms: int,
                    timeout: float = 10.0) -> dict[int, int]:
    """Per partition, the first offset whose record timestamp is >= `timestamp_ms`; partitions with no such record
    are left out (there is nothing to read there)."""
    asked = [TopicPartition(topic, partition, timestamp_ms) for partition in range(partitions)]
    found = consumer.offsets_for_times(asked, timeout=timeout)
    return {tp.partition: tp.offset for tp in found if tp.error is None and tp.offset >= 0}


class PartitionsReader:
    """Every record of `topic` from `starts` (partition -> first offset; None: every partition from the earliest)
    to the end, as batches of messages in per-partition offset order."""

    def __init__(self, bootstrap_servers: str, topic: str, starts: dict[int, int] | None = None,
                 idle_seconds: float = 2.0, timeout: float = 10.0, settings: Settings | None = None) -> None:
        self.topic = topic
        self._settings = settings
        self.idle_seconds = idle_seconds
        self._bootstrap_servers = bootstrap_servers
        self._consumer = consumer_for(bootstrap_servers, settings)
        try:
            count = partition_count(self._consumer, topic, timeout)
            if starts is None:
                starts = {partition: OFFSET_BEGINNING for partition in range(count)}
            unknown = sorted(set(starts) - set(range(count)))
            if unknown:
                raise ReadError(f"{topic} has {count} partitions; no partition {unknown[0]}")
            self.starts = dict(sorted(starts.items()))
            self.end_hints = {}  # partition -> high watermark at the start (a lower bound of the end, see above)
            self.low = {}
            for partition in self.starts:
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
                self.low[partition], self.end_hints[partition] = low, high
            self._probe_last_batches(timeout)
        except BaseException:
            self._consumer.close()
            raise
        self.positions = {partition: self._first_offset(partition) for partition in self.starts}

    def _probe_last_batches(self, timeout: float) -> None:
        """Sharpen the end hints: read from each high watermark (the start of the last batch on Tansu) for a
        moment, so a hint becomes the offset after the last record seen. Still only a lower bound."""
        probe = [TopicPartition(self.topic, p, self.end_hints[p]) for p in self.starts if self.end_hints[p] > 0]
        if not probe:
            return
        # A consumer of its own, so nothing fetched here can reach the real pass.
        consumer = consumer_for(self._bootstrap_servers, self._settings)
        try:
            consumer.assign(probe)
            waiting = {tp.partition for tp in probe}
            deadline = time.monotonic() + min(timeout, PROBE_SECONDS)
            while waiting and time.monotonic() < deadline:
                for message in consumer.consume(num_messages=CONSUME_BATCH, timeout=0.1):
                    if message.error() is None:
                        partition = message.partition()
                        self.end_hints[partition] = max(self.end_hints[partition], message.offset() + 1)
                        waiting.discard(partition)
        finally:
            consumer.close()

    def _first_offset(self, partition: int) -> int:
        start = self.starts[partition]
        return self.low[partition] if start == OFFSET_BEGINNING else max(start, self.low[partition])

    @property
    def expected_records(self) -> int:
        """About how many records the pass reads (from the watermarks; exact on a standard Kafka broker)."""
        return sum(max(0, self.end_hints[p] - self.positions[p]) for p in self.starts)

    def batches(self) -> Iterator[list[Message]]:
        consumer = self._consumer
        consumer.assign([TopicPartition(self.topic, p, self.starts[p]) for p in self.starts])
        behind = {p for p in self.starts if self.positions[p] < self.end_hints[p]}
        last_arrival = time.monotonic()
        while True:
            messages = consumer.consume(num_messages=CONSUME_BATCH, timeout=0.2)
            batch = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    if error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART or error.fatal():
                        raise ReadError(f"reading {self.topic}: {error.str()}")
                    continue  # transient: the client retries
                batch.append(message)
                partition = message.partition()
                self.positions[partition] = message.offset() + 1
                if partition in behind and self.positions[partition] >= self.end_hints[partition]:
                    behind.discard(partition)
            if batch:
                last_arrival = time.monotonic()
                yield batch
            elif time.monotonic() - last_arrival >= self.idle_seconds:
                if not behind:
                    return
                if time.monotonic() - last_arrival >= max(STALL_SECONDS, self.idle_seconds):
                    stuck = ", ".join(f"{p}@{self.positions[p]}<{self.end_hints[p]}" for p in sorted(behind))
                    raise ReadError(f"{self.topic}: no records for {STALL_SECONDS:g}s before the end of "
                                    f"partitions {stuck}; is the broker up?")

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> PartitionsReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
