"""Snapshot: every key of a channel published once, with snapshot=true and the latest version, and the channel
offsets a connector continues from."""

from __future__ import annotations

import pytest

from app.replay import load_snapshot, take_snapshot
from app.replay.namespace import output_topics
from app.wire.serialization import AvroCodec
from app.wire.topics import CHANNEL_OFFSET_HEADER, SNAPSHOT_OF_HEADER, availability_snapshot_topic, availability_topic
from tests.service.harness import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.mark.parametrize("channel", ["ecommerce", "store-pickup"])
def test_snapshot_publishes_every_key_once_with_latest_versions(replayed_once, channel):
    settings = replayed_once  # each channel's snapshot has topics of its own
    bootstrap_servers = settings.kafka_bootstrap_servers
    codec = AvroCodec(settings)
    live = availability_topic(channel).name
    source = output_topics(settings, "a")[live].name
    latest: dict[bytes, tuple[int, dict]] = {}
    source_records = read_topic(bootstrap_servers, source, settings.partitions, idle_seconds=0.5)
    for record in source_records:
        value = codec.decode(live, record.value).value
        if record.key not in latest or value["version"] > latest[record.key][1]["version"]:
            latest[record.key] = (record.partition, value)
    assert len(latest) > 20

    summary = take_snapshot(settings, bootstrap_servers, channel, namespace="a", codec=codec)
    assert summary.keys == len(latest)
    assert summary.records_read == len(source_records)

    published = read_topic(bootstrap_servers, availability_snapshot_topic(channel).name, settings.partitions, idle_seconds=0.5)
    assert sorted(record.key for record in published) == sorted(latest)  # every key, exactly once
    for record in published:
        value = codec.decode(live, record.value).value
        partition, original = latest[record.key]
        assert value == dict(original, snapshot=True)  # same version and fields, marked as a snapshot
        assert record.partition == partition  # where the key lives in the channel topic
        headers = dict(record.headers)
        assert headers[SNAPSHOT_OF_HEADER] == source.encode()
        assert int(headers[CHANNEL_OFFSET_HEADER]) == summary.channel_offsets[partition]

    loaded = load_snapshot(settings, bootstrap_servers, channel, codec=codec)
    assert {key.encode(): value["version"] for key, value in loaded.values.items()} == {
        key: value["version"] for key, (_, value) in latest.items()
    }
    assert loaded.channel_offsets == {p: o for p, o in summary.channel_offsets.items() if p in loaded.channel_offsets}
