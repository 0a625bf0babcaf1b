"""The app factory: one Faust app per Settings, with its topics, tables and agents wired explicitly.

    service = build_service(settings, bootstrap_servers)   # everything, for tools and tests
    app = create_app(settings, bootstrap_servers)          # just the faust.App (what a worker runs)

Nothing here reads the environment or opens a connection: the worker (app.service.worker) starts the app. The
lookup API and the metrics attach to the AvailabilityService (its tables, codec and `observer`) in their own
modules.
"""

from __future__ import annotations

from pathlib import Path

import faust

from app.kafka.client_config import faust_broker_credentials
from app.kafka.transport import WorkerApp
from app.service.availability import register_availability_agent
from app.service.drift_counter import register_drift_counter
from app.service.ingest import register_clock_ticks
from app.service.loop_lag import register_event_loop_lag_probe
from app.service.recovery_watchdog import register_recovery_watchdog
from app.service.runtime import AvailabilityService, PipelineObserver, QuietMonitor, ServiceTopics
from app.settings import Settings
from app.wire.serialization import AvroCodec
from app.wire.topics import DEAD_LETTERS, INVENTORY_EXCEPTIONS, LEDGER, RESERVATION_DECISIONS, availability_topic
from tables import declare_tables

# Group membership on the embedded broker: Tansu holds a (re)join for about half the session timeout, so Faust's
# default of 60 s costs ~30 s per worker start. 6 s joins in ~3 s; a heartbeat every 0.5 s keeps a busy worker
# well inside it (12 heartbeats per session).
BROKER_SESSION_TIMEOUT_SECONDS = 6.0
BROKER_HEARTBEAT_INTERVAL_SECONDS = 0.5
BROKER_REBALANCE_TIMEOUT_SECONDS = 10.0
PRODUCER_LINGER_SECONDS = 0.002  # lets a batch's sends share produce requests without delaying a quiet stream
# aiokafka queues one batch per topic partition and keeps one produce request in flight per broker, so a partition
# moves at most one batch per round trip. At its default of 16 KiB, a write-back of a few thousand SKU states (1-2 KB
# each) took dozens of round trips per changelog partition: on a busy broker, half of the availability stage's time
# in the live run (docs/PERFORMANCE.md). Half of the 1 MiB that Kafka, and most Kafka-compatible brokers, accept by
# default (`message.max.bytes`).
PRODUCER_MAX_BATCH_BYTES = 512 * 1024
# Records Faust queues ahead of each stream of the worker before it pauses fetching; the ledger agent's is the queue
# that fills. Faust's default, 4,096, is sized for small messages; a ledger record holds up to
# `ledger_batch_max_entries` events (about 10 KB on the peak benchmark's mix), so a backlog kept 30-40 MiB of records
# queued. 256 such records are still seconds of work ahead (docs/PERFORMANCE.md, "Where a worker's memory is").
LEDGER_QUEUE_RECORDS = 256


def faust_datadir(settings: Settings) -> Path:
    """Where this worker's RocksDB tables live. RocksDB locks each table directory, so two workers on one
    machine need two data dirs."""
    return Path(settings.data_dir) / "worker"


def _raw_topic(app: faust.App, name: str) -> faust.TopicT:
    # internal=False: the topics are created from the registry (app.kafka.admin), never by Faust with its defaults.
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
        raise ValueError("no bootstrap servers: start the embedded broker first (app.kafka.broker.bootstrap_servers_for)")
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
        stream_buffer_maxsize=LEDGER_QUEUE_RECORDS,
        # Tansu reports a partition's high watermark as the start of its last batch, so a persisted offset can be
        # "beyond" it after a crash. That is not an inconsistency here: see app.service.availability.
        recovery_consistency_check=False,
        producer_linger=PRODUCER_LINGER_SECONDS,
        producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
        Monitor=QuietMonitor,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        # Faust's /table/<table>/<key> would serve raw table values (every SKU's state) to anyone: off. Lookups
        # (app.http.web) route with the partition assignor, not through it.
        web_tables_enabled=False,
        broker_credentials=faust_broker_credentials(settings),
        # False: Faust creates no topic (changelogs, leader topic); `availability topics create` made them and the
        # worker checked that they exist before starting (app.service.worker).
        topic_allow_declare=settings.create_topics,
    )
    tables = declare_tables(app, settings)
    topics = ServiceTopics(
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
    register_clock_ticks(service)
    register_availability_agent(service)
    register_drift_counter(service, _raw_topic(app, INVENTORY_EXCEPTIONS.name))
    register_recovery_watchdog(service)
    register_event_loop_lag_probe(service)
    return service


def create_app(settings: Settings, bootstrap_servers: str | None = None) -> faust.App:
    return build_service(settings, bootstrap_servers).app
