"""BatchSender against a stand-in for aiokafka's producer: records land in one batch per topic partition, in the
order they were sent; a full batch is submitted and the next one started; `acks()` gives the last offset of each
partition; `send_nowait` appends only where it can without awaiting."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from app.kafka.batch_sender import BatchSender, default_partition

PARTITIONS = 4


class FakeBatch:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes | None, list]] = []

    def append(self, *, timestamp, key, value, headers):
        if len(self.records) == self.capacity:
            return None
        self.records.append((key, value, headers))
        return object()  # aiokafka returns the record's metadata

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    """aiokafka's producer as BatchSender uses it: batches of `capacity` records, offsets counted per partition."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.submitted: list[tuple[str, int, list]] = []  # (topic, partition, records) in submission order
        self.next_offset: dict[tuple[str, int], int] = {}
        self.single_records: list[tuple[str, bytes | None]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS))

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int):
        first = self.next_offset.get((topic, partition), 0)
        self.next_offset[topic, partition] = first + batch.record_count()
        self.submitted.append((topic, partition, list(batch.records)))
        return _resolved(SimpleNamespace(topic=topic, partition=partition, offset=first))

    async def send(self, topic, key, value, partition, timestamp, headers):  # Faust's per-record path
        self.single_records.append((topic, value))
        where = (topic, 0)
        offset = self.next_offset.get(where, 0)
        self.next_offset[where] = offset + 1
        return _resolved(SimpleNamespace(topic=topic, partition=0, offset=offset))


def _resolved(value) -> asyncio.Future:
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


def _sender(capacity: int) -> tuple[BatchSender, FakeProducer]:
    producer = FakeProducer(capacity)
    faust_producer = SimpleNamespace(_ensure_producer=lambda: producer, send=producer.send)
    return BatchSender(SimpleNamespace(producer=faust_producer)), producer


def _in_partition(producer: FakeProducer, topic: str, partition: int) -> list[bytes]:
    return [value for t, p, records in producer.submitted if (t, p) == (topic, partition) for _, value, _ in records]


def test_records_land_in_their_default_partition_in_send_order_across_full_batches():
    async def scenario():
        sender, producer = _sender(capacity=3)
        keys = [f"sku-{n % 7}".encode() for n in range(40)]
        for n, key in enumerate(keys):
            await sender.send("availability.ecommerce", key, str(n).encode())
        assert sender.pending == 40
        last = await sender.acks()
        assert sender.pending == 0
        for partition in range(PARTITIONS):
            expected = [str(n).encode() for n, key in enumerate(keys) if default_partition(key, PARTITIONS) == partition]
            assert _in_partition(producer, "availability.ecommerce", partition) == expected
            if expected:
                assert last["availability.ecommerce", partition] == len(expected) - 1
        assert all(len(records) <= 3 for _, _, records in producer.submitted)

    asyncio.run(scenario())


def test_send_nowait_appends_only_to_an_open_batch_with_room():
    async def scenario():
        sender, producer = _sender(capacity=2)
        key = b"sku-1"
        assert not sender.send_nowait("availability.ecommerce", key, b"a")  # partition count not known yet
        await sender.send("availability.ecommerce", key, b"a")
        assert sender.send_nowait("availability.ecommerce", key, b"b")
        assert not sender.send_nowait("availability.ecommerce", key, b"c")  # the open batch is full
        await sender.send("availability.ecommerce", key, b"c")
        assert sender.pending == 3
        await sender.acks()
        partition = default_partition(key, PARTITIONS)
        assert _in_partition(producer, "availability.ecommerce", partition) == [b"a", b"b", b"c"]
        assert not sender.send_nowait("availability.ecommerce", key, b"d")  # acks() closed every batch

    asyncio.run(scenario())


def test_explicit_partitions_headers_and_keyless_records():
    async def scenario():
        sender, producer = _sender(capacity=10)
        await sender.send("ledger", b"k", b"x", partition=2, headers=[("h", b"1")])
        await sender.send("dead-letters", None, b"y")
        last = await sender.acks()
        assert producer.submitted == [("ledger", 2, [(b"k", b"x", [("h", b"1")])])]
        assert producer.single_records == [("dead-letters", b"y")]
        assert last == {("ledger", 2): 0, ("dead-letters", 0): 0}

    asyncio.run(scenario())


def test_a_record_larger_than_a_batch_is_refused():
    async def scenario():
        sender, _ = _sender(capacity=0)
        with pytest.raises(ValueError, match="larger than the producer's max batch size"):
            await sender.send("ledger", b"k", b"x", partition=0)

    asyncio.run(scenario())


def test_submit_hands_open_batches_over_and_acks_awaits_them_all_in_order():
    async def scenario():
        sender, producer = _sender(capacity=10)
        await sender.send("availability.ecommerce", b"sku-1", b"a", partition=1)
        await sender.submit()
        assert producer.submitted == [("availability.ecommerce", 1, [(b"sku-1", b"a", [])])]
        assert sender.pending == 1  # handed over, not yet acknowledged
        assert not sender.send_nowait("availability.ecommerce", b"sku-1", b"b")  # submit() closed the open batch
        await sender.send("availability.ecommerce", b"sku-1", b"b", partition=1)
        last = await sender.acks()
        assert [records for _, _, records in producer.submitted] == [[(b"sku-1", b"a", [])], [(b"sku-1", b"b", [])]]
        assert last == {("availability.ecommerce", 1): 1}  # the later batch's record, whatever order futures end
        assert sender.pending == 0

    asyncio.run(scenario())


def test_the_time_waited_for_queue_room_and_for_acknowledgements_is_counted_and_taken_once(monkeypatch):
    """What `availability_producer_wait_seconds_total` reports: a clock that moves only while the producer holds
    the sender (0.25 s for room in the queue per batch, 0.5 s until the broker acknowledges)."""
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr("app.kafka.batch_sender.time", SimpleNamespace(monotonic=lambda: clock.now))

    class SlowProducer(FakeProducer):
        async def send_batch(self, batch, topic, *, partition):
            clock.now += 0.25  # aiokafka waits here while the partition's previous batch is queued
            acknowledged = await super().send_batch(batch, topic, partition=partition)
            pending = asyncio.get_running_loop().create_future()

            def acknowledge() -> None:
                clock.now += 0.5
                pending.set_result(acknowledged.result())

            asyncio.get_running_loop().call_soon(acknowledge)
            return pending

    async def scenario():
        producer = SlowProducer(capacity=10)
        sender = BatchSender(SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer)))
        assert sender.take_waits() == (0.0, 0.0)
        await sender.send("availability.ecommerce", b"sku-1", b"a", partition=1)
        await sender.send("availability.ecommerce", b"sku-2", b"b", partition=2)
        await sender.acks()  # two batches queued (0.25 s each), then awaited together
        queue, acknowledgement = sender.take_waits()
        assert queue == pytest.approx(0.5)
        assert acknowledgement == pytest.approx(1.0)  # both acknowledgements came while the sender awaited them
        assert sender.take_waits() == (0.0, 0.0)

    asyncio.run(scenario())
