"""The connector end to end on the embedded broker: a webhook that is down for a while, and restarts from the
committed offsets. Each test has its own channel topic and consumer group."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.connectors import Backoff, ChannelConnector, WebhookSink
from app.kafka.admin import topic_config, wait_for_topics
from app.replay import take_snapshot
from app.settings import Settings
from app.wire.serialization import AvroCodec
from app.wire.topics import availability_topic
from tests.connectors.fakes import ScriptedSink
from tests.connectors.records import encoded
from tests.connectors.webhook_server import WebhookEndpoint

pytestmark = pytest.mark.integration

PARTITIONS = 3
SESSION_TIMEOUT_MS = 6000  # Tansu's group join takes about half of it
WAIT_SECONDS = 45.0


@pytest.fixture
def channel_settings(settings_factory: Callable[..., Settings], bootstrap_servers: str) -> Settings:
    channel = f"shop-{uuid.uuid4().hex[:8]}"
    settings = settings_factory(channels=(channel,), partitions=PARTITIONS)
    topic = availability_topic(channel)
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.create_topics([NewTopic(topic.name, num_partitions=PARTITIONS, replication_factor=1,
                                            config=topic_config(topic, settings))])
    futures[topic.name].result(timeout=30)
    wait_for_topics(bootstrap_servers, [topic.name])
    return settings


class AvailabilityPublisher:
    """Writes ChannelAvailability records the way the service does: Confluent-framed Avro, keyed, murmur2."""

    def __init__(self, settings: Settings, bootstrap_servers: str) -> None:
        self.channel = settings.channels[0]
        self.codec = AvroCodec(settings)
        self.producer = Producer({"bootstrap.servers": bootstrap_servers, "partitioner": "murmur2_random",
                                  "linger.ms": 5})

    def publish(self, records: list[tuple[str, int]]) -> None:
        topic = availability_topic(self.channel).name
        for key, version in records:
            self.producer.produce(topic, key=key.encode(), value=encoded(self.codec, self.channel, key, version))
        assert self.producer.flush(30) == 0


def connector_for(settings: Settings, sink, group_id: str, **options) -> ChannelConnector:
    return ChannelConnector(
        settings, settings.channels[0], sink, group_id=group_id, session_timeout_ms=SESSION_TIMEOUT_MS,
        poll_timeout_seconds=0.1, backoff=Backoff(initial_seconds=0.05, max_seconds=0.2), **options,
    )


@contextmanager
def running(connector: ChannelConnector) -> Iterator[ChannelConnector]:
    """Runs the connector in a thread; always stops it, and fails the test if it does not stop."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            connector.run(stop)
        except BaseException as error:  # reported by the test thread
            failure.append(error)

    thread = threading.Thread(target=target, name="connector", daemon=True)
    thread.start()
    try:
        yield connector
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "the connector did not stop within 30s"
    assert not failure, f"the connector failed: {failure[0]!r}"


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def assert_in_order_once(delivered: list[tuple[str, int]]) -> None:
    assert len(delivered) == len(set(delivered)), "a change was delivered twice"
    last: dict[str, int] = {}
    for key, version in delivered:
        assert version > last.get(key, 0), f"{key} v{version} delivered after v{last[key]}"
        last[key] = version


def test_webhook_down_then_back_loses_no_update(channel_settings: Settings, bootstrap_servers: str) -> None:
    keys = [f"sku-{n}" for n in range(8)]
    publisher = AvailabilityPublisher(channel_settings, bootstrap_servers)
    publisher.publish([(key, version) for version in (1, 2, 3) for key in keys] + [(keys[0], 2)])  # + a repeat
    with WebhookEndpoint() as endpoint:
        endpoint.down = True
        sink = WebhookSink(endpoint.url, timeout_seconds=2)
        connector = connector_for(channel_settings, sink, f"group-{uuid.uuid4().hex[:8]}",
                                  failure_threshold=3, cooldown_seconds=0.5)
        with running(connector):
            wait_until(lambda: connector.stats.circuit_opened >= 2, "the circuit to open and a probe to fail")
            assert connector.is_paused and endpoint.accepted == []
            publisher.publish([(key, 4) for key in keys])  # the service keeps publishing during the outage
            endpoint.down = False
            expected = {(key, version) for key in keys for version in (1, 2, 3, 4)}
            wait_until(lambda: {(c["key"], c["version"]) for c in endpoint.snapshot()} >= expected,
                       "every change to reach the webhook")
        delivered = [(change["key"], change["version"]) for change in endpoint.snapshot()]
    assert set(delivered) == expected
    assert_in_order_once(delivered)
    assert endpoint.refused >= 4
    assert connector.stats.resumes >= 1 and connector.stats.stale_ignored >= 1


@pytest.mark.parametrize("keep_view_file", [True, False], ids=["view-file", "view-rebuilt-from-topic"])
def test_restart_resumes_from_committed_offsets(channel_settings: Settings, bootstrap_servers: str, tmp_path,
                                                keep_view_file: bool) -> None:
    keys = [f"sku-{n}" for n in range(6)]
    group = f"group-{uuid.uuid4().hex[:8]}"
    options = {"view_path": tmp_path / "view.json"} if keep_view_file else {}
    publisher = AvailabilityPublisher(channel_settings, bootstrap_servers)
    publisher.publish([(key, version) for version in (1, 2) for key in keys])

    first_sink = ScriptedSink()
    accept_first = 5
    original_deliver = first_sink.deliver

    def goes_down_after_five(change) -> None:
        first_sink.down = len(first_sink.accepted) >= accept_first
        original_deliver(change)

    first_sink.deliver = goes_down_after_five
    first = connector_for(channel_settings, first_sink, group, failure_threshold=2, cooldown_seconds=0.2, **options)
    with running(first):
        wait_until(lambda: first.is_paused and first.stats.sink_failures >= 3, "the first sink to fail")
    acknowledged = first_sink.accepted_versions()
    assert len(acknowledged) == accept_first

    publisher.publish([(keys[0], 1), (keys[1], 2)] + [(key, 3) for key in keys])  # repeats, then new versions
    second_sink = ScriptedSink()
    second = connector_for(channel_settings, second_sink, group, **options)
    expected = {(key, version) for key in keys for version in (1, 2, 3)}
    with running(second):
        wait_until(lambda: set(acknowledged) | set(second_sink.accepted_versions()) >= expected,
                   "the restarted connector to deliver the rest")
    redelivered = set(acknowledged) & set(second_sink.accepted_versions())
    assert not redelivered, f"acknowledged changes delivered again: {sorted(redelivered)}"
    assert_in_order_once(acknowledged + second_sink.accepted_versions())
    if not keep_view_file:
        assert second.stats.rebuilt >= 1


def test_new_connector_bootstraps_from_a_snapshot_without_reading_history(
    channel_settings: Settings, bootstrap_servers: str
) -> None:
    channel = channel_settings.channels[0]
    keys = [f"sku-{n}" for n in range(6)]
    publisher = AvailabilityPublisher(channel_settings, bootstrap_servers)
    publisher.publish([(key, version) for version in (1, 2, 3) for key in keys])
    summary = take_snapshot(channel_settings, bootstrap_servers, channel)
    assert summary.keys == len(keys)
    publisher.publish([(key, 4) for key in keys[:3]])  # live changes after the snapshot

    sink = ScriptedSink()
    connector = connector_for(channel_settings, sink, f"group-{uuid.uuid4().hex[:8]}", bootstrap_from_snapshot=True)
    expected = {(key, 3) for key in keys} | {(key, 4) for key in keys[:3]}
    with running(connector):
        wait_until(lambda: set(sink.accepted_versions()) >= expected, "the snapshot and the later changes")
    delivered = sink.accepted_versions()
    assert set(delivered) == expected, "history before the snapshot was read, or a change is missing"
    assert_in_order_once(delivered)
    snapshot_values = [change for change in sink.accepted if change.snapshot]
    assert {(c.key, c.version) for c in snapshot_values} == {(key, 3) for key in keys}
    assert all(c.topic == f"availability.{channel}.snapshot" for c in snapshot_values)
    assert connector.stats.snapshots_applied == len(keys) and connector.stats.version_gaps == 0


def test_connector_with_committed_offsets_ignores_the_snapshot(channel_settings: Settings, bootstrap_servers: str) -> None:
    channel = channel_settings.channels[0]
    keys = [f"sku-{n}" for n in range(4)]
    group = f"group-{uuid.uuid4().hex[:8]}"
    publisher = AvailabilityPublisher(channel_settings, bootstrap_servers)
    publisher.publish([(key, 1) for key in keys])
    first_sink = ScriptedSink()
    with running(connector_for(channel_settings, first_sink, group, bootstrap_from_snapshot=True)):
        wait_until(lambda: len(first_sink.accepted) == len(keys), "the first run to deliver v1")
    assert not any(change.snapshot for change in first_sink.accepted)  # no snapshot existed: history was read

    publisher.publish([(key, 2) for key in keys])
    take_snapshot(channel_settings, bootstrap_servers, channel)
    second_sink = ScriptedSink()
    second = connector_for(channel_settings, second_sink, group, bootstrap_from_snapshot=True)
    with running(second):
        wait_until(lambda: set(second_sink.accepted_versions()) >= {(key, 2) for key in keys}, "v2 of every key")
    assert not any(change.snapshot for change in second_sink.accepted), "committed offsets must win over a snapshot"
