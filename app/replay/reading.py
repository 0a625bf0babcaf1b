"""Read topic partitions from given offsets to their end, with a consumer of our own (no group, no commits).

When is a partition at its end? Never from the high watermark alone: the embedded Tansu broker reports it as the
START of a partition's last batch, not the offset after its last record. Every pass reads at least every record
its partitions held when it started (`EndsAtStart` says how, and why that is exact on both brokers), whatever the
timing of its fetches. Then:
- by default reading goes on until no record has arrived for `idle_seconds`: records appended while reading (the
  live service may be running) are read if they arrive before that quiet period; on a topic written to
  continuously that period may never come. A quiet period before the records of the start are read never ends
  the pass (a fetch may be slow on a loaded machine); `STALL_SECONDS` of it is an error;
- `through_start_ends=True` stops as soon as the records of the start are read: a bounded pass that ends within a
  fetch of the end even while the topic is being written.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from app.errors import UserError
from app.kafka.client_config import consumer_for

if TYPE_CHECKING:
    from confluent_kafka import Message

    from app.settings import Settings

CONSUME_BATCH = 10_000
PROBE_SECONDS = 2.0  # at most this long to look at the last batches (progress estimate only)
STALL_SECONDS = 60.0  # a partition short of its known end and silent this long: give up


class ReadError(UserError):
    """A topic could not be read (missing topic, broker error). The message names the topic; check that it
    exists (`availability topics create`, or the replay that should have written it) and that the broker runs."""


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


class EndsAtStart:
    """Tells when a consumer has read every record its partitions held when this object was made (the start).

    The rule, per partition, from its watermarks (low, h) at the start. Apache Kafka's h is the offset after the
    last record; the embedded Tansu broker's h is one past the START of the last batch, which may reach further.
    What both report truly is the high watermark of a fetch response: the partition's end when that fetch was
    answered (librdkafka keeps it, `get_watermark_offsets(cached=True)`). The consumer is assigned after the start,
    so every fetch is answered after it, and such a watermark is at or past the end at the start. Hence:
    - h <= low: the partition held nothing; done at once;
    - the first record consumed at an offset >= h - 1 (the last record on Kafka, the first of the last batch on
      Tansu) fixes the partition's bound: the high watermark of the fetch that brought it. Done once the
      consumer has read up to that bound (the rest of that batch, and whatever else that fetch held);
    - a PARTITION_EOF (a fetch found nothing more at the position; the consumer needs `enable.partition.eof`)
      means done too: the broker's end was then at or past the end at the start.
    Records written after the start are read at most up to a bound fixed once, so a pass over a topic being written
    continuously ends as soon as the records of the start are read, and never waits for a quiet moment."""

    def __init__(self, consumer: Consumer, partitions: Iterable[tuple[str, int]], timeout: float = 10.0,
                 watermarks: Mapping[tuple[str, int], tuple[int, int]] | None = None) -> None:
        """`watermarks`: (low, high) per partition, when the caller has just read them (else read here)."""
        self._consumer = consumer
        self.marks: dict[tuple[str, int], int] = {}  # the high watermark h at the start, per non-empty partition
        self.bounds: dict[tuple[str, int], int] = {}  # the fixed end, once known
        for topic, partition in partitions:
            low, high = (watermarks[(topic, partition)] if watermarks is not None else
                         consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout))
            if high > low:
                self.marks[(topic, partition)] = high
        self.pending = set(self.marks)

    @property
    def done(self) -> bool:
        return not self.pending

    def end(self, topic: str, partition: int) -> int:
        """The offset the pass reads the partition up to, as far as known now (a lower bound until it is fixed)."""
        where = (topic, partition)
        return self.bounds.get(where, self.marks.get(where, 0))

    def note(self, message: Message) -> None:
        """Account for one consumed message, record or PARTITION_EOF event."""
        where = (message.topic(), message.partition())
        if where not in self.pending:
            return
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self.pending.discard(where)
            return
        offset = message.offset()
        if where not in self.bounds and offset >= self.marks[where] - 1:
            fetched_end = self._consumer.get_watermark_offsets(TopicPartition(*where), cached=True)[1]
            self.bounds[where] = max(fetched_end, offset + 1)
        if where in self.bounds and offset + 1 >= self.bounds[where]:
            self.pending.discard(where)


class PartitionsReader:
    """Every record of `topic` from `starts` (partition -> first offset; None: every partition from the earliest)
    to the end, as batches of messages in per-partition offset order. The end: see the module docstring;
    `through_start_ends=True` reads exactly what was there at the start (plus what came in the same fetches)."""

    def __init__(self, bootstrap_servers: str, topic: str, starts: dict[int, int] | None = None,
                 idle_seconds: float = 2.0, timeout: float = 10.0, settings: Settings | None = None,
                 through_start_ends: bool = False) -> None:
        self.topic = topic
        self._settings = settings
        self.idle_seconds = idle_seconds
        self._bootstrap_servers = bootstrap_servers
        self._consumer = consumer_for(bootstrap_servers, settings, **(
            {"enable.partition.eof": True, "fetch.wait.max.ms": 100} if through_start_ends else {}))
        self._bounded = through_start_ends
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
            self.positions = {partition: self._first_offset(partition) for partition in self.starts}
            self.ends_at_start = EndsAtStart(
                self._consumer, [(topic, p) for p in self.starts], timeout,
                watermarks={(topic, p): (self.low[p], self.end_hints[p]) for p in self.starts})
            if not through_start_ends:
                # A partition read from inside its last batch on Tansu, or from its end: whether a record is
                # still to come there cannot be told from the watermarks (EndsAtStart), so the quiet period
                # decides (without the partition EOF a bounded pass waits for, which Tansu does not send there).
                marks = self.ends_at_start.marks
                self.ends_at_start.pending -= {(topic, p) for p in self.starts
                                               if self.positions[p] >= marks.get((topic, p), 0)}
                self._probe_last_batches(timeout)
        except BaseException:
            self._consumer.close()
            raise

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
        ends = self.ends_at_start
        last_arrival = time.monotonic()
        while not (self._bounded and ends.done):
            messages = consumer.consume(num_messages=CONSUME_BATCH, timeout=0.2)
            batch = []
            for message in messages:
                ends.note(message)
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
                self.end_hints[partition] = max(self.end_hints[partition], ends.end(self.topic, partition))
            if batch:
                last_arrival = time.monotonic()
                yield batch
                continue
            quiet = time.monotonic() - last_arrival
            if ends.done:
                if quiet >= self.idle_seconds:
                    return
            elif quiet >= max(STALL_SECONDS, self.idle_seconds):
                stuck = ", ".join(f"{p}@{self.positions[p]}<{self.end_hints[p]}" for _, p in sorted(ends.pending))
                raise ReadError(f"{self.topic}: no records for {STALL_SECONDS:g}s before the end of "
                                f"partitions {stuck}; is the broker up?")

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> PartitionsReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
