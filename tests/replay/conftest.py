"""Replay tests reuse the streaming-service fixtures: a broker of each test's own, workers stopped at teardown.

`replayed` is a generated ledger replayed twice, made for each test; `replayed_once` is the same made once per
module on a broker of the module's own, for tests that only read it or replay it into namespaces of their own
(every topic name but a replay's is fixed, so a test that writes the ledger or a live topic needs a broker of its
own, and one that changes a replay's topics needs `replayed`)."""

import uuid
from collections.abc import Iterator

import pytest

from app.kafka.broker import EmbeddedBroker
from app.replay import Replayer, ReplayOptions, replay
from app.settings import Settings
from benchmarks.replay_benchmark import BENCH_CHANNELS, write_ledger
from tests.conftest import isolated_settings
from tests.service.conftest import bootstrap_servers, service_settings, topics_for, workers  # noqa: F401


def replay_a_generated_ledger(settings: Settings, servers: str) -> Settings:
    """A generated ledger (no worker) replayed twice, into `replay-a` by one process and `replay-b` by two."""
    from app.kafka.admin import create_topics

    create_topics(settings, servers)
    write_ledger(settings, servers, events=6_000, sku_count=60, store_count=10, locations_per_sku=8)
    Replayer(settings, servers, ReplayOptions(namespace="a", idle_seconds=0.5)).run()
    replay(settings, servers, ReplayOptions(namespace="b", idle_seconds=0.5, processes=2))
    return settings


@pytest.fixture
def replayed(settings_factory, bootstrap_servers):
    return replay_a_generated_ledger(settings_factory(channels=BENCH_CHANNELS, partitions=4), bootstrap_servers)


@pytest.fixture(scope="module")
def replayed_once(tmp_path_factory) -> Iterator[Settings]:
    """`replayed`, once per module; its broker is `replayed_once.kafka_bootstrap_servers`."""
    directory = tmp_path_factory.mktemp("replayed-once")

    def made(servers: str) -> Settings:
        settings = isolated_settings(app_id=f"test-{uuid.uuid4().hex[:12]}", data_dir=directory / "data",
                                     kafka_bootstrap_servers=servers, channels=BENCH_CHANNELS, partitions=4)
        return replay_a_generated_ledger(settings, servers)

    configured = Settings().kafka_bootstrap_servers
    if configured is not None:  # a shared external cluster, as `bootstrap_servers`
        yield made(configured)
        return
    with EmbeddedBroker(directory / "tansu.log") as broker:
        yield made(broker.bootstrap_servers)
