"""When the availability stage writes changed states back to the tables (app.service.availability): every chunk,
or once per write-back interval, and at once where waiting would be unsafe or unbounded; and never before every
record published so far is acknowledged."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from app.service import availability
from app.service.availability import LedgerBatchProcessor


class FakeStore:
    def __init__(self, partition: int, dirty_skus: int = 1, position_stored: bool = True) -> None:
        self.partition = partition
        self.dirty_skus = dirty_skus
        self.position_stored = position_stored

    @property
    def is_dirty(self) -> bool:
        return self.dirty_skus > 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(availability, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


class FakeSender:
    def __init__(self, steps: list[str]) -> None:
        self.steps = steps

    async def acks(self) -> dict:
        self.steps.append("acks")
        return {}


def processor(interval: float, cache_limit: int = 100) -> LedgerBatchProcessor:
    processor = LedgerBatchProcessor.__new__(LedgerBatchProcessor)
    processor._write_back_interval = interval
    processor._cache_limit = cache_limit
    processor._unwritten = {}
    processor._unwritten_since = None
    processor._decided = []
    processor._partitions = {}
    processor._next_offsets = {}
    processor._assignment = 0
    processor.written = []
    processor.steps = []
    processor._sender = FakeSender(processor.steps)

    async def write_back(stores):
        processor.steps.append("write-back")
        processor.written.append(sorted(store.partition for _, store in stores))

    processor._write_back = write_back
    return processor


def chunk(processor: LedgerBatchProcessor, *stores: FakeStore) -> None:
    asyncio.run(processor._write_back_when_due([(f"event of {store.partition}", store) for store in stores]))


def test_interval_zero_writes_back_after_every_chunk(clock):
    writer = processor(interval=0)
    chunk(writer, FakeStore(1))
    chunk(writer, FakeStore(2))
    assert writer.written == [[1], [2]]


def test_changes_wait_for_the_interval_then_go_together(clock):
    writer = processor(interval=1.0)
    chunk(writer, FakeStore(1))
    clock.now += 0.6
    chunk(writer, FakeStore(2), FakeStore(3, dirty_skus=0))  # an unchanged store is not kept
    assert writer.written == []
    clock.now += 0.4  # a second after the oldest change
    chunk(writer, FakeStore(1))
    assert writer.written == [[1, 2]]
    assert writer._unwritten == {} and writer._unwritten_since is None
    clock.now += 0.5
    chunk(writer, FakeStore(4))  # the interval starts again with the next change
    assert writer.written == [[1, 2]]


def test_a_partition_without_a_stored_position_is_written_back_at_once(clock):
    writer = processor(interval=60)
    chunk(writer, FakeStore(1))
    chunk(writer, FakeStore(2, position_stored=False))
    assert writer.written == [[1, 2]]


def test_decisions_that_requests_wait_for_are_written_back_at_once(clock):
    writer = processor(interval=60)
    chunk(writer, FakeStore(1))
    writer._decided.append("a decision an HTTP request waits for")
    chunk(writer, FakeStore(2))
    assert writer.written == [[1, 2]]


def test_a_partition_with_more_changed_skus_than_its_cache_holds_is_written_back_at_once(clock):
    writer = processor(interval=60, cache_limit=10)  # per partition
    chunk(writer, FakeStore(1, dirty_skus=10), FakeStore(2, dirty_skus=10))
    assert writer.written == []
    chunk(writer, FakeStore(2, dirty_skus=11))
    assert writer.written == [[1, 2]]


def test_a_rebalance_drops_the_changes_not_written_back(clock):
    writer = processor(interval=60)
    chunk(writer, FakeStore(1))
    writer.forget_state()
    assert writer._unwritten == {} and writer._unwritten_since is None and writer._assignment == 1
    chunk(writer, FakeStore(2))
    clock.now += 60
    chunk(writer, FakeStore(2))
    assert writer.written == [[2]]  # partition 1's change is applied again from the ledger by its next owner


def test_every_write_back_follows_the_acknowledgement_of_what_was_published(clock):
    writer = processor(interval=1.0)
    chunk(writer, FakeStore(1))  # not due: its records may still be on their way while the next chunk is applied
    assert writer.steps == []
    clock.now += 1.0
    chunk(writer, FakeStore(2))
    assert writer.steps == ["acks", "write-back"]
    chunk(writer, FakeStore(3, dirty_skus=0))  # nothing to write back: the chunk still ends acknowledged
    assert writer.steps == ["acks", "write-back", "acks"]


def test_the_end_of_a_micro_batch_awaits_every_acknowledgement(clock):
    writer = processor(interval=60)
    chunk(writer, FakeStore(1))  # not due
    asyncio.run(writer.acknowledged())  # before Faust commits the micro-batch's offsets
    assert writer.steps == ["acks"] and writer.written == []


def test_a_stream_that_goes_quiet_is_written_back_by_the_timer_once_the_interval_has_passed(clock):
    writer = processor(interval=1.0)
    chunk(writer, FakeStore(1), FakeStore(2))  # the last chunk before the stream goes quiet: not due yet
    asyncio.run(writer.write_back_if_due())  # the timer, before the interval has passed
    assert writer.written == []
    clock.now += 1.0
    asyncio.run(writer.write_back_if_due())
    assert writer.written == [[1, 2]] and writer.steps == ["acks", "write-back"]
    assert writer._unwritten == {} and writer._unwritten_since is None
    clock.now += 5.0
    asyncio.run(writer.write_back_if_due())  # nothing changed since: nothing to do, not even an acknowledgement
    assert writer.written == [[1, 2]] and writer.steps == ["acks", "write-back"]


def test_the_timer_writes_nothing_back_when_a_rebalance_comes_while_it_awaits_the_acknowledgements(clock):
    writer = processor(interval=1.0)
    chunk(writer, FakeStore(1))
    clock.now += 1.0

    async def acks_during_which_the_partitions_are_revoked() -> dict:
        writer.steps.append("acks")
        writer.forget_state()
        return {}

    writer._sender.acks = acks_during_which_the_partitions_are_revoked
    asyncio.run(writer.write_back_if_due())
    assert writer.steps == ["acks"] and writer.written == []  # the next owner applies them again from the ledger
