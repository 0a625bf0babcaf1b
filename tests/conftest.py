"""Shared fixtures: the broker the tests run against, and Settings built for one test.

- `bootstrap_servers` (session): `KAFKA_BOOTSTRAP_SERVERS` when set, otherwise one embedded Tansu broker started for
  the whole session and always stopped. If it cannot start, every test that needs it errors: never a silent pass.
- `settings_factory`: `settings_factory(**overrides) -> Settings` with a unique app id and a fresh data dir. Tests
  marked `integration` (or using `bootstrap_servers`) get the session broker; others get no broker address.
- `dedicated_broker`: an embedded broker of the test's own, for tests that pause, resume or stop it.
- `kafka_container` (session): real Apache Kafka in Docker for tests marked `kafka`; skipped, with the reason
  printed, where no Docker engine answers.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.kafka.broker import EmbeddedBroker, free_loopback_port
from app.settings import Settings

SETTINGS_ENV_PREFIX = Settings.model_config["env_prefix"]
KAFKA_IMAGE = "apache/kafka:3.9.1"  # docker-compose.yml runs the same image (tests/test_compose.py checks)
DOCKER_PING_TIMEOUT_SECONDS = 3
KAFKA_STARTUP_TIMEOUT_SECONDS = 120.0


@pytest.fixture(scope="session")
def bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = Settings().kafka_bootstrap_servers
    if configured is not None:
        yield configured
        return
    broker = EmbeddedBroker(tmp_path_factory.mktemp("broker") / "tansu.log")
    with broker:
        yield broker.bootstrap_servers


@pytest.fixture(autouse=True)
def _integration_tests_need_the_broker(request: pytest.FixtureRequest) -> None:
    # An integration test whose broker failed to start must error, even if it never asked for the broker itself.
    if request.node.get_closest_marker("integration") is not None:
        request.getfixturevalue("bootstrap_servers")


@pytest.fixture
def settings_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Settings]:
    uses_broker = (
        request.node.get_closest_marker("integration") is not None or "bootstrap_servers" in request.fixturenames
    )
    built = 0

    def build(**overrides: Any) -> Settings:
        nonlocal built
        built += 1
        app_id = f"test-{uuid.uuid4().hex[:12]}"
        values: dict[str, Any] = {
            "app_id": app_id,
            "data_dir": tmp_path / f"data-{built}",
            "kafka_bootstrap_servers": request.getfixturevalue("bootstrap_servers") if uses_broker else None,
        }
        values.update(overrides)
        return isolated_settings(**values)

    return build


def isolated_settings(**values: Any) -> Settings:
    """Settings of `values` and the documented defaults, whatever AVAILABILITY_* variables the shell exports."""
    with pytest.MonkeyPatch.context() as environment:
        for name in list(os.environ):
            if name.upper().startswith(SETTINGS_ENV_PREFIX) or name.upper() == "KAFKA_BOOTSTRAP_SERVERS":
                environment.delenv(name)
        return Settings(**values)


@pytest.fixture
def dedicated_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path / "dedicated-broker.log") as broker:
        yield broker


def docker_engine_unavailable_reason() -> str | None:
    """None when a Docker engine answers a ping; otherwise why not, in words."""
    try:
        import docker
    except ImportError:
        return "the docker SDK is not installed (pip install testcontainers)"
    try:
        client = docker.from_env(timeout=DOCKER_PING_TIMEOUT_SECONDS)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # the SDK raises several unrelated types for "no engine here"
        return f"no Docker engine answers ({type(exc).__name__}: {exc})"
    return None


@pytest.fixture(scope="session")
def kafka_container() -> Iterator[str]:
    """Bootstrap servers of a single-node KRaft Apache Kafka in Docker, for tests marked `kafka`."""
    reason = docker_engine_unavailable_reason()
    if reason is not None:
        pytest.skip(f"kafka tests need Docker: {reason}")

    from testcontainers.core.container import DockerContainer

    # apache/kafka reads its whole configuration from KAFKA_* variables once any is set. The advertised port must
    # be the one published on the host, so it is chosen here rather than left to Docker.
    host_port = free_loopback_port()
    container = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(9092, host_port)
        .with_env("KAFKA_NODE_ID", "1")
        .with_env("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://localhost:{host_port}")
        .with_env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT")
        .with_env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    with container:
        servers = f"localhost:{host_port}"
        _wait_for_metadata(servers, KAFKA_STARTUP_TIMEOUT_SECONDS)
        yield servers


def _wait_for_metadata(servers: str, timeout_seconds: float) -> None:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": servers})
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            if admin.list_topics(timeout=5).brokers:
                return
        except KafkaException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Kafka at {servers} did not answer a metadata request within {timeout_seconds}s")
        time.sleep(1)
