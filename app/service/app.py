"""The app factory: one Faust app per Settings, with its topics, tables and agents wired explicitly.

    service = build_service(settings, bootstrap_servers)   # everything, for tools and tests
    app = create_app(settings, bootstrap_servers)          # just the faust.App (what a worker runs)

Nothing here reads the environment or opens a connection: the worker (app.service.worker) starts the app. The
lookup API and the metrics attach to the AvailabilityService (its tables, codec and `observer`) in their own
modules.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import faust

from app.serialization import AvroCodec
from app.settings import Settings
from app.topics import DEAD_LETTERS, LEDGER, RESERVATION_DECISIONS, SOURCE_TOPICS, availability_topic
from tables import AvailabilityTables, declare_tables

logger = logging.getLogger(__name__)

# Exit status of a worker whose agent met an unexpected error (EX_SOFTWARE).
EXIT_AGENT_CRASHED = 70

# Group membership on the embedded broker: Tansu holds a (re)join for about half the session timeout, so Faust's
# default of 60 s costs ~30 s per worker start. 6 s joins in ~3 s; a heartbeat every 0.5 s keeps a busy worker
# well inside it (12 heartbeats per session).
BROKER_SESSION_TIMEOUT_SECONDS = 6.0
BROKER_HEARTBEAT_INTERVAL_SECONDS = 0.5
BROKER_REBALANCE_TIMEOUT_SECONDS = 10.0
PRODUCER_LINGER_SECONDS = 0.002  # lets a batch's sends share produce requests without delaying a quiet stream


class PipelineObserver:
    """Hooks the stages call as records go through; no-ops here. Metrics subclass it and pass it to
    build_service(). Hooks must be cheap and must not raise."""

    def ingested(self, source_topic: str, event_type: str, count: int = 1) -> None: ...

    def dead_lettered(self, stage: str, source_topic: str, reason: str) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def published(self, topic: str, count: int = 1) -> None: ...

    def reservation_decided(self, channel: str, outcome: str) -> None: ...

    def batch_applied(self, partition: int, events: int, ingest_times_ms: list[int], published_at_ms: int) -> None: ...


@dataclass(frozen=True)
class ServiceTopics:
    """Faust handles of the topics the agents read (raw bytes: the codec decodes, not Faust)."""

    sources: dict[str, faust.TopicT]
    ledger: faust.TopicT
    availability_topic_names: dict[str, str]  # channel -> availability.<channel>
    reservation_decisions: str
    dead_letters: str


@dataclass
class AvailabilityService:
    settings: Settings
    app: faust.App
    codec: AvroCodec
    tables: AvailabilityTables
    topics: ServiceTopics
    observer: PipelineObserver = field(default_factory=PipelineObserver)


def faust_datadir(settings: Settings) -> Path:
    """Where this worker's RocksDB tables live. RocksDB locks each table directory, so two workers on one
    machine need two data dirs."""
    return Path(settings.data_dir) / "worker"


def _raw_topic(app: faust.App, name: str) -> faust.TopicT:
    # internal=False: the topics are created from the registry (app.admin), never by Faust with its defaults.
    return app.topic(name, key_serializer="raw", value_serializer="raw", internal=False)


def build_service(
    settings: Settings,
    bootstrap_servers: str | None = None,
    *,
    observer: PipelineObserver | None = None,
    codec: AvroCodec | None = None,
) -> AvailabilityService:
    servers = bootstrap_servers or settings.kafka_bootstrap_servers
    if servers is None:
        raise ValueError("no bootstrap servers: start the embedded broker first (app.broker.bootstrap_servers_for)")
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{server.strip()}" for server in servers.split(",")],
        store="rocksdb://",
        datadir=str(faust_datadir(settings)),
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        processing_guarantee=settings.processing_guarantee,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=BROKER_SESSION_TIMEOUT_SECONDS,
        broker_heartbeat_interval=BROKER_HEARTBEAT_INTERVAL_SECONDS,
        broker_rebalance_timeout=BROKER_REBALANCE_TIMEOUT_SECONDS,
        stream_recovery_delay=0.0,
        # Tansu reports a partition's high watermark as the start of its last batch, so a persisted offset can be
        # "beyond" it after a crash. That is not an inconsistency here: see app.service.availability.
        recovery_consistency_check=False,
        producer_linger=PRODUCER_LINGER_SECONDS,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
    )
    tables = declare_tables(app, settings)
    topics = ServiceTopics(
        sources={spec.name: _raw_topic(app, spec.name) for spec in SOURCE_TOPICS},
        ledger=_raw_topic(app, LEDGER.name),
        availability_topic_names={channel: availability_topic(channel).name for channel in settings.channels},
        reservation_decisions=RESERVATION_DECISIONS.name,
        dead_letters=DEAD_LETTERS.name,
    )
    service = AvailabilityService(
        settings=settings,
        app=app,
        codec=codec if codec is not None else AvroCodec(settings),
        tables=tables,
        topics=topics,
        observer=observer if observer is not None else PipelineObserver(),
    )
    # Imported here: the stage modules import this one for the types above.
    from app.service.availability import register_availability_agent
    from app.service.ingest import register_ingest_agents

    register_ingest_agents(service)
    register_availability_agent(service)
    return service


def create_app(settings: Settings, bootstrap_servers: str | None = None) -> faust.App:
    return build_service(settings, bootstrap_servers).app


class BatchSender:
    """Sends a batch's records without awaiting each one, then waits for all acknowledgements at once.

    `app.producer.send` returns as soon as the record is in the producer's buffer; awaiting per record would cost
    a broker round trip per event. `acks()` raises the first send error, which crashes the agent before its batch
    is acknowledged: the batch is then redelivered, never half lost."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._pending: list = []

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._pending.append(await self._app.producer.send(topic, key, value, partition, None, headers))

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def acks(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)


def batch_positions(events: list) -> str:
    """`topic[partition]@first-last` for every partition of a micro-batch, for log lines."""
    spans: dict[tuple[str, int], list[int]] = {}
    for event in events:
        message = event.message
        span = spans.setdefault((message.topic, message.partition), [message.offset, message.offset])
        span[0], span[1] = min(span[0], message.offset), max(span[1], message.offset)
    return ", ".join(f"{topic}[{partition}]@{low}-{high}" for (topic, partition), (low, high) in sorted(spans.items()))


@contextmanager
def end_worker_on_unexpected_error(stage: str, events: list) -> Iterator[None]:
    """Crash-only: an unexpected error in a batch ends the worker process.

    Faust would otherwise restart the agent past the failed batch, whose offsets then stay unacknowledged: the
    committed offset stops advancing and the batch is applied only after some later restart, out of order with
    what came after it. Ending the process (as a kill -9 would, which the delivery design tolerates) makes the
    supervisor's restart redeliver the batch at once and in order. Expected bad input never gets here: it is
    dead-lettered by the stages."""
    try:
        yield
    except Exception:
        logger.critical(
            "%s failed on the batch %s; ending the worker (exit %d) so that a restart redelivers it",
            stage, batch_positions(events), EXIT_AGENT_CRASHED, exc_info=True,
        )
        logging.shutdown()
        os._exit(EXIT_AGENT_CRASHED)
