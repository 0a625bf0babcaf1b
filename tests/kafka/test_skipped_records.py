"""Ledger records the stream consumer skipped are found and read back in order (app.kafka.skipped_records)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.engine.positions import ledger_position
from app.kafka.skipped_records import ReadEvent, ReadMessage, SkippedRecordReader, SkippedRecordsError, holes
from app.service.availability import LedgerBatchProcessor
from app.settings import Settings


def test_holes_are_the_offsets_missing_after_the_next_one_to_apply():
    assert holes(8, [8, 9, 10]) == []
    assert holes(8, [10, 11]) == [(8, 10)]
    assert holes(8, [9, 12, 13, 15]) == [(8, 9), (10, 12), (14, 15)]


def test_redeliveries_and_an_unknown_start_are_not_holes():
    assert holes(12, [5, 6, 7, 12]) == []  # after a rebalance: records already applied come again
    assert holes(12, [5, 6, 13]) == [(12, 13)]
    assert holes(None, [3, 4, 6]) == [(5, 6)]  # first batch, nothing applied yet: only holes inside the batch


class FakeReader:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, int]] = []

    def read(self, topic: str, partition: int, start: int, end: int) -> list[ReadEvent]:
        self.calls.append((topic, partition, start, end))
        return [ReadEvent(ReadMessage(topic, partition, offset, None, b"read back")) for offset in range(start, end)]


def event_at(offset: int, partition: int = 1):
    return SimpleNamespace(message=SimpleNamespace(partition=partition, offset=offset, value=b"consumed"))


def with_skipped(processor, partition: int, last_position: int, offsets: list[int]) -> list:
    engine = SimpleNamespace(state=SimpleNamespace(last_position=last_position))
    events = [event_at(offset, partition) for offset in offsets]
    return asyncio.run(LedgerBatchProcessor._with_skipped_records(processor, partition, engine, events))


@pytest.fixture
def processor():
    counted: list[tuple[str, int]] = []
    observer = SimpleNamespace(skipped_records_read=lambda topic, count: counted.append((topic, count)))
    return SimpleNamespace(_skipped_reader=FakeReader(), _next_offsets={}, _observer=observer, counted=counted)


def test_a_hole_after_the_last_applied_position_is_read_back_and_put_in_its_place(processor):
    events = with_skipped(processor, 1, ledger_position(7, 3), [10, 11])
    assert [(e.message.offset, e.message.value) for e in events] == [
        (8, b"read back"), (9, b"read back"), (10, b"consumed"), (11, b"consumed")]
    assert processor._skipped_reader.calls == [("ledger", 1, 8, 10)]
    assert processor.counted == [("ledger", 2)]


def test_the_offset_after_the_last_batch_wins_over_the_state_and_contiguous_batches_read_nothing(processor):
    processor._next_offsets[1] = 12  # what process() keeps after each batch
    assert [e.message.offset for e in with_skipped(processor, 1, ledger_position(7), [12, 13])] == [12, 13]
    processor._next_offsets[1] = 14
    assert [e.message.offset for e in with_skipped(processor, 1, ledger_position(7), [16])] == [14, 15, 16]
    assert processor._skipped_reader.calls == [("ledger", 1, 14, 16)]


def test_no_reader_without_a_broker_to_read_from(processor):
    processor._skipped_reader = None
    assert [e.message.offset for e in with_skipped(processor, 1, ledger_position(7), [10])] == [10]


@pytest.mark.integration
def test_the_reader_returns_the_records_at_the_offsets_asked(bootstrap_servers):
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    for future in admin.create_topics([NewTopic("holes", 2, 1, config={"retention.ms": "-1"})]).values():
        future.result(10)
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    for n in range(6):
        producer.produce("holes", key=f"k{n}".encode(), value=f"v{n}".encode(), partition=1, headers=[("h", b"x")])
    assert producer.flush(10) == 0
    reader = SkippedRecordReader(Settings(_env_file=None), bootstrap_servers, timeout=10)
    read = reader.read("holes", 1, 2, 5)
    assert [(e.message.offset, e.message.key, e.message.value) for e in read] == [
        (2, b"k2", b"v2"), (3, b"k3", b"v3"), (4, b"k4", b"v4")]
    assert read[0].message.partition == 1 and read[0].message.headers == [("h", b"x")]
    with pytest.raises(SkippedRecordsError, match=r"holes\[0\]@0-0"):
        SkippedRecordReader(Settings(_env_file=None), bootstrap_servers, timeout=1).read("holes", 0, 0, 1)
