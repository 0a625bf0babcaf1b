"""A successful SCRAM login, and a refused one, on real Apache Kafka (testcontainers).

The embedded Tansu broker keeps no users in its memory storage, so only refusals are tested on it
(tests/service/test_broker_access.py). Here a KRaft broker has two listeners: PLAINTEXT, through which the test
creates the SCRAM users and reads the output topics, and CLIENT (SASL_PLAINTEXT, SCRAM-SHA-256 and -512), the only
one the worker, the admin client that creates the topics and the source producer are given. Skipped, with the
reason printed, where no Docker engine answers.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from app.engine import ChannelGranularity, event_to_record
from app.errors import EXIT_CONFIGURATION_ERROR
from app.kafka.admin import create_topics
from app.kafka.broker import free_loopback_port
from app.kafka.client_config import client_config
from app.wire.serialization import AvroCodec
from app.wire.topics import POLICY_CHANGES, STORE_TRANSACTIONS, availability_topic
from tests.conftest import (
    KAFKA_IMAGE,
    KAFKA_STARTUP_TIMEOUT_SECONDS,
    _wait_for_metadata,
    docker_engine_unavailable_reason,
)
from tests.engine.factories import channel, policy, receipt
from tests.service.harness import WORKER_READY, read_topic, wait_for_ledger_entries

pytestmark = [pytest.mark.kafka]

USER = "availability"
PASSWORD = "Scr4m-secret-never-logged"
JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


@pytest.fixture(scope="module")
def scram_kafka() -> Iterator[tuple[str, str]]:
    """(plaintext servers, SCRAM servers) of one broker, with USER created for both SCRAM mechanisms."""
    reason = docker_engine_unavailable_reason()
    if reason is not None:
        pytest.skip(f"kafka tests need Docker: {reason}")
    from testcontainers.core.container import DockerContainer

    plain_port, client_port = free_loopback_port(), free_loopback_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, plain_port)
        .with_bind_ports(9094, client_port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CLIENT://:9094,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://localhost:{plain_port},CLIENT://localhost:{client_port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_INTER_BROKER_LISTENER_NAME", "PLAINTEXT")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,CLIENT:SASL_PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_SASL_ENABLED_MECHANISMS", "SCRAM-SHA-256,SCRAM-SHA-512")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    # listener.name.client.scram-sha-<n>.sasl.jaas.config: images differ on how an environment variable spells a
    # dash (apache/kafka: ___, Confluent's: __). Both spellings are set; Kafka ignores the one it reads as an
    # unknown property.
    for bits in ("256", "512"):
        container = container.with_env(f"KAFKA_LISTENER_NAME_CLIENT_SCRAM___SHA___{bits}_SASL_JAAS_CONFIG", JAAS)
        container = container.with_env(f"KAFKA_LISTENER_NAME_CLIENT_SCRAM__SHA__{bits}_SASL_JAAS_CONFIG", JAAS)
    with container:
        plain = f"localhost:{plain_port}"
        _wait_for_metadata(plain, KAFKA_STARTUP_TIMEOUT_SECONDS)
        admin = AdminClient({"bootstrap.servers": plain})
        upserts = [
            UserScramCredentialUpsertion(USER, ScramCredentialInfo(mechanism, 4096), PASSWORD.encode())
            for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)
        ]
        for future in admin.alter_user_scram_credentials(upserts).values():
            future.result(timeout=30)
        yield plain, f"localhost:{client_port}"


def scram_settings(service_settings, servers: str, mechanism: str, password: str = PASSWORD):
    return service_settings(kafka_bootstrap_servers=servers, security_protocol="SASL_PLAINTEXT",
                            sasl_mechanism=mechanism, sasl_username=USER, sasl_password=password)


@pytest.mark.timeout(240, func_only=True)
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_worker_logged_in_with_scram_publishes_availability(scram_kafka, service_settings, workers, mechanism):
    plain, client = scram_kafka
    settings = scram_settings(service_settings, client, mechanism)
    create_topics(settings, client)  # the admin client logs in too
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=120)

    codec = AvroCodec(settings)
    producer = Producer(client_config(settings, client))  # the source producer logs in too
    rules = (channel("ecommerce"), channel("store-pickup", priority=1, granularity=ChannelGranularity.LOCATION))
    policy_record = event_to_record(policy(1, stores=("S1",), dcs=(), channels=rules))[1]
    producer.produce(POLICY_CHANGES.name, key=b"p", value=codec.encode(POLICY_CHANGES.name, policy_record))
    assert producer.flush(30) == 0
    wait_for_ledger_entries(plain, codec, settings.partitions, "PolicyChange")
    receipt_record = event_to_record(receipt(10, sku="SKU-A", event_id="r1", time=1000))[1]
    producer.produce(STORE_TRANSACTIONS.name, key=b"SKU-A", value=codec.encode(STORE_TRANSACTIONS.name, receipt_record))
    assert producer.flush(30) == 0

    ecommerce = availability_topic("ecommerce").name
    records = read_topic(plain, ecommerce, settings.partitions, timeout=60,
                         until=lambda rs: any(codec.decode(ecommerce, r.value).value["quantity"] == 10 for r in rs))
    assert [(r.key, codec.decode(ecommerce, r.value).value["version"]) for r in records] == [(b"SKU-A", 1)]
    assert PASSWORD not in worker.log_text()


@pytest.mark.timeout(120, func_only=True)
def test_a_wrong_scram_password_fails_fast_with_one_line(scram_kafka, service_settings, workers):
    _, client = scram_kafka
    wrong = "not-" + PASSWORD
    worker = workers(scram_settings(service_settings, client, "SCRAM-SHA-512", password=wrong))
    status = worker.process.wait(timeout=90)
    log = worker.log_text()
    assert status == EXIT_CONFIGURATION_ERROR, log[-3000:]
    assert len([line for line in log.splitlines() if "refused" in line]) == 1, log[-3000:]
    assert wrong not in log and "Traceback" not in log
