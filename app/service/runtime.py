"""What the worker's stages share at run time: the AvailabilityService they are wired to, the observer hooks that
metrics implement, Faust's quieted monitor, and the crash-only rule for a batch that fails unexpectedly.

The app factory (app.service.app) builds these; the stages (app.service.availability, app.service.ingest), the HTTP
API (app.http) and the metrics (app.service.metrics) receive them, so none of them imports the factory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import monotonic

import faust
from faust.sensors import Monitor

from app.service.decision_waiters import DecisionWaiters
from app.settings import Settings
from app.wire.serialization import AvroCodec
from tables import AvailabilityTables

logger = logging.getLogger(__name__)

# Exit status of a worker whose agent met an unexpected error (EX_SOFTWARE).
EXIT_AGENT_CRASHED = 70


class PipelineObserver:
    """Hooks the stages call as records go through; no-ops here. Metrics subclass it and pass it to
    build_service(). Hooks must be cheap and must not raise."""

    def ingested(self, source_topic: str, event_type: str, count: int = 1) -> None: ...

    def dead_lettered(self, stage: str, source_topic: str, reason: str) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def published(self, topic: str, count: int = 1) -> None: ...

    def reservation_decided(self, channel: str, outcome: str, reason: str | None = None) -> None: ...

    def inventory_exception(self, kind: str) -> None: ...

    def batch_applied(self, partition: int, events: int, ingest_times_ms: dict[int, int],
                      published_at_ms: int) -> None: ...

    def skipped_records_read(self, topic: str, count: int) -> None: ...

    def producer_waited(self, queue_seconds: float, acknowledgement_seconds: float) -> None: ...

    def event_loop_lagged(self, seconds: float) -> None: ...

    def reconciliation_drift(self, bucket: str, units: int) -> None: ...


class QuietMonitor(Monitor):
    """Faust's Monitor keeps statistics per message, stream event, table access and send (timestamps, deques,
    counters) that nothing here reads: the service's metrics come from PipelineObserver. Those per-record hooks
    cost more than the rules themselves at peak rates, so they do nothing; commits, rebalances and assignment are
    still recorded, and so is when each partition's stream last took an event, which Faust's liveness check reads."""

    def on_message_in(self, tp, offset, message) -> None: ...

    def on_stream_event_in(self, tp, offset, stream, event) -> None:
        # Faust's consumer logs "Stream has not started processing <tp>" as an ERROR, every few seconds, for a
        # partition with records to read and no time here once `stream_processing_timeout` (300 s) has passed.
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None: ...

    def on_message_out(self, tp, offset, message) -> None: ...

    def on_table_get(self, table, key) -> None: ...

    def on_table_set(self, table, key, value) -> None: ...

    def on_send_initiated(self, producer, topic, message, keysize, valsize) -> None: ...

    def on_send_completed(self, producer, state, metadata) -> None: ...


@dataclass(frozen=True)
class ServiceTopics:
    """Faust handles of the topics the agents read (raw bytes: the codec decodes, not Faust), and names of those
    they write. The source topics are not here: the ingest stage reads them with a consumer of its own."""

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
    # Consumer lag per source partition of the ingest stage where this worker runs it (`all`: the ingest thread's
    # IngestProcess.source_lag); None where it does not.
    source_lag: Callable[[], Mapping[tuple[str, int], int]] | None = None


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
