"""The ingest stage on confluent-kafka: `IngestProcess`, one consumer and one producer around `ingest_micro_batch`.

The ingest stage is stateless (no tables), so it does not need Faust, whose per-message machinery costs ~80-110 us
per source record; librdkafka does the per-message work in C. Two hosts run it: the worker of the `all` topology, on
a thread of its own (app.service.ingest_thread), and the separate ingest process of the `split` topology
(app.service.ingest_worker, `availability ingest`), whose workers run with AVAILABILITY_STAGES=availability.

    consumer group `<app_id>-ingest` on every source topic (auto commit off, from the earliest offset)
    loop: consume up to `batch_size` records within `batch_timeout_seconds`
          -> ingest_micro_batch -> produce every record (ledger: explicit partition; dead letters: by key)
          -> wait until all are delivered (any delivery error: IngestFailed, nothing committed)
          -> commit the batch's offsets synchronously

At-least-once: a crash re-ingests the uncommitted batch, and duplicates on the ledger are harmless (every ledger entry
names its source position, by which the engine recognises a repeat). Per-partition order survives retries with one
request in flight per connection (idempotence is not available on the embedded broker). Crash-only: the hosts end
their process on any exception of `run` (exit 70), without committing.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from app.errors import ServiceError
from app.kafka.client_config import client_config
from app.kafka.producing import produce_or_wait
from app.service.heap_trim import HeapTrimmer
from app.service.ingest import (
    FeedActivityReporter,
    IngestedBatch,
    LedgerWriter,
    SourceMessage,
    ingest_micro_batch,
    new_source_message,
    report_ingested,
)
from app.service.runtime import PipelineObserver
from app.settings import Settings
from app.wire.ledger import LedgerBatcher
from app.wire.serialization import AvroCodec
from app.wire.topics import LEDGER, SOURCE_TOPICS

logger = logging.getLogger(__name__)

INGEST_GROUP_SUFFIX = "-ingest"
EXIT_INGEST_FAILED = 70  # as a worker whose agent crashed (EX_SOFTWARE): nothing committed, a restart re-ingests
PROGRESS_INTERVAL_SECONDS = 10.0
# As the Faust worker's group settings (app.service.app): Tansu holds a (re)join for about half the session timeout.
SESSION_TIMEOUT_MS = 6_000
HEARTBEAT_INTERVAL_MS = 500
# How long a record may wait for its acknowledgement (retries included) before the batch fails and the process
# exits for its supervisor to restart it. Below max.poll.interval.ms (300 s), so the group keeps the process.
DELIVERY_TIMEOUT_MS = 120_000
# Longest a closing consumer waits for a rebalance it is part of to end (IngestProcess._finish_rebalance): a
# join takes about half the session timeout on the embedded broker.
REBALANCE_FINISH_SECONDS = 2 * SESSION_TIMEOUT_MS / 1000
# Source records fetched ahead of the loop, and the largest fetch response (both bound the consumer's memory).
PREFETCH_KBYTES = 16 * 1024
FETCH_MAX_BYTES = 8 * 1024 * 1024
# How often librdkafka reports the consumer's lag per source partition (its statistics; `source_lag()`).
LAG_STATISTICS_INTERVAL_MS = 5_000

# A commit refused because the group moved on: the batch is delivered, and its next owner re-ingests it.
_LOST_OWNERSHIP = frozenset({
    KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
})
# Errors no retry cures: stop with the broker's message rather than log it forever.
_PERMANENT = frozenset({
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError._AUTHENTICATION,
    KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL, KafkaError._FENCED, KafkaError.FENCED_INSTANCE_ID,
})


class IngestFailed(ServiceError):
    """The current batch could not be ingested (a record not delivered, a fatal client error). Nothing of it was
    committed: restart the process (the supervisor does) and it ingests the batch again."""


def ingest_group_id(settings: Settings) -> str:
    """The ingest consumers' group (the workers' ingest threads in `all`, the ingest processes in `split`): not the
    workers' Faust group (`app_id`), whose members own ledger partitions."""
    return f"{settings.app_id}{INGEST_GROUP_SUFFIX}"


def source_topic_names() -> list[str]:
    return [spec.name for spec in SOURCE_TOPICS]


def batch_positions(messages: list[SourceMessage]) -> str:
    """`topic[partition]@first-last` for every partition of a batch, for log lines."""
    spans: dict[tuple[str, int], list[int]] = {}
    for message in messages:
        span = spans.setdefault((message.topic, message.partition), [message.offset, message.offset])
        span[0], span[1] = min(span[0], message.offset), max(span[1], message.offset)
    return ", ".join(f"{topic}[{partition}]@{low}-{high}" for (topic, partition), (low, high) in sorted(spans.items()))


class IngestCounters(PipelineObserver):
    """What the ingest stage reports: totals for its progress line, each also passed on to `observer` (the worker's
    ServiceMetrics, or the ingest process's IngestMetrics: `availability_events_ingested_total`,
    `availability_dead_letters_total`). Called on the ingest thread; prometheus_client's counters are thread-safe."""

    def __init__(self, observer: PipelineObserver | None = None) -> None:
        self.records = 0
        self.events = 0
        self.dead_letters = 0
        self._observer = observer if observer is not None else PipelineObserver()

    def ingested(self, source_topic: str, event_type: str, count: int = 1) -> None:
        self.events += count
        self._observer.ingested(source_topic, event_type, count)

    def dead_lettered(self, stage: str, source_topic: str, reason: str) -> None:
        self.dead_letters += 1
        self._observer.dead_lettered(stage, source_topic, reason)


class IngestProcess:
    """One consumer and one producer; `run(should_stop)` ingests batch after batch until `should_stop()` holds
    between two batches. `close()` leaves the group and flushes the producer."""

    def __init__(self, settings: Settings, bootstrap_servers: str, *, codec: AvroCodec | None = None,
                 counters: IngestCounters | None = None) -> None:
        self.settings = settings
        self.codec = codec if codec is not None else AvroCodec(settings)
        self.counters = counters if counters is not None else IngestCounters()
        self.writer = LedgerWriter(self.codec, settings.partitions, settings.max_source_record_bytes,
                                   settings.engine_limits.max_event_time_skew_ms)
        self.batcher = LedgerBatcher(self.codec.serde(LEDGER), settings.ledger_batch_max_entries)
        self.feeds = FeedActivityReporter()
        self._trim_heap = HeapTrimmer()
        self.group_id = ingest_group_id(settings)
        self._fatal: str | None = None
        self._delivery_errors: list[str] = []
        self._failed_deliveries = 0
        self._last_warning: dict[int, float] = {}
        self._assigned: frozenset[tuple[str, int]] = frozenset()
        self._rebalancing = False
        self._source_lag: dict[tuple[str, int], int] = {}
        librdkafka_log = _quiet_librdkafka_logger()
        self.consumer = Consumer(client_config(settings, bootstrap_servers, **{
            "group.id": self.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
            "fetch.wait.max.ms": settings.fetch_max_wait_ms,
            # librdkafka prefetches up to 64 MiB by default, and a fetch response may add 50 MB more: a worker's
            # memory during a source backlog. A few batches ahead is all the loop can use.
            "queued.max.messages.kbytes": PREFETCH_KBYTES,
            "fetch.max.bytes": FETCH_MAX_BYTES,
            "statistics.interval.ms": LAG_STATISTICS_INTERVAL_MS,
            "stats_cb": self._on_statistics,
            "error_cb": self._on_client_error,
            "logger": librdkafka_log,
        }))
        self.producer = Producer(client_config(settings, bootstrap_servers, **{
            # Kafka's default partitioner (murmur2 of the key), as the worker's producer uses for dead letters.
            "partitioner": "murmur2_random",
            "acks": "all",
            # Per-partition order must survive retries: one request in flight per connection keeps it without
            # idempotence (which the embedded broker does not offer).
            "max.in.flight.requests.per.connection": 1,
            "enable.idempotence": False,
            "linger.ms": 5,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1024 * 1024,
            "message.timeout.ms": DELIVERY_TIMEOUT_MS,
            "on_delivery": self._on_delivery,
            "delivery.report.only.error": True,  # a callback per failed record only
            "error_cb": self._on_client_error,
            "logger": librdkafka_log,
        }))

    # -- the loop ---------------------------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool]) -> None:
        settings = self.settings
        topics = source_topic_names()
        logger.info("ingest process: group %s reading %s; writing %s (%d partitions)", self.group_id,
                    ", ".join(topics), LEDGER.name, settings.partitions)
        self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        report_at = time.monotonic() + PROGRESS_INTERVAL_SECONDS
        reported = (0, 0, 0, time.monotonic())
        while not should_stop():
            messages = self.consumer.consume(num_messages=settings.batch_size, timeout=settings.batch_timeout_seconds)
            self._raise_if_fatal()
            if messages:
                self.ingest(messages)
                self._trim_heap()  # the batch's decoded records are garbage now
            now = time.monotonic()
            if now >= report_at:
                reported = self._report_progress(reported, now)
                report_at = now + PROGRESS_INTERVAL_SECONDS

    def ingest(self, messages: list) -> IngestedBatch | None:
        """One consumed batch: ingest, deliver, then commit. Raises IngestFailed before committing anything if a
        record is not delivered."""
        sources: list[SourceMessage] = []
        next_offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_message_error(error)
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            sources.append(
                new_source_message(topic, partition, offset, message.key(), message.value(), message.headers())
            )
            next_offsets[(topic, partition)] = offset + 1  # a partition's records come in offset order
        if not sources:
            return None
        batch = ingest_micro_batch(sources, int(time.time() * 1000), self.writer, self.batcher, self.feeds)
        report_ingested(batch, self.counters)
        self._deliver(batch, sources)
        self._commit(next_offsets)
        self.counters.records += len(sources)
        return batch

    def source_lag(self) -> Mapping[tuple[str, int], int]:
        """Records not yet read per assigned source partition, as librdkafka last reported it (every
        LAG_STATISTICS_INTERVAL_MS): its high watermark minus the consumer's position, or its committed offset
        before the first record. Approximate on the embedded broker, as every high watermark there. Safe to call
        from any thread: it returns the last report, replaced whole."""
        return self._source_lag

    def close(self) -> None:
        try:
            self._finish_rebalance()
            self.consumer.close()  # leaves the group: the others take its partitions at once
        finally:
            remaining = self.producer.flush(30)
            if remaining:
                logger.warning("ingest process: %d records still undelivered at close", remaining)

    def _finish_rebalance(self) -> None:
        """Wait (at most REBALANCE_FINISH_SECONDS) for a rebalance this consumer is part of to end before it
        leaves. On the embedded broker a consumer closed while its JoinGroup was pending stays in the group as a
        member that never syncs, and no later consumer is assigned anything, for minutes (found by the zombie-worker
        chaos test; the rebalance timeout does not end it). Records read meanwhile are not ingested: nothing of
        them is committed, and the next owner reads them."""
        self.consumer.consume(num_messages=1, timeout=0)  # serves a revocation already queued
        deadline = time.monotonic() + REBALANCE_FINISH_SECONDS
        while self._rebalancing and time.monotonic() < deadline:
            self.consumer.consume(num_messages=1, timeout=0.1)
        if self._rebalancing:
            logger.warning("ingest process: leaving the group in the middle of a rebalance (it did not end "
                           "within %.0fs)", REBALANCE_FINISH_SECONDS)

    # -- delivery and commit ----------------------------------------------------------------------------------

    def _deliver(self, batch: IngestedBatch, sources: list[SourceMessage]) -> None:
        self._failed_deliveries, self._delivery_errors = 0, []
        for record in batch.records:
            produce_or_wait(self.producer, record.topic, record.value, record.key, partition=record.partition,
                            headers=record.headers, wait_seconds=0.1)
        while self.producer.flush(1.0) > 0:
            self._raise_if_fatal()
        self._raise_if_fatal()
        if self._failed_deliveries:
            raise IngestFailed(
                f"{self._failed_deliveries} of {len(batch.records)} records of the batch {batch_positions(sources)} "
                f"were not delivered (first: {'; '.join(self._delivery_errors)}); nothing of it is committed"
            )

    def _commit(self, next_offsets: dict[tuple[str, int], int]) -> None:
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in next_offsets.items()]
        try:
            committed = self.consumer.commit(offsets=offsets, asynchronous=False) or []
        except KafkaException as exception:
            error = exception.args[0] if exception.args else None
            if isinstance(error, KafkaError) and error.code() in _LOST_OWNERSHIP:
                logger.warning("ingest process: commit refused after a rebalance (%s); the batch was delivered and "
                               "its partitions' next owner ingests it again (harmless duplicates)", error.str())
                return
            raise IngestFailed(f"committing the batch failed: {error.str() if error else exception}") from None
        failed = [tp for tp in committed if tp.error is not None and tp.error.code() not in _LOST_OWNERSHIP]
        if failed:
            raise IngestFailed("committing the batch failed: " + ", ".join(
                f"{tp.topic}[{tp.partition}]: {tp.error.str()}" for tp in failed))

    # -- callbacks (served by consume, poll and flush, on this thread) -----------------------------------------

    def _on_delivery(self, error, message) -> None:
        if error is not None:
            self._failed_deliveries += 1
            if len(self._delivery_errors) < 3:
                self._delivery_errors.append(f"{message.topic()}[{message.partition()}]: {error.str()}")

    def _on_client_error(self, error: KafkaError) -> None:
        if error.fatal() or error.code() in _PERMANENT:
            self._fatal = self._fatal or error.str()
            return
        self._warn(error)

    def _on_message_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        self._on_client_error(error)
        self._raise_if_fatal()

    def _warn(self, error: KafkaError) -> None:
        # librdkafka reports a broker that is down every few ms; one line per kind of error per 30 s is enough.
        now = time.monotonic()
        if now - self._last_warning.get(error.code(), -1e9) >= 30.0:
            self._last_warning[error.code()] = now
            logger.warning("ingest process: Kafka: %s (retrying)", error.str())

    def _raise_if_fatal(self) -> None:
        if self._fatal is not None:
            raise IngestFailed(f"Kafka client error that no retry cures: {self._fatal}")

    def _on_statistics(self, statistics: str) -> None:
        assigned = self._assigned
        lag: dict[tuple[str, int], int] = {}
        for topic, of_topic in json.loads(statistics).get("topics", {}).items():
            for partition, of_partition in of_topic.get("partitions", {}).items():
                key = (topic, int(partition))
                records = of_partition.get("consumer_lag", -1)
                if key in assigned and records >= 0:  # -1: not known yet (no high watermark or position)
                    lag[key] = records
        self._source_lag = lag

    def _on_assign(self, consumer, partitions: list) -> None:
        self._rebalancing = False
        self._assigned = self._assigned | {(tp.topic, tp.partition) for tp in partitions}
        logger.info("ingest process: assigned %s", _partition_list(partitions) or "no partitions")

    def _on_revoke(self, consumer, partitions: list) -> None:
        self._rebalancing = True  # until the next assignment: the eager protocol revokes everything first
        self._assigned = self._assigned - {(tp.topic, tp.partition) for tp in partitions}
        self._source_lag = {key: records for key, records in self._source_lag.items() if key in self._assigned}
        logger.info("ingest process: revoked %s", _partition_list(partitions) or "no partitions")

    def _report_progress(self, reported: tuple[int, int, int, float], now: float) -> tuple[int, int, int, float]:
        counters = self.counters
        records, events, dead_letters, since = reported
        seconds = max(now - since, 1e-9)
        if counters.records > records:
            logger.info(
                "ingested %d source records (%.0f/s), %d events (%.0f/s), %d dead letters in %.0fs; total %d records",
                counters.records - records, (counters.records - records) / seconds, counters.events - events,
                (counters.events - events) / seconds, counters.dead_letters - dead_letters, seconds, counters.records,
            )
        return counters.records, counters.events, counters.dead_letters, now


def run_or_end_process(process: IngestProcess, should_stop: Callable[[], bool], host: str) -> None:
    """`process.run(should_stop)`, crash-only: any exception ends the whole OS process (exit 70) with one CRITICAL
    line naming `host` ("ingest process", "worker"), without committing and without waiting on clients that may
    hang, so that the supervisor's restart ingests the batch again. A worker never runs on without its ingest."""
    try:
        process.run(should_stop)
    except Exception as error:  # noqa: BLE001 - crash-only, as the worker's agents (app.service.runtime)
        logger.critical("%s: ingest failed: %s; exiting (%d) so that a restart ingests the batch again", host, error,
                        EXIT_INGEST_FAILED, exc_info=not isinstance(error, IngestFailed))
        logging.shutdown()
        os._exit(EXIT_INGEST_FAILED)


def _quiet_librdkafka_logger() -> logging.Logger:
    # librdkafka logs a broker that is down every few ms; its errors reach error_cb, which reports them rate-limited.
    quiet = logging.getLogger(f"{__name__}.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    return quiet


def _partition_list(partitions: list) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions, key=lambda tp: (tp.topic, tp.partition)))


