"""Fixtures of the streaming-service tests: workers that are always stopped, and a codec per test."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest

from app.kafka.admin import create_topics
from app.settings import Settings
from app.wire.serialization import AvroCodec
from tests.service.harness import SourceProducer, WorkerProcess, ingest_process, worker_settings


@pytest.fixture
def service_settings(settings_factory: Callable[..., Settings]) -> Callable[..., Settings]:
    """settings_factory with a free web port, 4 partitions and no clock ticks unless asked."""
    return lambda **overrides: worker_settings(settings_factory, **overrides)


@pytest.fixture
def workers() -> Iterator[Callable[[Settings], WorkerProcess]]:
    """`workers(settings)` starts a worker subprocess; every one is stopped at teardown, even on failure."""
    started: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        worker = WorkerProcess(settings).start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.send_signal(signal.SIGCONT)  # a stopped (SIGSTOP) process acts on no other signal
        worker.stop(grace_seconds=10)


@pytest.fixture
def ingest_processes() -> Iterator[Callable[[Settings], WorkerProcess]]:
    """`ingest_processes(settings)` starts an ingest process; every one is stopped at teardown, even on failure."""
    started: list[WorkerProcess] = []

    def start(settings: Settings) -> WorkerProcess:
        process = ingest_process(settings).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop(grace_seconds=10)


@pytest.fixture
def topics_for(bootstrap_servers: str) -> Callable[[Settings], SourceProducer]:
    """Create the registry's topics for `settings` and return a SourceProducer for them."""

    def create(settings: Settings) -> SourceProducer:
        create_topics(settings, bootstrap_servers)
        return SourceProducer(settings, AvroCodec(settings))

    return create


@pytest.fixture
def bootstrap_servers(tmp_path) -> Iterator[str]:
    """A broker of each test's own: every topic name is fixed by the registry, so tests sharing one broker would
    read each other's records. Tansu starts in milliseconds."""
    from app.kafka.broker import EmbeddedBroker

    configured = Settings().kafka_bootstrap_servers
    if configured is not None:
        yield configured  # a shared external cluster: tests must then run one at a time
        return
    with EmbeddedBroker(tmp_path / "tansu.log") as broker:
        yield broker.bootstrap_servers
