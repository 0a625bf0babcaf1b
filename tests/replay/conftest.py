"""Replay tests reuse the streaming-service fixtures: a broker of each test's own, workers stopped at teardown."""

import pytest

from app.replay import Replayer, ReplayOptions, replay
from benchmarks.replay_benchmark import BENCH_CHANNELS, write_ledger
from tests.service.conftest import bootstrap_servers, service_settings, topics_for, workers  # noqa: F401


@pytest.fixture
def replayed(settings_factory, bootstrap_servers):
    """A generated ledger (no worker) replayed twice, into `replay-a` by one process and `replay-b` by two."""
    from app.kafka.admin import create_topics

    settings = settings_factory(channels=BENCH_CHANNELS, partitions=4)
    create_topics(settings, bootstrap_servers)
    write_ledger(settings, bootstrap_servers, events=6_000, sku_count=60, store_count=10, locations_per_sku=8)
    Replayer(settings, bootstrap_servers, ReplayOptions(namespace="a", idle_seconds=1.0)).run()
    replay(settings, bootstrap_servers, ReplayOptions(namespace="b", idle_seconds=1.0, processes=2))
    return settings
