"""BatchSender: a micro-batch's records sent as one Kafka record batch per topic partition through the Faust app's
aiokafka producer, and Kafka's default partitioner for keyed records."""

from __future__ import annotations

import asyncio
import time

import faust

from app.service.freeze_guard import check_not_frozen
from app.wire.topics import key_partition, memoized_partitions


class BatchSender:
    """Sends a micro-batch's records as Kafka record batches, one per topic partition, then awaits all their
    acknowledgements at once.

    Faust's `producer.send` costs tens of microseconds of Python per record (signals, partitioner, one future per
    record); the service sends several records per event, so per-record sends were its largest cost. Here records
    are appended to aiokafka `BatchBuilder`s (one open per partition, submitted when full, at `submit()` and at
    `acks()`), and only the batch has a future. Order per partition is the order of `send` calls, as with
    per-record sends.
    Keyed records go to Kafka's default partition (murmur2 of the key, as every Kafka client computes it), so
    where records land does not change. Keyless records take the per-record path. `acks()` raises the first send error, which crashes the agent before its batch is
    acknowledged: the batch is then redelivered, never half lost."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._open: dict[tuple[str, int], object] = {}  # (topic, partition) -> BatchBuilder being filled
        self._partition_counts: dict[str, int] = {}
        self._pending: list = []  # (future, records in it) of every batch or record sent since the last acks()
        self._records = 0
        # seconds spent waiting on the producer since the last `take_waits()`: for room in a partition's queue
        # (aiokafka holds one batch per partition until a produce request takes it) and for acknowledgements
        self._queue_wait = 0.0
        self._acknowledgement_wait = 0.0

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        if partition is None and key is None:
            self._records += 1
            self._pending.append((await self._app.producer.send(topic, key, value, partition, None, headers), 1))
            return
        if partition is None:
            partition = await self._default_partition(topic, key)
        where = (topic, partition)
        if self._append_to_open_batch(where, key, value, headers):
            return
        if where in self._open:  # full: send it, start the next one
            await self._submit(where, self._open[where])
        self._open[where] = self._aiokafka_producer().create_batch()
        if not self._append_to_open_batch(where, key, value, headers):
            raise ValueError(f"a record for {topic} is larger than the producer's max batch size")

    def send_nowait(self, topic: str, key: bytes, value: bytes | None) -> bool:
        """`send` of a keyed record without awaiting, when its topic's partition count is known and its partition's
        open batch has room (the common case: no coroutine per record); False when the caller must await `send`."""
        count = self._partition_counts.get(topic)
        return count is not None and self._append_to_open_batch((topic, default_partition(key, count)), key, value)

    def _append_to_open_batch(self, where: tuple[str, int], key: bytes | None, value: bytes | None,
                              headers: list[tuple[str, bytes]] | None = None) -> bool:
        """Append to the open batch of `where`; False when there is none or it is full."""
        batch = self._open.get(where)
        if batch is None or batch.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
            return False
        self._records += 1
        return True

    @property
    def pending(self) -> int:
        """Records sent since the last `acks()`."""
        return self._records

    async def submit(self) -> None:
        """Hand every open batch to the producer without awaiting its acknowledgement, so the caller can go on
        while the broker answers; `acks()` awaits them later, in the order they were sent."""
        check_not_frozen()  # a worker frozen past its session submits nothing more (app.service.freeze_guard)
        for where, batch in list(self._open.items()):
            await self._submit(where, batch)
        self._open.clear()

    async def acks(self) -> dict[tuple[str, int], int]:
        """Await every record sent since the last call; the offset of the last one of each (topic, partition)."""
        await self.submit()
        pending, self._pending, self._records = self._pending, [], 0
        last_offsets: dict[tuple[str, int], int] = {}
        if pending:
            started = time.monotonic()
            results = await asyncio.gather(*(future for future, _ in pending))
            self._acknowledgement_wait += time.monotonic() - started
            for metadata, (_, records) in zip(results, pending):
                where = (metadata.topic, metadata.partition)
                last = metadata.offset + records - 1  # a batch's metadata carries its first record's offset
                if last > last_offsets.get(where, -1):
                    last_offsets[where] = last
        return last_offsets

    def take_waits(self) -> tuple[float, float]:
        """Seconds waited for queue room and for acknowledgements since the last call."""
        waits = (self._queue_wait, self._acknowledgement_wait)
        self._queue_wait = self._acknowledgement_wait = 0.0
        return waits

    async def _submit(self, where: tuple[str, int], batch) -> None:
        topic, partition = where
        records = batch.record_count()
        started = time.monotonic()
        future = await self._aiokafka_producer().send_batch(batch, topic, partition=partition)
        self._queue_wait += time.monotonic() - started
        self._pending.append((future, records))

    async def _default_partition(self, topic: str, key: bytes) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = len(await self._aiokafka_producer().partitions_for(topic))
        return default_partition(key, count)

    def _aiokafka_producer(self):
        return self._app.producer._ensure_producer()


default_partition = memoized_partitions(key_partition)
"""Kafka's default partitioner for a keyed record, remembered for the keys seen last."""
