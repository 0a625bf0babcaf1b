"""Run the ingest stage on its own: `python -m app.service.ingest_worker` (the `availability ingest` command).

The ingest stage is stateless (no tables), so it does not need Faust, whose per-message machinery costs ~110 us per
source record. This process runs the same micro-batch logic as the worker's ingest agents
(`app.service.ingest.ingest_micro_batch`) on confluent-kafka, where librdkafka does the per-message work in C.
Workers then run with AVAILABILITY_STAGES=availability (docs/OPERATIONS.md, "A separate ingest stage").

    consumer group `<app_id>-ingest` on every source topic (auto commit off, from the earliest offset)
    loop: consume up to `batch_size` records within `batch_timeout_seconds`
          -> ingest_micro_batch -> produce every record (ledger: explicit partition; dead letters: by key)
          -> wait until all are delivered (any delivery error: exit 70, nothing committed)
          -> commit the batch's offsets synchronously

At-least-once: a crash re-ingests the uncommitted batch, and duplicates on the ledger are harmless (the engine
ignores repeated event ids). Per-partition order survives retries with one request in flight per connection
(idempotence is not available on the embedded broker). SIGTERM or SIGINT finish the current batch, commit it,
close the clients and exit 0. The process needs a running broker (KAFKA_BOOTSTRAP_SERVERS): it starts none of its
own. Refused credentials, missing topics (with creation off) or no broker within AVAILABILITY_BROKER_WAIT_SECONDS
stop it at start with one line and exit 78, as the worker does.

Several ingest processes with the same app id share the source partitions; more processes than the source
topics' partitions leave the extra ones idle.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from app.errors import EXIT_CONFIGURATION_ERROR, ServiceError
from app.kafka.admin import TopicAdminError, prepare_broker
from app.kafka.client_config import BrokerAccessError, client_config
from app.kafka.producing import produce_or_wait
from app.service.ingest import (
    FeedActivityReporter,
    IngestedBatch,
    LedgerWriter,
    SourceMessage,
    ingest_micro_batch,
    report_ingested,
)
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
LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"  # the shape of the Faust worker's lines

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
    """The ingest processes' consumer group: not the workers' (`app_id`), whose members own ledger partitions."""
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


class IngestCounters:
    """The observer of the ingest process: totals for the progress line, and the worker's Prometheus counters
    (`availability_events_ingested_total`, `availability_dead_letters_total`) when `registry` is given."""

    def __init__(self, registry=None) -> None:
        self.records = 0
        self.events = 0
        self.dead_letters = 0
        self._events_metric = self._dead_letters_metric = None
        if registry is not None:
            from prometheus_client import Counter

            from app.service.metrics import METRIC_PREFIX

            self._events_metric = Counter(
                f"{METRIC_PREFIX}_events_ingested",
                "Source events appended to the ledger, by source topic and event type",
                ["source_topic", "event_type"], registry=registry,
            )
            self._dead_letters_metric = Counter(
                f"{METRIC_PREFIX}_dead_letters",
                "Records sent to the dead-letter topic, by stage, source topic and reason code",
                ["stage", "source_topic", "reason"], registry=registry,
            )

    def ingested(self, source_topic: str, event_type: str, count: int = 1) -> None:
        self.events += count
        if self._events_metric is not None:
            self._events_metric.labels(source_topic, event_type).inc(count)

    def dead_lettered(self, stage: str, source_topic: str, reason: str) -> None:
        self.dead_letters += 1
        if self._dead_letters_metric is not None:
            self._dead_letters_metric.labels(stage, source_topic, reason).inc()


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
        self.group_id = ingest_group_id(settings)
        self._fatal: str | None = None
        self._delivery_errors: list[str] = []
        self._failed_deliveries = 0
        self._last_warning: dict[int, float] = {}
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
            sources.append(SourceMessage(topic, partition, offset, message.key(), message.value(), message.headers()))
            next_offsets[(topic, partition)] = offset + 1  # a partition's records come in offset order
        if not sources:
            return None
        batch = ingest_micro_batch(sources, int(time.time() * 1000), self.writer, self.batcher, self.feeds)
        report_ingested(batch, self.counters)
        self._deliver(batch, sources)
        self._commit(next_offsets)
        self.counters.records += len(sources)
        return batch

    def close(self) -> None:
        try:
            self.consumer.close()  # leaves the group: the others take its partitions at once
        finally:
            remaining = self.producer.flush(30)
            if remaining:
                logger.warning("ingest process: %d records still undelivered at close", remaining)

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

    def _on_assign(self, consumer, partitions: list) -> None:
        logger.info("ingest process: assigned %s", _partition_list(partitions) or "no partitions")

    def _on_revoke(self, consumer, partitions: list) -> None:
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


# ------------------------------------------------------------------------------------------------------ the process
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="availability ingest",
        description="Run the ingest stage alone on confluent-kafka: source topics -> ledger and dead-letters. "
        "Settings come from the environment; workers then run with AVAILABILITY_STAGES=availability.")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics on AVAILABILITY_WEB_HOST:PORT (default: none)")
    return parser


def run_ingest(settings: Settings, metrics_port: int | None = None,
               install_signals: bool = True) -> int:
    """Run until SIGTERM or SIGINT; returns the exit status."""
    servers = settings.kafka_bootstrap_servers
    if servers is None:
        print("availability ingest: error: no Kafka broker configured; set KAFKA_BOOTSTRAP_SERVERS to the workers' "
              "broker (the ingest process starts no embedded broker of its own)", file=sys.stderr, flush=True)
        return EXIT_CONFIGURATION_ERROR
    try:
        prepare_broker(settings, servers)
    except (BrokerAccessError, TopicAdminError) as error:
        print(f"availability ingest: error: {error}", file=sys.stderr, flush=True)
        return EXIT_CONFIGURATION_ERROR

    registry = None
    if metrics_port is not None:
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry(auto_describe=True)
        start_http_server(metrics_port, addr=settings.web_host, registry=registry)
        logger.info("ingest process: metrics on http://%s:%d/metrics", settings.web_host, metrics_port)

    stop_requested: list[int] = []
    if install_signals:
        def request_stop(signum: int, frame: Any) -> None:
            if not stop_requested:
                logger.info("ingest process: %s: finishing the current batch", signal.Signals(signum).name)
            stop_requested.append(signum)

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    process = IngestProcess(settings, servers, counters=IngestCounters(registry))
    try:
        process.run(lambda: bool(stop_requested))
    except Exception as error:  # noqa: BLE001 - crash-only, as the worker (app.service.app)
        # Exit without committing (and without waiting on clients that may hang): the supervisor's restart
        # ingests the batch again.
        logger.critical("ingest process: %s; exiting (%d) so that a restart ingests the batch again", error,
                        EXIT_INGEST_FAILED, exc_info=not isinstance(error, IngestFailed))
        logging.shutdown()
        os._exit(EXIT_INGEST_FAILED)
    process.close()
    logger.info("ingest process: stopped after %d source records (%d events, %d dead letters)",
                process.counters.records, process.counters.events, process.counters.dead_letters)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT, stream=sys.stderr)
    return run_ingest(settings, args.metrics_port)


if __name__ == "__main__":
    sys.exit(main())
