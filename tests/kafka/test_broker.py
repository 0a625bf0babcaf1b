from __future__ import annotations

import os
import socket
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from app.kafka.broker import EmbeddedBroker, EmbeddedBrokerError, bootstrap_servers_for, free_loopback_port


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def round_trip_one_record(bootstrap_servers: str) -> tuple[bytes, bytes]:
    topic = f"broker-check-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=10)

    producer = Producer({"bootstrap.servers": bootstrap_servers})
    producer.produce(topic, key=b"SKU-1", value=b"hello")
    assert producer.flush(10) == 0, "the record was not acknowledged"

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            # Tansu holds a group join for about half the session timeout; Kafka's default (45 s) makes that 23 s.
            "session.timeout.ms": 6000,
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            return message.key(), message.value()
        pytest.fail(f"no record came back from {topic} within 30s")
    finally:
        consumer.close()


@pytest.mark.integration
def test_session_broker_round_trips_a_record(bootstrap_servers):
    assert round_trip_one_record(bootstrap_servers) == (b"SKU-1", b"hello")


@pytest.mark.integration
def test_start_serves_records_and_stop_leaves_no_process(tmp_path):
    broker = EmbeddedBroker(tmp_path / "tansu.log")
    with broker:
        pid = broker.pid
        assert pid is not None and process_exists(pid)
        assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
        assert broker.startup_seconds is not None and broker.startup_seconds < 30
        assert round_trip_one_record(broker.bootstrap_servers) == (b"SKU-1", b"hello")
    assert not broker.is_running
    assert not process_exists(pid)
    assert "listening on" in (tmp_path / "tansu.log").read_text()
    broker.stop()  # idempotent
    with pytest.raises(EmbeddedBrokerError):
        broker.bootstrap_servers


@pytest.mark.integration
def test_two_brokers_get_different_ports(tmp_path):
    with EmbeddedBroker(tmp_path / "first.log") as first, EmbeddedBroker(tmp_path / "second.log") as second:
        assert first.port != second.port
        assert first.pid != second.pid


@pytest.mark.integration
def test_an_explicit_port_is_used(tmp_path):
    port = free_loopback_port()
    with EmbeddedBroker(tmp_path / "tansu.log", port=port) as broker:
        assert broker.bootstrap_servers == f"127.0.0.1:{port}"


@pytest.mark.integration
def test_a_taken_port_fails_with_the_log_tail(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        broker = EmbeddedBroker(tmp_path / "tansu.log", port=port, startup_timeout_seconds=10)
        with pytest.raises(EmbeddedBrokerError, match="log"):
            broker.start()
    assert not broker.is_running


@pytest.mark.integration
def test_a_paused_broker_does_not_answer_until_resumed(dedicated_broker):
    admin = AdminClient({"bootstrap.servers": dedicated_broker.bootstrap_servers})
    assert admin.list_topics(timeout=5).brokers

    dedicated_broker.pause()
    assert dedicated_broker.is_paused
    with pytest.raises(Exception):
        AdminClient({"bootstrap.servers": dedicated_broker.bootstrap_servers}).list_topics(timeout=1)

    dedicated_broker.resume()
    assert admin.list_topics(timeout=5).brokers


@pytest.mark.integration
def test_stop_works_on_a_paused_broker(tmp_path):
    broker = EmbeddedBroker(tmp_path / "tansu.log")
    broker.start()
    pid = broker.pid
    broker.pause()
    broker.stop(grace_seconds=5)
    assert not process_exists(pid)


@pytest.mark.integration
def test_configured_servers_are_used_as_they_are(settings_factory):
    settings = settings_factory(kafka_bootstrap_servers="kafka.example:9092")
    with bootstrap_servers_for(settings) as servers:
        assert servers == "kafka.example:9092"


@pytest.mark.integration
def test_without_configured_servers_an_embedded_broker_runs_for_the_block(settings_factory, tmp_path):
    settings = settings_factory(kafka_bootstrap_servers=None)
    with bootstrap_servers_for(settings, log_dir=tmp_path / "logs") as servers:
        admin = AdminClient({"bootstrap.servers": servers})
        assert admin.list_topics(timeout=5).brokers
    assert (tmp_path / "logs" / "tansu.log").exists()
    host, port = servers.split(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()


@pytest.mark.kafka
def test_real_kafka_round_trips_a_record(kafka_container):
    # The same check against Apache Kafka: what the embedded broker stands in for.
    assert round_trip_one_record(kafka_container) == (b"SKU-1", b"hello")
