"""The app factory: one Faust app per Settings, with its topics, tables and agents wired explicitly.

    service = build_service(settings, bootstrap_servers)   # everything, for tools and tests
    app = create_app(settings, bootstrap_servers)          # just the faust.App (what a worker runs)

Nothing here reads the environment or opens a connection: the worker (app.service.worker) starts the app. The
lookup API and the metrics attach to the AvailabilityService (its tables, codec and `observer`) in their own
modules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import faust
from faust.sensors import Monitor

from app.kafka_config import faust_broker_credentials
from app.serialization import AvroCodec
from app.service.decision_waiters import DecisionWaiters
from app.service.freeze_guard import check_not_frozen
from app.service.transport import WorkerApp
from app.settings import Settings
from app.topics import DEAD_LETTERS, LEDGER, RESERVATION_DECISIONS, SOURCE_TOPICS, availability_topic, murmur2
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

    def reservation_decided(self, channel: str, outcome: str, reason: str | None = None) -> None: ...

    def inventory_exception(self, kind: str) -> None: ...

    def batch_applied(self, partition: int, events: int, ingest_times_ms: list[int], published_at_ms: int) -> None: ...

    def skipped_records_read(self, topic: str, count: int) -> None: ...


class QuietMonitor(Monitor):
    """Faust's Monitor keeps statistics per message, stream event, table access and send (timestamps, deques,
    counters) that nothing here reads: the service's metrics come from PipelineObserver. Those per-record hooks
    cost more than the rules themselves at peak rates, so they do nothing; commits, rebalances and assignment are
    still recorded."""

    def on_message_in(self, tp, offset, message) -> None: ...

    def on_stream_event_in(self, tp, offset, stream, event) -> None: ...

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None: ...

    def on_message_out(self, tp, offset, message) -> None: ...

    def on_table_get(self, table, key) -> None: ...

    def on_table_set(self, table, key, value) -> None: ...

    def on_send_initiated(self, producer, topic, message, keysize, valsize) -> None: ...

    def on_send_completed(self, producer, state, metadata) -> None: ...


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
    # HTTP requests waiting for their reservation command's decision (app.service.decision_waiters)
    decision_waiters: DecisionWaiters = field(default_factory=DecisionWaiters)
    bootstrap_servers: str | None = None  # for clients of the service's own beside Faust's
    # The availability stage's processor (app.service.availability.LedgerBatchProcessor) where this worker runs it:
    # lookups read its live states first, which may be ahead of the tables (deferred write-back), never behind.
    live_states: object | None = None


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
    app = WorkerApp(
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
        Monitor=QuietMonitor,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        # Faust's /table/<table>/<key> would serve raw table values (every SKU's state) to anyone: off. Lookups
        # (app.service.web) route with the partition assignor, not through it.
        web_tables_enabled=False,
        broker_credentials=faust_broker_credentials(settings),
        # False: Faust creates no topic (changelogs, leader topic); `availability topics create` made them and the
        # worker checked that they exist before starting (app.service.worker).
        topic_allow_declare=settings.create_topics,
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
        bootstrap_servers=servers,
    )
    # Imported here: the stage modules import this one for the types above.
    from app.service.availability import register_availability_agent
    from app.service.ingest import register_clock_ticks, register_ingest_agents
    from app.service.recovery_watchdog import register_recovery_watchdog

    if settings.stages == "all":  # "availability": separate ingest processes feed the ledger (ingest_worker)
        register_ingest_agents(service)
    register_clock_ticks(service)
    register_availability_agent(service)
    register_recovery_watchdog(service)
    return service


def create_app(settings: Settings, bootstrap_servers: str | None = None) -> faust.App:
    return build_service(settings, bootstrap_servers).app


class BatchSender:
    """Sends a micro-batch's records as Kafka record batches, one per topic partition, then awaits all their
    acknowledgements at once.

    Faust's `producer.send` costs tens of microseconds of Python per record (signals, partitioner, one future per
    record); the service sends several records per event, so per-record sends were its largest cost. Here records
    are appended to aiokafka `BatchBuilder`s (one open per partition, submitted when full and at `acks()`), and
    only the batch has a future. Order per partition is the order of `send` calls, as with per-record sends.
    Keyed records go to Kafka's default partition (murmur2 of the key, as every Kafka client computes it), so
    where records land does not change. Keyless records take the per-record path. `acks()` raises the first send error, which crashes the agent before its batch is
    acknowledged: the batch is then redelivered, never half lost."""

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._open: dict[tuple[str, int], object] = {}  # (topic, partition) -> BatchBuilder being filled
        self._partition_counts: dict[str, int] = {}
        self._pending: list = []
        self._records = 0

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._records += 1
        if partition is None and key is None:
            self._pending.append(await self._app.producer.send(topic, key, value, partition, None, headers))
            return
        if partition is None:
            partition = await self._default_partition(topic, key)
        where = (topic, partition)
        batch = self._open.get(where)
        if batch is None:
            batch = self._open[where] = self._aiokafka_producer().create_batch()
        if batch.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
            await self._submit(where, batch)  # full: send it, start the next one
            batch = self._open[where] = self._aiokafka_producer().create_batch()
            if batch.append(timestamp=None, key=key, value=value, headers=headers or []) is None:
                raise ValueError(f"a record for {topic} is larger than the producer's max batch size")

    @property
    def pending(self) -> int:
        """Records sent since the last `acks()`."""
        return self._records

    async def acks(self) -> None:
        check_not_frozen()  # a worker frozen past its session submits nothing more (app.service.freeze_guard)
        for where, batch in list(self._open.items()):
            await self._submit(where, batch)
        self._open.clear()
        pending, self._pending, self._records = self._pending, [], 0
        if pending:
            await asyncio.gather(*pending)

    async def _submit(self, where: tuple[str, int], batch) -> None:
        topic, partition = where
        self._pending.append(await self._aiokafka_producer().send_batch(batch, topic, partition=partition))

    async def _default_partition(self, topic: str, key: bytes) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = len(await self._aiokafka_producer().partitions_for(topic))
        return default_partition(key, count)

    def _aiokafka_producer(self):
        return self._app.producer._ensure_producer()


@functools.lru_cache(maxsize=200_000)
def default_partition(key: bytes, partition_count: int) -> int:
    """Kafka's default partitioner for a keyed record (cached: hot SKUs repeat, murmur2 is pure Python)."""
    return (murmur2(key) & 0x7FFFFFFF) % partition_count


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
