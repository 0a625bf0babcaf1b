"""Snapshot: restate the current availability of every key of a channel, for connectors that start from scratch.

The channel topic (`availability.<channel>`, or its copy in a replay namespace) is read through every record it held
when the snapshot started (app.replay.reading.EndsAtStart: a bounded pass, quick even while the service keeps
publishing; what arrives in the same fetches is included too); for every key
the record with the highest version is kept, and re-published with `snapshot = true` and everything else
unchanged (same version, same event id and ledger position) to the compacted topic `availability.<channel>.snapshot`,
on the partition the key has in the channel topic. Every record carries headers:
- `snapshot-of`: the channel topic it restates;
- `snapshot-id`: one id per snapshot run;
- `channel-offset`: the offset of the channel topic's partition (the same partition number) up to which the
  snapshot covers it. A connector that loads the snapshot continues on the channel topic from there.

Why a topic of its own and not the channel topic: the live service keeps publishing while a snapshot is taken.
A snapshot record of version v landing on the channel topic after the live v+1 would become the key's latest
record, and compaction would then keep v and drop v+1: a connector bootstrapping later would show a stale value.
On a separate topic a stale snapshot record is harmless, because the channel topic after `channel-offset` holds
v+1 and the version rule picks it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.errors import UserError
from app.kafka.producing import produce_or_wait
from app.replay.namespace import LIVE, create_namespace_topics, output_topics
from app.replay.reading import PartitionsReader
from app.replay.replay import output_producer
from app.wire.serialization import AvroCodec
from app.wire.topics import (
    CHANNEL_OFFSET_HEADER,
    SNAPSHOT_ID_HEADER,
    SNAPSHOT_OF_HEADER,
    availability_snapshot_topic,
    availability_topic,
)

if TYPE_CHECKING:
    from app.settings import Settings


class SnapshotError(UserError):
    """A snapshot could not be taken or delivered; the message says why."""


@dataclass
class SnapshotSummary:
    channel: str
    source_topic: str
    snapshot_topic: str
    snapshot_id: str
    records_read: int = 0
    keys: int = 0
    channel_offsets: dict[int, int] = field(default_factory=dict)  # partition -> offset the snapshot covers up to
    seconds: float = 0.0


@dataclass(frozen=True)
class Latest:
    version: int
    partition: int
    value: dict


def take_snapshot(settings: Settings, bootstrap_servers: str, channel: str, namespace: str = LIVE,
                  codec: AvroCodec | None = None,
                  on_progress: Callable[[int, int], None] | None = None) -> SnapshotSummary:
    """Publish the channel's current values to its snapshot topic. `on_progress(records read, records expected)` is
    called after every batch read (expected: from the watermarks, an estimate until the end is known)."""
    if channel not in settings.channels:
        raise SnapshotError(f"unknown channel {channel!r} (configured: {', '.join(settings.channels)})")
    started = time.monotonic()
    codec = codec or AvroCodec(settings)
    live = availability_topic(channel)
    source = output_topics(settings, namespace)[live.name]
    target = availability_snapshot_topic(channel)
    serde = codec.serde(live)
    summary = SnapshotSummary(channel, source.name, target.name, f"{channel}-{int(time.time() * 1000)}")
    latest: dict[bytes, Latest] = {}
    with PartitionsReader(bootstrap_servers, source.name, settings=settings, through_start_ends=True) as reader:
        if on_progress is not None:
            on_progress(0, reader.expected_records)
        for batch in reader.batches():
            for message in batch:
                summary.records_read += 1
                if message.value() is None:
                    continue  # a tombstone: the service writes none
                value = serde.decode(message.value()).value
                held = latest.get(message.key())
                if held is None or value["version"] > held.version:
                    latest[message.key()] = Latest(value["version"], message.partition(), value)
            if on_progress is not None:
                on_progress(summary.records_read, summary.records_read + reader.expected_records)
        if on_progress is not None:
            on_progress(summary.records_read, summary.records_read)
        summary.channel_offsets = dict(reader.positions)
    create_namespace_topics(settings, bootstrap_servers, [target])
    producer = output_producer(bootstrap_servers, settings)
    errors: list[str] = []

    def on_delivery(error, message) -> None:
        if error is not None:
            errors.append(str(error))

    common = [(SNAPSHOT_OF_HEADER, source.name.encode()), (SNAPSHOT_ID_HEADER, summary.snapshot_id.encode())]
    for key in sorted(latest):
        held = latest[key]
        record = dict(held.value, snapshot=True)
        headers = common + [(CHANNEL_OFFSET_HEADER, str(summary.channel_offsets[held.partition]).encode())]
        produce_or_wait(producer, target.name, serde.encode(record), key, partition=held.partition, headers=headers,
                        on_delivery=on_delivery)
    remaining = producer.flush(60)
    if remaining or errors:
        raise SnapshotError(f"{remaining} snapshot records not delivered; {'; '.join(errors[:3])}")
    summary.keys = len(latest)
    summary.seconds = time.monotonic() - started
    return summary


@dataclass
class LoadedSnapshot:
    """What a connector needs to start from a snapshot: the latest snapshot value per key, and where to continue
    on the channel topic (partition -> offset)."""

    values: dict[str, dict] = field(default_factory=dict)
    channel_offsets: dict[int, int] = field(default_factory=dict)
    positions: dict[str, tuple[int, int]] = field(default_factory=dict)  # key -> (partition, offset) of its value


def load_snapshot(settings: Settings, bootstrap_servers: str, channel: str,
                  codec: AvroCodec | None = None) -> LoadedSnapshot:
    """Read `availability.<channel>.snapshot` (every record it holds now) under the version rule. Continue on the
    channel topic from `channel_offsets` (partitions missing there: from the beginning)."""
    codec = codec or AvroCodec(settings)
    serde = codec.serde(availability_topic(channel))
    loaded = LoadedSnapshot()
    with PartitionsReader(bootstrap_servers, availability_snapshot_topic(channel).name, settings=settings,
                          through_start_ends=True) as reader:
        for batch in reader.batches():
            for message in batch:
                value = serde.decode(message.value()).value
                key = message.key().decode()
                held = loaded.values.get(key)
                if held is None or value["version"] > held["version"]:
                    loaded.values[key] = value
                    loaded.positions[key] = (message.partition(), message.offset())
                offset = _channel_offset(message.headers() or ())
                if offset is not None:  # the newest snapshot covers the most: keep the furthest position
                    partition = message.partition()
                    loaded.channel_offsets[partition] = max(offset, loaded.channel_offsets.get(partition, 0))
    return loaded


def _channel_offset(headers: Iterable[tuple[str, bytes]]) -> int | None:
    for name, value in headers:
        if name == CHANNEL_OFFSET_HEADER:
            return int(value)
    return None
