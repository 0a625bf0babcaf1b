"""Availability stage: `ledger` -> engine -> `availability.<channel>`, `reservation-decisions`, `dead-letters`.

One agent on the ledger, reading micro-batches (`take_events`). Per batch:
1. group the events by ledger partition, keeping offset order; per partition, run a PartitionEngine over a
   BatchStateStore (read-through, write-back cache of the tables) with an event of that partition current, since
   Faust tables read and write the partition of the current event;
2. send every output of the batch (ChannelAvailability to its channel topic, ReservationDecision, and Rejections as
   dead letters carrying the original ledger record) and await ALL acknowledgements;
3. only then write the changed table values, one per key, per partition with that partition's event current;
4. the batch is acknowledged (committed later) when the loop body returns.
A crash before 3 replays the batch from the old state: the engine is deterministic, so the same records come out,
byte-identical, with the same versions. A crash after 3 redelivers entries the state has already applied: they
change nothing and produce nothing, and their records are already on the broker.

Changelog high watermarks on the embedded broker: Tansu reports a partition's high watermark as the start of its
last batch, and Faust's recovery reads a changelog only up to the high watermark. So step 3 sends the last value
of every (table, partition) on its own, after the others are flushed: the last batch of every changelog partition
is then a single record and the reported high watermark is exact. If a crash falls between the two flushes, the
batch was not acknowledged and is replayed, which rewrites the values (recovered or not) deterministically.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING

from faust.streams import _current_event

from app.engine import (
    ClockTick,
    ChannelAvailability,
    EventDecodeError,
    PartitionEngine,
    Rejection,
    ReservationDecision,
    event_from_record,
    reasons,
)
from app.serialization import SerializationError
from app.service.freeze_guard import check_not_frozen
from app.service.ingest import dead_letter_headers, fit_dead_letter
from app.service.store import BatchStateStore
from app.topics import DEAD_LETTERS, LEDGER, RESERVATION_DECISIONS

if TYPE_CHECKING:
    from app.service.app import AvailabilityService

logger = logging.getLogger(__name__)


def make_current(event) -> None:
    """Make `event` the current event of this task, so table reads and writes go to its partition.

    Only the context variable: `Stream._set_current_event` also sets `stream.current_event`, which take_events'
    background buffering reads to pair each new value with its event; changing it under that task pairs new
    values with old events (records silently skipped or repeated)."""
    _current_event.set(weakref.ref(event))


class LedgerBatchProcessor:
    """Applies one micro-batch of ledger events; holds no state between batches (the tables do)."""

    def __init__(self, service: AvailabilityService) -> None:
        from app.service.app import BatchSender

        self._service = service
        self._app = service.app
        self._tables = service.tables
        self._ledger = service.codec.serde(LEDGER)
        self._availability_serdes = {
            channel: (name, service.codec.serde(name))
            for channel, name in service.topics.availability_topic_names.items()
        }
        self._decisions = service.codec.serde(RESERVATION_DECISIONS)
        self._channels = frozenset(service.settings.channels)
        self._observer = service.observer
        self._sender = BatchSender(service.app)
        self._rejections: list[tuple[str, int, int]] = []  # (reason, ledger partition, offset) of this batch
        self._compiled_policies: dict[int, dict] = {}  # ledger partition -> PartitionEngine's compiled policies
        self._waiters = service.decision_waiters  # HTTP requests waiting for their command's decision
        self._decided: list[ReservationDecision] = []

    async def process(self, events: list) -> None:
        by_partition: dict[int, list] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append(event)
        stores: list[tuple[object, BatchStateStore]] = []
        ingest_times: dict[int, list[int]] = {}
        previous = _current_event.get(None)
        try:
            for partition, partition_events in by_partition.items():
                partition_events.sort(key=lambda event: event.message.offset)
                make_current(partition_events[-1])
                store = BatchStateStore(partition, self._tables)
                ingest_times[partition] = await self._apply(partition, partition_events, store)
                stores.append((partition_events[-1], store))
            await self._sender.acks()  # every record is on the broker before any state changes
            await self._write_back(stores)
            if self._decided:  # decided, published and stored: answer the HTTP requests waiting for them
                self._waiters.resolve(self._decided)
        finally:
            _current_event.set(previous)
            self._decided.clear()
        if self._rejections:
            self._log_rejections()
        published_at = int(time.time() * 1000)
        for partition, partition_events in by_partition.items():
            self._observer.batch_applied(partition, len(partition_events), ingest_times[partition], published_at)

    async def _apply(self, partition: int, events: list, store: BatchStateStore) -> list[int]:
        """Apply a partition's events; returns the ingest times of its source events (clock ticks excluded), for
        the end-to-end latency metric."""
        engine = PartitionEngine(partition, store, self._channels, self._compiled_policies.setdefault(partition, {}))
        send = self._sender.send
        ingest_times: list[int] = []
        published: dict[str, int] = {}  # topic -> records, reported once per batch (metrics cost per call)
        for event in events:
            message = event.message
            try:
                decoded = self._ledger.decode(message.value).value
                entry_name, entry = decoded["entry"]
                ledger_event = event_from_record(entry_name, entry)
            except (SerializationError, EventDecodeError, TypeError, KeyError, ValueError) as error:
                reason = getattr(error, "reason", reasons.UNDECODABLE_RECORD)
                await self._dead_letter(message, reason, f"{type(error).__name__}: {error}")
                continue
            if type(ledger_event) is not ClockTick:
                ingest_times.append(decoded["ingest_time"])
            for output in engine.apply(ledger_event, message.offset):
                kind = type(output)
                if kind is ChannelAvailability:
                    topic, serde = self._availability_serdes[output.channel]
                    await send(topic, output.key.encode(), serde.encode(output.to_record()))
                    published[topic] = published.get(topic, 0) + 1
                elif kind is ReservationDecision:
                    await send(RESERVATION_DECISIONS.name, output.key.encode(), self._decisions.encode(output.to_record()))
                    self._observer.reservation_decided(output.channel, output.outcome.value)
                    if self._waiters:
                        self._decided.append(output)
                elif kind is Rejection:
                    self._observer.rejected(output.reason)
                    self._rejections.append((output.reason, message.partition, message.offset))
                    await self._dead_letter(message, output.reason, output.detail, log=logger.debug)
        for topic, count in published.items():
            self._observer.published(topic, count)
        return ingest_times

    def _log_rejections(self) -> None:
        """One line per batch: rejections are business outcomes (a sale beyond stock, an unknown reservation),
        many at peak; each one's reason and detail is in its dead letter, and in the DEBUG log."""
        counts: dict[str, int] = {}
        for reason, _, _ in self._rejections:
            counts[reason] = counts.get(reason, 0) + 1
        reason, partition, offset = self._rejections[0]
        logger.info("dead-lettered %d rejected ledger entries (%s); first: %s[%d]@%d %s", len(self._rejections),
                    ", ".join(f"{name} x{count}" for name, count in sorted(counts.items())), LEDGER.name,
                    partition, offset, reason)
        self._rejections.clear()

    async def _dead_letter(self, message, reason: str, error: str, log=logger.warning) -> None:
        log("dead-lettered %s[%s]@%s: %s: %s", LEDGER.name, message.partition, message.offset, reason, error)
        headers = dead_letter_headers(reason, error, LEDGER.name, message.partition, message.offset, message.headers)
        key, value, headers = fit_dead_letter(message.key, message.value, headers)
        await self._sender.send(DEAD_LETTERS.name, key, value, None, headers)
        self._observer.dead_lettered("availability", LEDGER.name, reason)

    async def _write_back(self, stores: list) -> None:
        check_not_frozen()  # never write table values (changelog records) after being frozen out of the group
        trailers = []
        for current, store in stores:
            writes = store.dirty_writes()
            if not writes:
                continue
            make_current(current)
            last_per_table: dict[int, tuple] = {}
            for table, key, value in writes:
                previous = last_per_table.get(id(table))
                if previous is not None:
                    previous[0][previous[1]] = previous[2]
                last_per_table[id(table)] = (table, key, value)
            trailers.append((current, list(last_per_table.values())))
        if not trailers:
            return
        await self._app.producer.flush()
        check_not_frozen()
        for current, writes in trailers:
            make_current(current)
            for table, key, value in writes:
                table[key] = value
        await self._app.producer.flush()


def register_availability_agent(service: AvailabilityService) -> None:
    from app.service.app import end_worker_on_unexpected_error

    settings = service.settings
    processor = LedgerBatchProcessor(service)

    async def apply_ledger(stream) -> None:
        async for events in stream.take_events(settings.batch_size, settings.batch_timeout_seconds):
            with end_worker_on_unexpected_error("apply_ledger", events):
                await processor.process(events)

    service.app.agent(service.topics.ledger, name="apply_ledger")(apply_ledger)
