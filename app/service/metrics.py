"""Prometheus metrics of one worker: a PipelineObserver that counts what the stages report, plus gauges of
consumer lag and table recovery that are refreshed from the Faust app when `/metrics` is scraped.

    metrics = ServiceMetrics()
    service = build_service(settings, bootstrap_servers, observer=metrics)
    register_web(service)          # serves metrics.exposition() at /metrics

Each ServiceMetrics owns its CollectorRegistry (never the process-wide default), so several services in one
process, and tests, never share or clash over counters. Metric names are listed in docs/OPERATIONS.md.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from app.service.memory import memory_parts, open_databases
from app.service.readiness import worker_readiness
from app.service.runtime import PipelineObserver
from app.wire.topics import AVAILABILITY_TOPIC_PREFIX

if TYPE_CHECKING:
    from app.service.runtime import AvailabilityService

METRIC_PREFIX = "availability"
# Ledger append -> publish: a few ms with micro-batches on a quiet stream, seconds under backlog or recovery.
LATENCY_BUCKETS_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# The event loop's lateness: about 1 ms idle, tens of ms while the stage applies ledger records.
LOOP_LAG_BUCKETS_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class RecoveryProgress:
    """What a worker knows of its table recovery: remaining changelog records per (table, partition) and flags."""

    remaining: Mapping[tuple[str, int], int]
    in_progress: bool
    completed_once: bool
    active_partitions: int
    standby_partitions: int


def consumer_lag(
    positions: Mapping[tuple[str, int], int | None], highwaters: Mapping[tuple[str, int], int | None]
) -> dict[tuple[str, int], int]:
    """Records between the next offset to read and the high watermark, per (topic, partition), never negative.

    `positions` holds the last offset read (None: nothing read yet). Partitions with no known high watermark are
    left out rather than reported as 0, so a dashboard never shows a healthy-looking lag it does not know."""
    lag: dict[tuple[str, int], int] = {}
    for tp, highwater in highwaters.items():
        if highwater is None or highwater < 0:
            continue
        read = positions.get(tp)
        next_offset = 0 if read is None else read + 1
        lag[tp] = max(0, highwater - next_offset)
    return lag


def channel_of_topic(topic: str) -> str | None:
    """`availability.<channel>` -> channel; None for any other topic."""
    return topic[len(AVAILABILITY_TOPIC_PREFIX) :] if topic.startswith(AVAILABILITY_TOPIC_PREFIX) else None


class IngestMetrics(PipelineObserver):
    """The ingest stage's counters: part of every worker's ServiceMetrics, and all that the separate ingest process
    serves (`availability ingest --metrics-port`). Hooks may be called from the ingest thread (app.service.
    ingest_thread): prometheus_client's counters are thread-safe."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r, p = self.registry, METRIC_PREFIX
        self.events_ingested = Counter(
            f"{p}_events_ingested", "Source events appended to the ledger, by source topic and event type",
            ["source_topic", "event_type"], registry=r,
        )
        self.dead_letters = Counter(
            f"{p}_dead_letters", "Records sent to the dead-letter topic, by stage, source topic and reason code",
            ["stage", "source_topic", "reason"], registry=r,
        )

    def ingested(self, source_topic: str, event_type: str, count: int = 1) -> None:
        self.events_ingested.labels(source_topic, event_type).inc(count)

    def dead_lettered(self, stage: str, source_topic: str, reason: str) -> None:
        self.dead_letters.labels(stage, source_topic, reason).inc()


class ServiceMetrics(IngestMetrics):
    """Counters fed by the stages' hooks; lag and recovery gauges filled by `refresh(service)` on each scrape.

    Hooks are called on the event loop for every record, so each is a dictionary lookup and an increment."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r, p = self.registry, METRIC_PREFIX
        self.rejections = Counter(
            f"{p}_rejections", "Ledger events the engine rejected (each is also dead-lettered), by reason code",
            ["reason"], registry=r,
        )
        self.reservation_decisions = Counter(
            f"{p}_reservation_decisions",
            "Reservation decisions published, by channel and outcome (ACCEPTED, REJECTED, RELEASED, ...)",
            ["channel", "outcome"], registry=r,
        )
        self.reservation_refusals = Counter(
            f"{p}_reservation_refusals", "REJECTED reservation decisions, by channel and reason", ["channel", "reason"],
            registry=r,
        )
        self.oversell_exposure = Gauge(
            f"{p}_oversell_exposure_units",
            "Units held by reservations beyond the sellable units at their location, over the SKU states this worker "
            "holds in memory. The service never reserves beyond what it shows; only facts reported after a "
            "reservation (a walk-in sale, shrink) can make this non-zero, and a fulfilment there is refused "
            "INSUFFICIENT_ON_HAND", registry=r,
        )
        self.memory = Gauge(
            f"{p}_memory_bytes",
            "Where the worker's memory is, by part: resident (the whole resident set), malloc_in_use and malloc_free "
            "(the C allocator's heap, handed out and held free), rocksdb_memtables, rocksdb_block_cache and "
            "rocksdb_table_readers (parts of malloc_in_use, summed over the tables' databases). Python's small "
            "objects, the decoded SKU states among them, are in the resident set beyond the allocator's heap",
            ["part"], registry=r,
        )
        self.cached_sku_states = Gauge(
            f"{p}_cached_sku_states",
            "SKUs whose decoded state the availability stage keeps in memory (at most AVAILABILITY_STATE_CACHE_SKUS "
            "per ledger partition after a write-back)", registry=r,
        )
        self.inventory_exceptions = Counter(
            f"{p}_inventory_exceptions",
            "InventoryException records published on inventory-exceptions, by kind (NEGATIVE_STOCK, UNKNOWN_LOCATION, "
            "STALE_FEED, ...)", ["kind"], registry=r,
        )
        self.reconciliation_drifts = Counter(
            f"{p}_reconciliation_drifts",
            "RECONCILIATION_DRIFT records on inventory-exceptions (written by `availability reconcile`), by bucket, "
            "counted by the workers that read that topic's partitions", ["bucket"], registry=r,
        )
        self.reconciliation_drift_units = Counter(
            f"{p}_reconciliation_drift_units",
            "Units of drift (absolute: system of record minus service, either way) in those records, by bucket",
            ["bucket"], registry=r,
        )
        self.publications = Counter(
            f"{p}_publications", "ChannelAvailability records published, by channel", ["channel"], registry=r,
        )
        self.ledger_events_applied = Counter(
            f"{p}_ledger_events_applied", "Ledger events applied by the availability stage, by ledger partition",
            ["partition"], registry=r,
        )
        self.skipped_records = Counter(
            f"{p}_skipped_records_read",
            "Records the stream consumer skipped (a hole in a partition's offsets after a rebalance) that the stage "
            "read back itself and applied in order, by topic",
            ["topic"], registry=r,
        )
        self.producer_wait = Counter(
            f"{p}_producer_wait_seconds",
            "Seconds the availability stage waited on its producer, by what for: `queue` (room in a partition's "
            "queue, which holds one batch until a produce request takes it), `acknowledgement` (the broker's, awaited "
            "before a write-back and at the end of a micro-batch). Near 1 s per second: the broker is the limit",
            ["wait"], registry=r,
        )
        self.event_loop_lag = Histogram(
            f"{p}_event_loop_lag_seconds",
            "How much later than due the worker's event loop woke a probe that sleeps 0.1 s at a time: what a "
            "heartbeat, a fetch or an HTTP request waited for the loop (a ledger record being applied, a write-back)",
            buckets=LOOP_LAG_BUCKETS_SECONDS, registry=r,
        )
        self.end_to_end_latency = Histogram(
            f"{p}_end_to_end_latency_seconds",
            "Wall time from ledger append (the entry's ingest_time) to its batch's records handed to the producer",
            buckets=LATENCY_BUCKETS_SECONDS, registry=r,
        )
        self.consumer_lag = Gauge(
            f"{p}_consumer_lag_records",
            "Records not yet read per assigned source/ledger partition (high watermark - next offset). "
            "APPROXIMATE on the embedded Tansu broker, whose high watermark is the start of the partition's last "
            "batch: it can read 0 while a batch is unread. For dashboards only, never a completion signal.",
            ["topic", "partition"], registry=r,
        )
        self.recovery_remaining = Gauge(
            f"{p}_recovery_remaining_records",
            "Changelog records still to restore per active table partition (0 when recovered)",
            ["table", "partition"], registry=r,
        )
        self.recovery_in_progress = Gauge(
            f"{p}_recovery_in_progress", "1 while the worker restores tables from their changelogs", registry=r,
        )
        self.assigned_partitions = Gauge(
            f"{p}_assigned_table_partitions", "Table changelog partitions assigned to this worker, by role",
            ["role"], registry=r,
        )
        self.silent_feeds = Gauge(
            f"{p}_silent_feeds",
            "1 per feed and location whose silence past its policy rule has a fallback applied (docs/RULES.md, "
            "section 12), as the ledger partitions this worker owns hold it",
            ["feed", "location"], registry=r,
        )
        self.ready = Gauge(
            f"{p}_ready", "1 when partitions are assigned and recovery is done (same rule as /ready)", registry=r,
        )

    # -- PipelineObserver hooks -------------------------------------------------------------------------------

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def skipped_records_read(self, topic: str, count: int) -> None:
        self.skipped_records.labels(topic).inc(count)

    def producer_waited(self, queue_seconds: float, acknowledgement_seconds: float) -> None:
        self.producer_wait.labels("queue").inc(queue_seconds)
        self.producer_wait.labels("acknowledgement").inc(acknowledgement_seconds)

    def event_loop_lagged(self, seconds: float) -> None:
        self.event_loop_lag.observe(seconds)

    def published(self, topic: str, count: int = 1) -> None:
        channel = channel_of_topic(topic)
        if channel is not None:
            self.publications.labels(channel).inc(count)

    def reservation_decided(self, channel: str, outcome: str, reason: str | None = None) -> None:
        self.reservation_decisions.labels(channel, outcome).inc()
        if reason is not None:
            self.reservation_refusals.labels(channel, reason).inc()

    def inventory_exception(self, kind: str) -> None:
        self.inventory_exceptions.labels(kind).inc()

    def reconciliation_drift(self, bucket: str, units: int) -> None:
        self.reconciliation_drifts.labels(bucket).inc()
        self.reconciliation_drift_units.labels(bucket).inc(abs(units))

    def batch_applied(self, partition: int, events: int, ingest_times_ms: dict[int, int],
                      published_at_ms: int) -> None:
        """`ingest_times_ms`: ingest time -> events of the batch with it (a ledger record's entries share one)."""
        self.ledger_events_applied.labels(str(partition)).inc(events)
        for ingest_time, count in ingest_times_ms.items():
            # Clocks of the ingesting and the publishing worker may differ slightly: never a negative latency.
            observe_many(self.end_to_end_latency, max(0, published_at_ms - ingest_time) / 1000.0, count)

    # -- gauges -----------------------------------------------------------------------------------------------

    def set_consumer_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        self.consumer_lag.clear()  # revoked partitions disappear instead of freezing at their last value
        for (topic, partition), records in lag.items():
            self.consumer_lag.labels(topic, str(partition)).set(records)

    def set_recovery(self, progress: RecoveryProgress, ready: bool) -> None:
        self.recovery_remaining.clear()
        for (table, partition), records in progress.remaining.items():
            self.recovery_remaining.labels(table, str(partition)).set(max(0, records))
        self.recovery_in_progress.set(1 if progress.in_progress else 0)
        self.assigned_partitions.labels("active").set(progress.active_partitions)
        self.assigned_partitions.labels("standby").set(progress.standby_partitions)
        self.ready.set(1 if ready else 0)

    def refresh(self, service: AvailabilityService) -> None:
        """Read lag and recovery from the running app. Never raises: a scrape must not fail because the
        consumer is between rebalances."""
        try:
            self.set_consumer_lag(read_consumer_lag(service))
        except Exception:  # noqa: BLE001 - the consumer may be (re)starting; keep the last good values
            pass
        try:
            self.set_recovery(read_recovery_progress(service.app), worker_readiness(service.app).ready)
        except Exception:  # noqa: BLE001 - same: recovery state is rebuilt during a rebalance
            pass
        self.set_silent_feeds(read_silent_feeds(service))
        self.oversell_exposure.set(read_oversell_exposure(service))
        databases = open_databases((service.tables.sku_state, service.tables.partition_state))
        for part, value in memory_parts(databases).items():
            self.memory.labels(part).set(value)
        self.cached_sku_states.set(read_cached_sku_states(service))

    def set_silent_feeds(self, silent: set[tuple[str, str]]) -> None:
        self.silent_feeds.clear()
        for feed, location in silent:
            self.silent_feeds.labels(feed, location).set(1)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """`count` observations of `amount`: one bucket increment instead of `count` (prometheus_client's buckets are
    per bucket internally, made cumulative at exposition); a plain loop if the client's internals differ."""
    buckets, upper_bounds, total = (getattr(histogram, name, None) for name in ("_buckets", "_upper_bounds", "_sum"))
    if buckets is None or upper_bounds is None or total is None:
        for _ in range(count):
            histogram.observe(amount)
        return
    total.inc(amount * count)
    buckets[bisect.bisect_left(upper_bounds, amount)].inc(count)


def live_stores(service: AvailabilityService) -> list:
    """The availability stage's partition stores this worker holds (none where it does not run the stage)."""
    processor = service.live_states
    if processor is None:
        return []
    stores = (processor.live_store(partition) for partition in range(service.settings.partitions))
    return [store for store in stores if store is not None]


def read_silent_feeds(service: AvailabilityService) -> set[tuple[str, str]]:
    """(feed, location) pairs silent in any ledger partition whose live state this worker holds."""
    silent: set[tuple[str, str]] = set()
    for store in live_stores(service):
        loaded, state = store.cached_partition_state()
        if loaded and state is not None:
            silent.update(state.silent)
    return silent


def read_oversell_exposure(service: AvailabilityService) -> int:
    """Units reserved beyond the sellable units at their location, over the SKU states held in memory. Each store
    keeps its sum up to date, walking only the SKUs changed since the last scrape (tables.store)."""
    return sum(store.oversell_exposure() for store in live_stores(service))


def read_cached_sku_states(service: AvailabilityService) -> int:
    """Decoded SKU states held by the availability stage's stores, over the partitions this worker holds."""
    return sum(store.cached_sku_states for store in live_stores(service))


def agent_topic_names(service: AvailabilityService) -> set[str]:
    """Topics of Faust's consumer whose lag is reported: the one the availability agent reads (the ledger), not
    table changelogs. Source topics are read by the ingest stage's own consumer (`service.source_lag`)."""
    return {service.topics.ledger.get_topic_name()}


def read_consumer_lag(service: AvailabilityService) -> dict[tuple[str, int], int]:
    """The ledger partitions of Faust's consumer, and the source partitions of the worker's ingest consumer where
    this worker runs the ingest stage (`all`)."""
    lag = read_agent_consumer_lag(service)
    if service.source_lag is not None:
        lag.update(service.source_lag())
    return lag


def read_agent_consumer_lag(service: AvailabilityService) -> dict[tuple[str, int], int]:
    consumer = service.app.consumer
    topics = agent_topic_names(service)
    assigned = [tp for tp in consumer.assignment() if tp.topic in topics]
    read_offsets = consumer._read_offset  # Faust keeps no public accessor; last offset handed to a stream per TP
    committed = consumer._committed_offset
    positions: dict[tuple[str, int], int | None] = {}
    highwaters: dict[tuple[str, int], int | None] = {}
    for tp in assigned:
        read = read_offsets.get(tp)
        if read is None and committed.get(tp) is not None:
            read = committed[tp] - 1  # committed = next offset to read
        positions[(tp.topic, tp.partition)] = read
        highwaters[(tp.topic, tp.partition)] = consumer.highwater(tp)
    return consumer_lag(positions, highwaters)


def read_recovery_progress(app) -> RecoveryProgress:
    recovery = app.tables.recovery
    remaining = {
        (recovery.tp_to_table[tp].name, tp.partition): records
        for tp, records in recovery.active_remaining().items()
        if tp in recovery.tp_to_table
    }
    # Assigned partitions with nothing left to read are reported as 0, so every active partition has a series;
    # while highwaters are still being fetched they read 0 too, which is why `in_progress` is exported beside them.
    for tp in recovery.active_tps:
        table = recovery.tp_to_table.get(tp)
        if table is not None:
            remaining.setdefault((table.name, tp.partition), 0)
    return RecoveryProgress(
        remaining=remaining,
        in_progress=bool(getattr(recovery, "in_recovery", False)),
        completed_once=recovery.completed.is_set(),
        active_partitions=len(recovery.active_tps),
        standby_partitions=len(recovery.standby_tps),
    )

