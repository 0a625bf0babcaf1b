"""Ledger records the stream consumer skipped, found and read back with a consumer of our own.

Faust can hand the availability agent a ledger partition's records with a hole in their offsets right after a
rebalance: on the embedded broker the survivor of a takeover was given ledger[1]@10 after applying up to @7, and
@8-9 never came. Its recovery resumes the flow of messages before it seeks the stream partitions to their
committed offsets (faust-streaming issue #216 describes the race), and Faust takes a hole in the offsets it reads
for a compacted or transactional gap, which it commits past. Records skipped that way are lost for good: the
entries never reach the engine, and what they would have published never comes out.

So the availability stage knows, per ledger partition, the next offset it must apply (the one after the last it
applied; after a rebalance, the one after the partition state's last position) and checks every micro-batch
against it. A hole is read here, by offset, with a confluent-kafka consumer that joins no group and commits
nothing, and applied before the records that follow it, in ledger order. The ledger is written without
transactions, so its offsets are contiguous. That is why the settings refuse `processing_guarantee=exactly_once`:
its transaction markers take offsets, and this check could no longer tell a marker from a lost record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, TopicPartition

from app.errors import ServiceError
from app.kafka.client_config import consumer_for

if TYPE_CHECKING:
    from app.settings import Settings

READ_TIMEOUT_SECONDS = 30.0


class SkippedRecordsError(ServiceError, RuntimeError):
    """A hole could not be read back in time: the agent fails, the worker ends, and its replacement resumes from
    the committed offsets, which never pass an unapplied record."""


def holes(next_offset: int | None, offsets: list[int]) -> list[tuple[int, int]]:
    """[start, end) ranges of offsets missing between `next_offset` (the first one still to apply; None: unknown)
    and the ascending `offsets` of a batch. Offsets below `next_offset` are redeliveries, not holes."""
    found: list[tuple[int, int]] = []
    expected = next_offset
    for offset in offsets:
        if expected is not None and offset > expected:
            found.append((expected, offset))
        if expected is None or offset + 1 > expected:
            expected = offset + 1
    return found


@dataclass(frozen=True, slots=True)
class ReadMessage:
    """The fields of a Faust message that the availability stage reads, for a record read back here."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ReadEvent:
    message: ReadMessage


class SkippedRecordReader:
    """Reads offsets [start, end) of one topic partition (the records there: none for a compacted-away offset)."""

    def __init__(self, settings: Settings, bootstrap_servers: str, timeout: float = READ_TIMEOUT_SECONDS) -> None:
        self._settings = settings
        self._bootstrap_servers = bootstrap_servers
        self._timeout = timeout

    def read(self, topic: str, partition: int, start: int, end: int) -> list[ReadEvent]:
        consumer = consumer_for(self._bootstrap_servers, self._settings)
        try:
            consumer.assign([TopicPartition(topic, partition, start)])
            events: list[ReadEvent] = []
            deadline = time.monotonic() + self._timeout
            while time.monotonic() < deadline:
                for message in consumer.consume(num_messages=end - start, timeout=0.5):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise SkippedRecordsError(f"{topic}[{partition}]@{start}-{end - 1}: {error.str()}")
                    offset = message.offset()
                    if offset < end:
                        events.append(ReadEvent(ReadMessage(topic, partition, offset, message.key(), message.value(),
                                                            list(message.headers() or []))))
                    if offset >= end - 1:
                        return events
            raise SkippedRecordsError(
                f"{topic}[{partition}]@{start}-{end - 1}: not read back within {self._timeout:g} s"
            )
        finally:
            consumer.close()
