"""Writes changed table values the way a Faust table would (the local store, and a changelog record per value),
without Faust's per-value path.

`table[key] = value` costs tens of microseconds of Python per value in Faust and aiokafka (a FutureMessage, the
producer buffer, one future per record): a write-back of a second of peak traffic (thousands of SKU states) held
the availability stage for hundreds of milliseconds. Here the values of one table partition go to RocksDB in one
write batch, and to the table's changelog partition as Kafka record batches through the stage's BatchSender; Faust's
bookkeeping follows: the persisted changelog offset (from which a restart with this data directory recovers) and
the key index of its RocksDB store. What a Faust table reads, recovers and replicates is unchanged: the same keys
and values in the same changelog partitions, in the same order.

The last value of each changelog partition is sent alone, after the others are acknowledged, so the embedded
broker's high watermark (the start of a partition's last batch) stays exact (docs/ARCHITECTURE.md, "Two pitfalls
the stages work around").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from faust.types import TP

from tables.kept_records import PartitionDB

Write = tuple  # (faust Table, key bytes, value bytes or None to delete)


class Sender(Protocol):
    """What the write-back needs of the stage's sender (app.kafka.batch_sender.BatchSender)."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None) -> None: ...

    async def acks(self) -> dict[tuple[str, int], int]: ...


async def write_back(sender: Sender, partition_writes: Iterable[tuple[int, list[Write]]],
                     before_each_send: Callable[[], None]) -> None:
    """Write every (table, key, value) of each (partition, writes), in order per table partition.
    `partition_writes` is iterated once, a partition at a time: a generator that encodes each partition's values as
    it comes holds only that partition's (the records sent are copied into the producer's batches).
    `before_each_send` is called before each of the two sends (the frozen-worker check)."""
    trailers: list[tuple[int, Write]] = []
    tables: dict[str, object] = {}
    before_each_send()
    for partition, writes in partition_writes:
        last_per_table: dict[int, Write] = {}
        local: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for write in writes:
            table, key, value = write
            previous = last_per_table.get(id(table))
            if previous is not None:
                await _send(sender, partition, previous)
            last_per_table[id(table)] = write
            local.setdefault(id(table), []).append((key, value))
            tables[table.changelog_topic.get_topic_name()] = table
        for table, _, _ in last_per_table.values():
            _write_local(table, partition, local[id(table)])
        trailers += [(partition, write) for write in last_per_table.values()]
    if not trailers:
        return
    last_offsets = await sender.acks()
    before_each_send()
    for partition, write in trailers:
        await _send(sender, partition, write)
    last_offsets.update(await sender.acks())
    for (topic, partition), offset in last_offsets.items():
        table = tables.get(topic)
        if table is not None:
            table.data.set_persisted_offset(TP(topic, partition), offset)


async def _send(sender: Sender, partition: int, write: Write) -> None:
    table, key, value = write
    await sender.send(table.changelog_topic.get_topic_name(), key, value, partition)


def _write_local(table, partition: int, values: list[tuple[bytes, bytes | None]]) -> None:
    """The values in the table's local store of `partition`, in one batch; Faust's key index learns their partition."""
    PartitionDB(table.data, partition).write_many(values)
    key_index = getattr(table.data, "_key_index", None)  # RocksDB stores: key -> partition, for reads without an event
    if key_index is not None:
        for key, value in values:
            if value is not None:
                key_index[key] = partition
            else:
                key_index.pop(key, None)
