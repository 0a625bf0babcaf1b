"""The connector loop without a broker: a fake consumer over an in-memory topic, a scripted sink, a fake clock."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from app.connectors import Backoff, ChannelConnector, CircuitState, ConnectorError, LocalView
from app.settings import Settings
from app.wire.serialization import AvroCodec
from app.wire.topics import availability_topic
from tests.connectors.fakes import FakeClock, FakeConsumer, FakeTopic, ScriptedSink
from tests.connectors.records import encoded

CHANNEL = "web"
TOPIC = availability_topic(CHANNEL).name


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(channels=(CHANNEL,))


@pytest.fixture
def codec(settings: Settings) -> AvroCodec:
    return AvroCodec(settings)


@pytest.fixture
def topic() -> FakeTopic:
    return FakeTopic(TOPIC, partitions=2)


@pytest.fixture
def make_connector(settings: Settings, codec: AvroCodec, topic: FakeTopic):
    consumers: list[FakeConsumer] = []

    def make(sink: ScriptedSink, clock: FakeClock | None = None, **options) -> ChannelConnector:
        def factory(config):
            consumer = FakeConsumer(topic, config)
            consumers.append(consumer)
            return consumer

        options.setdefault("backoff", Backoff(initial_seconds=1.0, multiplier=2.0, max_seconds=4.0))
        connector = ChannelConnector(settings, CHANNEL, sink, bootstrap_servers="fake:9092", group_id="group",
                                     codec=codec, consumer_factory=factory, clock=clock or FakeClock(), **options)
        connector.start()
        return connector

    make.consumers = consumers
    return make


def put(topic: FakeTopic, codec: AvroCodec, partition: int, key: str, version: int, **fields) -> None:
    topic.append(partition, key, encoded(codec, CHANNEL, key, version, **fields))


def drain(connector: ChannelConnector, steps: int = 10) -> None:
    for _ in range(steps):
        connector.run_once()


def test_unknown_channel_or_missing_broker_is_refused(settings: Settings) -> None:
    with pytest.raises(ConnectorError, match="not configured"):
        ChannelConnector(settings, "elsewhere", ScriptedSink(), bootstrap_servers="fake:9092")
    with pytest.raises(ConnectorError, match="KAFKA_BOOTSTRAP_SERVERS"):
        ChannelConnector(settings, CHANNEL, ScriptedSink())


def test_newer_versions_are_delivered_repeats_and_older_ones_ignored(make_connector, topic, codec) -> None:
    for version in (1, 2, 2, 1, 3):
        put(topic, codec, 0, "sku-1", version)
    sink = ScriptedSink()
    connector = make_connector(sink)
    drain(connector)
    assert sink.accepted_versions() == [("sku-1", 1), ("sku-1", 2), ("sku-1", 3)]
    assert connector.stats.stale_ignored == 2
    assert connector.stats.version_gaps == 0
    assert sink.accepted[1].previous_version == 1 and sink.accepted[0].previous_version is None
    assert topic.committed[("group", 0)] == 5  # past the ignored records too


def test_gaps_during_bootstrap_are_compaction_after_it_are_reported(make_connector, topic, codec, caplog) -> None:
    put(topic, codec, 0, "sku-1", 1)
    put(topic, codec, 0, "sku-1", 4)  # compaction removed 2 and 3
    sink = ScriptedSink()
    connector = make_connector(sink)
    drain(connector)
    assert connector.stats.compaction_gaps == 1 and connector.stats.version_gaps == 0
    put(topic, codec, 0, "sku-1", 7)  # live: 5 and 6 never arrived
    with caplog.at_level(logging.WARNING):
        drain(connector)
    assert connector.stats.version_gaps == 1
    assert "version gap on sku-1: v7 after v4, 2 version(s) missing" in caplog.text
    assert sink.accepted_versions() == [("sku-1", 1), ("sku-1", 4), ("sku-1", 7)]


def test_snapshot_records_apply_when_newer_without_gap(make_connector, topic, codec) -> None:
    put(topic, codec, 0, "sku-1", 2)
    sink = ScriptedSink()
    connector = make_connector(sink)
    drain(connector)
    put(topic, codec, 0, "sku-1", 2, snapshot=True)  # restates what is held: nothing to do
    put(topic, codec, 0, "sku-1", 9, snapshot=True)
    drain(connector)
    assert sink.accepted_versions() == [("sku-1", 2), ("sku-1", 9)]
    assert sink.accepted[-1].snapshot is True
    assert connector.stats.snapshots_applied == 1 and connector.stats.version_gaps == 0


def test_tombstones_and_undecodable_records_are_skipped(make_connector, topic, codec) -> None:
    topic.append(0, "sku-1", None)
    topic.append(0, "sku-1", b"not avro")
    put(topic, codec, 0, "sku-1", 1)
    sink = ScriptedSink()
    connector = make_connector(sink)
    drain(connector)
    assert sink.accepted_versions() == [("sku-1", 1)]
    assert (connector.stats.tombstones_ignored, connector.stats.undecodable_skipped) == (1, 1)


def test_location_keys_carry_sku_and_location(make_connector, topic, codec) -> None:
    put(topic, codec, 1, "sku-1/store-7", 1)
    sink = ScriptedSink()
    drain(make_connector(sink))
    change = sink.accepted[0]
    assert (change.key, change.sku, change.location, change.partition, change.offset) == (
        "sku-1/store-7", "sku-1", "store-7", 1, 0)


def test_failure_pauses_retries_with_backoff_and_resumes_in_order(make_connector, topic, codec) -> None:
    for version in (1, 2, 3):
        put(topic, codec, 0, "sku-a", version)
        put(topic, codec, 1, "sku-b", version)
    clock = FakeClock()
    sink = ScriptedSink(down=True)
    connector = make_connector(sink, clock, failure_threshold=10)
    consumer = make_connector.consumers[-1]
    connector.run_once()
    assert connector.is_paused and consumer.paused == {0, 1}
    assert len(sink.attempts) == 1 and connector.stats.sink_failures == 1
    assert topic.committed == {}
    drain(connector, 5)
    assert len(sink.attempts) == 1  # the 1s backoff has not passed
    clock.advance(1.0)
    connector.run_once()
    assert len(sink.attempts) == 2
    clock.advance(1.9)
    connector.run_once()
    assert len(sink.attempts) == 2  # second delay is 2s
    clock.advance(0.1)
    connector.run_once()
    assert len(sink.attempts) == 3
    assert {change.identity for change in sink.attempts} == {sink.attempts[0].identity}  # same change each time
    sink.down = False
    clock.advance(4.0)
    drain(connector)
    assert not connector.is_paused and connector.stats.resumes == 1
    accepted = sink.accepted_versions()
    assert sorted(accepted) == [(k, v) for k in ("sku-a", "sku-b") for v in (1, 2, 3)]
    for key in ("sku-a", "sku-b"):
        assert [v for k, v in accepted if k == key] == [1, 2, 3]
    assert topic.committed == {("group", 0): 3, ("group", 1): 3}


def test_circuit_opens_waits_for_cooldown_then_probes(make_connector, topic, codec) -> None:
    put(topic, codec, 0, "sku-a", 1)
    put(topic, codec, 0, "sku-a", 2)
    clock = FakeClock()
    sink = ScriptedSink(down=True)
    connector = make_connector(sink, clock, failure_threshold=3, cooldown_seconds=60.0)
    connector.run_once()  # attempt 1
    clock.advance(1.0)
    connector.run_once()  # attempt 2
    clock.advance(2.0)
    connector.run_once()  # attempt 3: opens
    assert connector.circuit.state is CircuitState.OPEN and connector.stats.circuit_opened == 1
    clock.advance(59.0)
    drain(connector, 20)
    assert len(sink.attempts) == 3  # nothing while open; the consumer is still polled
    assert make_connector.consumers[-1].consume_calls > 20
    clock.advance(1.0)
    assert connector.circuit.state is CircuitState.HALF_OPEN
    connector.run_once()  # probe fails: open again for a full cool-down
    assert len(sink.attempts) == 4 and connector.circuit.state is CircuitState.OPEN
    assert connector.stats.circuit_opened == 2
    sink.down = False
    clock.advance(60.0)
    drain(connector)
    assert connector.circuit.state is CircuitState.CLOSED
    assert sink.accepted_versions() == [("sku-a", 1), ("sku-a", 2)]


def test_ten_minute_outage_costs_no_update(make_connector, topic, codec) -> None:
    keys = [f"sku-{n}" for n in range(6)]
    for version in (1, 2, 3, 4):
        for n, key in enumerate(keys):
            put(topic, codec, n % 2, key, version)
    clock = FakeClock()
    sink = ScriptedSink()
    connector = make_connector(sink, clock, failure_threshold=5, cooldown_seconds=30.0)
    connector.run_once()
    delivered_before = len(sink.accepted)
    sink.down = True
    for second in range(600):  # one step per simulated second; the service keeps publishing meanwhile
        if second % 100 == 0:
            put(topic, codec, 0, "sku-0", 5 + second // 100)
        connector.run_once()
        clock.advance(1.0)
    assert len(sink.accepted) == delivered_before
    sink.down = False
    clock.advance(30.0)
    drain(connector, 30)
    versions = {}
    for key, version in sink.accepted_versions():
        assert version > versions.get(key, 0)
        versions[key] = version
    assert versions == {**{key: 4 for key in keys}, "sku-0": 10}
    assert len(sink.accepted) == len(keys) * 4 + 6


def test_restart_resumes_from_committed_offsets_with_saved_view(make_connector, topic, codec, tmp_path) -> None:
    view_file = tmp_path / "view.json"
    put(topic, codec, 0, "sku-1", 1)
    put(topic, codec, 1, "sku-2", 1)
    first = ScriptedSink()
    connector = make_connector(first, view_path=view_file)
    drain(connector)
    connector.close()
    assert LocalView.load(view_file).held("sku-1").version == 1
    put(topic, codec, 0, "sku-1", 1)  # a byte-identical repeat after a service crash
    put(topic, codec, 0, "sku-1", 2)
    second = ScriptedSink()
    drain(make_connector(second, view_path=view_file))
    assert second.accepted_versions() == [("sku-1", 2)]


def test_restart_without_view_file_rebuilds_the_view_from_the_topic(make_connector, topic, codec) -> None:
    put(topic, codec, 0, "sku-1", 1)
    put(topic, codec, 0, "sku-1", 2)
    connector = make_connector(ScriptedSink())
    drain(connector)
    connector.close()
    put(topic, codec, 0, "sku-1", 2)  # repeat: must not be delivered again
    put(topic, codec, 0, "sku-1", 3)
    sink = ScriptedSink()
    restarted = make_connector(sink)
    drain(restarted)
    assert sink.accepted_versions() == [("sku-1", 3)]
    assert restarted.stats.rebuilt == 2 and restarted.stats.stale_ignored == 1
    assert restarted.view.held("sku-1").version == 3


def test_stop_while_paused_commits_only_accepted_changes(make_connector, topic, codec) -> None:
    for version in (1, 2, 3):
        put(topic, codec, 0, "sku-1", version)
    sink = ScriptedSink()
    clock = FakeClock()
    connector = make_connector(sink, clock)
    original_deliver = sink.deliver

    def fail_from_version_2(change):
        sink.down = change.version >= 2
        original_deliver(change)

    sink.deliver = fail_from_version_2
    drain(connector, 3)
    assert connector.is_paused and connector.pending_change.version == 2
    connector.close()
    assert topic.committed == {("group", 0): 1}
    again = ScriptedSink()
    drain(make_connector(again))
    assert again.accepted_versions() == [("sku-1", 2), ("sku-1", 3)]
