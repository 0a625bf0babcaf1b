"""EndsAtStart, the rule that ends a bounded pass (snapshot, tail --once), against a stand-in consumer that answers
watermarks the way the embedded Tansu broker does and the way Apache Kafka does. No broker: every step is explicit.
"""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from app.replay.reading import EndsAtStart

TOPIC = "availability.web"


class Record:
    """What EndsAtStart reads of a confluent_kafka.Message: a record, or a PARTITION_EOF event."""

    def __init__(self, partition: int, offset: int, eof: bool = False) -> None:
        self._partition, self._offset, self._eof = partition, offset, eof

    def topic(self) -> str:
        return TOPIC

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self):
        return _Eof() if self._eof else None


class _Eof:
    def code(self) -> int:
        return KafkaError._PARTITION_EOF


class StandInConsumer:
    """One topic's partitions as lists of batches (each a count of records). `list_offsets_style` decides what
    get_watermark_offsets(cached=False) answers: "kafka" the end, "tansu" one past the start of the last batch.
    `fetch(partition, position)` returns the batch holding `position` and records the fetch's high watermark (the
    true end at that moment) as librdkafka does for get_watermark_offsets(cached=True)."""

    def __init__(self, batches: dict[int, list[int]], list_offsets_style: str) -> None:
        self.batches = {partition: list(sizes) for partition, sizes in batches.items()}
        self.style = list_offsets_style
        self.fetched_end: dict[int, int] = {}

    def end(self, partition: int) -> int:
        return sum(self.batches[partition])

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        if cached:
            return 0, self.fetched_end[tp.partition]
        sizes = self.batches[tp.partition]
        if not sizes or self.style == "kafka":
            return 0, self.end(tp.partition)
        return 0, sum(sizes[:-1]) + 1

    def append(self, partition: int, size: int) -> None:
        self.batches[partition].append(size)

    def fetch(self, partition: int, position: int) -> list[Record]:
        self.fetched_end[partition] = self.end(partition)
        start = 0
        for size in self.batches[partition]:
            if start <= position < start + size:
                return [Record(partition, offset) for offset in range(position, start + size)]
            start += size
        return [Record(partition, position, eof=True)]  # nothing at or after the position


def records(partition: int, first: int, last: int) -> list[Record]:
    return [Record(partition, offset) for offset in range(first, last + 1)]


def feed(ends: EndsAtStart, consumer: StandInConsumer, partition: int, upto: int) -> int:
    """Fetch and note records of `partition` one at a time until `upto` (inclusive) or the tracker is done with
    the partition; returns the last offset noted."""
    position, last = 0, -1
    while position <= upto and (TOPIC, partition) in ends.pending:
        for record in consumer.fetch(partition, position):
            ends.note(record)
            if record.error() is not None:
                return last
            last = position = record.offset()
            position += 1
            if (TOPIC, partition) not in ends.pending or position > upto:
                break
    return last


@pytest.mark.parametrize("style", ["tansu", "kafka"])
def test_reads_through_the_last_batch_there_at_the_start(style: str) -> None:
    consumer = StandInConsumer({0: [5, 3, 4]}, style)  # offsets 0-4, 5-7, 8-11
    ends = EndsAtStart(consumer, [(TOPIC, 0)])
    assert ends.marks[(TOPIC, 0)] == (9 if style == "tansu" else 12)
    # Every record up to the last one there at the start is needed: 8-10 are not enough on either broker.
    assert feed(ends, consumer, 0, upto=10) == 10 and not ends.done
    assert feed(ends, consumer, 0, upto=11) == 11 and ends.done
    assert ends.bounds[(TOPIC, 0)] == 12


def test_a_batch_appended_before_the_fetch_is_read_too_but_nothing_after_it() -> None:
    consumer = StandInConsumer({0: [5, 3, 4]}, "tansu")
    ends = EndsAtStart(consumer, [(TOPIC, 0)])
    consumer.append(0, 2)  # 12-13, written after the start, before the fetch that brings 8-11
    feed(ends, consumer, 0, upto=7)
    assert not ends.done
    consumer.fetch(0, 8)  # the fetch that brings the last batch of the start sees the end at 14
    for record in records(0, 8, 11):
        ends.note(record)
    assert not ends.done and ends.bounds[(TOPIC, 0)] == 14
    consumer.append(0, 100)  # written later: never waited for
    for record in records(0, 12, 13):
        ends.note(record)
    assert ends.done


def test_empty_partitions_are_done_at_once_and_an_eof_ends_a_partition() -> None:
    consumer = StandInConsumer({0: [], 1: [3]}, "kafka")
    ends = EndsAtStart(consumer, [(TOPIC, 0), (TOPIC, 1)])
    assert ends.pending == {(TOPIC, 1)}
    ends.note(Record(1, 3, eof=True))  # a fetch at 3 found nothing: the end now is at or past the start's
    assert ends.done


def test_records_before_the_last_batch_never_end_the_pass() -> None:
    consumer = StandInConsumer({0: [1, 1, 1, 6]}, "tansu")  # offsets 0, 1, 2, then 3-8; ListOffsets says 4
    ends = EndsAtStart(consumer, [(TOPIC, 0)])
    for record in records(0, 0, 2):
        consumer.fetch(0, record.offset())
        ends.note(record)
    assert not ends.done
    consumer.fetch(0, 3)
    for record in records(0, 3, 7):
        ends.note(record)
        assert not ends.done, record.offset()  # 4 (the reported watermark) is not the end
    ends.note(Record(0, 8))
    assert ends.done
