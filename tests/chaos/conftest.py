"""Fixtures of the fault-injection suite: a broker of each test's own (paused, resumed or started late by the
test), settings for it, and workers that are always continued and stopped at teardown, even after SIGSTOP."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from app.kafka.admin import create_topics
from app.kafka.broker import EmbeddedBroker
from app.settings import Settings
from app.wire.serialization import AvroCodec
from tests.chaos.workload import CHAOS_CHANNELS
from tests.service.conftest import ingest_processes, workers  # noqa: F401 - the same fixtures, for the chaos tests
from tests.service.harness import SourceProducer, worker_settings


@pytest.fixture
def broker(tmp_path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path / "tansu.log") as started:
        yield started


@pytest.fixture
def chaos_settings(settings_factory, broker) -> Callable[..., Settings]:
    """Settings for a worker on this test's broker: the workload's four channels, 4 partitions, no clock ticks."""
    def build(**overrides) -> Settings:
        values = {"kafka_bootstrap_servers": broker.bootstrap_servers, "channels": CHAOS_CHANNELS}
        values.update(overrides)
        return worker_settings(settings_factory, **values)

    return build


def second_worker(settings: Settings, name: str) -> Settings:
    """The same deployment (app id, broker, partitions) with a data dir and web port of its own."""
    from app.kafka.broker import free_loopback_port

    return settings.model_copy(update={"data_dir": settings.data_dir.parent / name, "web_port": free_loopback_port()})


@pytest.fixture
def source_for() -> Callable[[Settings], SourceProducer]:
    def create(settings: Settings) -> SourceProducer:
        create_topics(settings, settings.kafka_bootstrap_servers)
        return SourceProducer(settings, AvroCodec(settings))

    return create
