"""Availability stage: `ledger` -> engine -> `availability.<channel>`, `reservation-decisions`,
`inventory-exceptions`, `dead-letters`.

One agent on the ledger reads micro-batches (`take_events`) and applies them in chunks of at most
APPLY_CHUNK_BYTES of ledger records. Per chunk: each ledger partition's records are first checked to follow on from
the last position applied (records the consumer skipped, or a hole left by a deferred write-back, are read back,
app/kafka/skipped_records.py); each partition's PartitionEngine runs over its PartitionStateStore (a write-back
cache of the tables) with an event of that partition current; every output is handed to the producer, and the
next chunk of the micro-batch is applied while the broker acknowledges them; all acknowledgements are awaited before
the changed table values are written (at once or together with later chunks' within `write_back_interval_seconds`)
and at the end of the micro-batch, before Faust commits its offsets. Entry i of the ledger record at offset o is
applied at position (o, i).

Why this order is effectively-once after any crash, when values are written at once, and how the last value of
every changelog partition is sent alone so the embedded broker's high watermark stays exact: docs/ARCHITECTURE.md
("Delivery", "Two pitfalls the stages work around"). Lookups read this processor's live states first
(`live_store`), so they are never behind what it published.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

from faust.streams import _current_event

from app.engine import (
    ChannelAvailability,
    ClockTick,
    InventoryException,
    PartitionEngine,
    Rejection,
    ReservationDecision,
)
from app.engine.positions import split_position
from app.kafka.batch_sender import BatchSender
from app.kafka.skipped_records import SkippedRecordReader, holes
from app.service.freeze_guard import check_not_frozen
from app.service.heap_trim import HeapTrimmer
from app.service.runtime import AvailabilityService, end_worker_on_unexpected_error
from app.wire.dead_letters import ledger_dead_letter
from app.wire.ledger import LedgerItem, Unreadable, apply_ledger_record, read_ledger_record
from app.wire.output_encoders import availability_encoder
from app.wire.topics import DEAD_LETTERS, INVENTORY_EXCEPTIONS, LEDGER, RESERVATION_DECISIONS
from tables.store import PartitionStateStore
from tables.write_back import write_back

logger = logging.getLogger(__name__)


def make_current(event) -> None:
    """Make `event` the current event of this task, so table reads and writes go to its partition.

    Only the context variable: `Stream._set_current_event` also sets `stream.current_event`, which take_events'
    background buffering reads to pair each new value with its event; changing it under that task pairs new
    values with old events (records silently skipped or repeated)."""
    _current_event.set(weakref.ref(event))


APPLY_CHUNK_BYTES = 2 * 1024 * 1024
"""Ledger bytes applied between two write-backs: a micro-batch of batch records (up to `ledger_batch_max_entries`
events each) is applied in chunks, so the outputs waiting for acknowledgement and the dirty states stay bounded."""

LOOP_HOLD_SECONDS = 0.05
"""The longest a chunk applies ledger records without letting the event loop run its other tasks: a chunk is tens of
thousands of entries, seconds of CPU on a loaded machine, and meanwhile the group's heartbeats, fetches, produce
requests and HTTP requests (/ready, /metrics, lookups) wait. Between two ledger records, past this, it yields once."""


def chunks_by_size(events: list, limit: int) -> list[list]:
    """`events` in order, cut into runs of at most `limit` value bytes (a larger record is a run of its own)."""
    chunks: list[list] = [[]]
    size = 0
    for event in events:
        length = len(event.message.value or b"")
        if size + length > limit and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(event)
        size += length
    return chunks


class LedgerBatchProcessor:
    """Applies one micro-batch of ledger events; holds no state between batches (the tables do)."""

    def __init__(self, service: AvailabilityService) -> None:
        self._service = service
        self._app = service.app
        self._tables = service.tables
        self._ledger = service.codec.serde(LEDGER)
        self._availability_encoders = {  # channel -> (topic, encoder of an output: app/wire/output_encoders.py)
            channel: (name, availability_encoder(service.codec.serde(name)))
            for channel, name in service.topics.availability_topic_names.items()
        }
        self._decisions = service.codec.serde(RESERVATION_DECISIONS)
        self._exceptions = service.codec.serde(INVENTORY_EXCEPTIONS)
        self._channels = frozenset(service.settings.channels)
        self._limits = service.settings.engine_limits
        self._observer = service.observer
        self._sender = BatchSender(service.app)
        self._rejections: list[tuple[str, int, int]] = []  # (reason, ledger partition, offset) of this batch
        # ledger partition -> its store (decoded states cached between chunks) and engine (compiled policies)
        self._partitions: dict[int, tuple[PartitionStateStore, PartitionEngine]] = {}
        self._cache_limit = service.settings.state_cache_skus
        self._waiters = service.decision_waiters  # HTTP requests waiting for their command's decision
        self._decided: list[ReservationDecision] = []
        self._published: dict[str, int] = {}  # topic -> records, reported once per batch (metrics cost per call)
        # ledger partition -> the offset after the last record applied; holes before it are read back
        self._next_offsets: dict[int, int] = {}
        self._skipped_reader = (
            None if service.bootstrap_servers is None
            else SkippedRecordReader(service.settings, service.bootstrap_servers)
        )
        # Deferred write-back relies on the hole check (module docstring): without a reader, every chunk.
        self._write_back_interval = (
            0.0 if self._skipped_reader is None else service.settings.write_back_interval_seconds
        )
        # ledger partition -> (an event of it, its store) with changes not written back yet, since `_unwritten_since`
        self._unwritten: dict[int, tuple[object, PartitionStateStore]] = {}
        self._unwritten_since: float | None = None
        self._assignment = 0  # counts rebalances: a chunk that straddles one writes nothing back
        self._trim_heap = HeapTrimmer()
        # when this processor last let the event loop run (LOOP_HOLD_SECONDS): not reset as a chunk starts, since the
        # end of the chunk before (its submit, a write-back) may not have let it run either
        self._loop_held_since = 0.0

    async def process(self, events: list) -> None:
        by_partition: dict[int, list] = {}
        for event in events:
            by_partition.setdefault(event.message.partition, []).append(event)
        stores: list[tuple[object, PartitionStateStore]] = []
        ingest_times: dict[int, dict[int, int]] = {}
        applied: dict[int, int] = {}
        assignment = self._assignment
        previous = _current_event.get(None)
        try:
            for partition, partition_events in by_partition.items():
                partition_events.sort(key=lambda event: event.message.offset)
                make_current(partition_events[-1])
                store, engine = self._engine_for(partition)
                in_order = await self._with_skipped_records(partition, engine, partition_events)
                applied[partition], ingest_times[partition] = await self._apply(engine, in_order)
                self._next_offsets[partition] = max(in_order[-1].message.offset + 1,
                                                    self._next_offsets.get(partition, 0))
                stores.append((partition_events[-1], store))
            # The chunk's records go to the producer; the next chunk is applied while the broker acknowledges
            # them. Every acknowledgement is awaited before any state is written back (_write_back_when_due).
            await self._sender.submit()
            if assignment == self._assignment:
                await self._write_back_when_due(stores)  # at once when a decision below is waited for
                if self._decided:  # decided, published and stored: answer the HTTP requests waiting for them
                    self._waiters.resolve(self._decided)
            # else a rebalance came while the chunk was applied: the states written so far lack the chunks not yet
            # written back, so write none; whoever owns the partitions now reads those ledger records back and
            # decides again, the same way. The waiting requests time out (504: decided later, exactly once).
        finally:
            _current_event.set(previous)
            self._decided.clear()
        if self._rejections:
            self._log_rejections()
        for topic, count in self._published.items():
            self._observer.published(topic, count)
        self._published.clear()
        self._observer.producer_waited(*self._sender.take_waits())
        published_at = int(time.time() * 1000)
        for partition, count in applied.items():
            self._observer.batch_applied(partition, count, ingest_times[partition], published_at)

    async def acknowledged(self) -> None:
        """Await the acknowledgement of every record published so far (the end of a micro-batch)."""
        await self._sender.acks()

    async def write_back_if_due(self) -> None:
        """Write back the states changed more than a write-back interval ago when no chunk came since: without
        this, a stream that goes quiet would keep its last changes out of the tables and changelogs until its
        next record. The caller holds the agent's lock (no chunk is being applied)."""
        since = self._unwritten_since
        if since is not None and time.monotonic() - since >= self._write_back_interval:
            await self._write_back_unwritten()

    def forget_state(self) -> None:
        """Drop every partition's cached states and engine, written back or not: on a rebalance, since another
        worker may change a partition while this one does not own it. Changes not written back are applied again
        from the ledger by the next owner (module docstring). A chunk being applied keeps the store it started
        with, and writes nothing back."""
        self._partitions.clear()
        self._next_offsets.clear()
        self._unwritten.clear()
        self._unwritten_since = None
        self._assignment += 1

    def live_store(self, partition: int) -> PartitionStateStore | None:
        """The partition's store when this processor holds its states (possibly ahead of the tables), else None."""
        found = self._partitions.get(partition)
        return None if found is None else found[0]

    async def _write_back_when_due(self, stores: list) -> None:
        """Add the chunk's changed stores to those not written back yet; write them all back when due."""
        unwritten = self._unwritten
        for current, store in stores:
            if store.is_dirty:
                unwritten[store.partition] = (current, store)
        if not unwritten:
            # nothing to write back, but a decision may change no state: on the broker before it is answered below
            await self._sender.acks()
            return
        now = time.monotonic()
        if self._unwritten_since is None:
            self._unwritten_since = now
        due = (
            now - self._unwritten_since >= self._write_back_interval
            or bool(self._decided)
            or any(not store.position_stored for _, store in unwritten.values())
            or any(store.dirty_skus > self._cache_limit for _, store in unwritten.values())
        )
        if due:
            await self._write_back_unwritten()

    async def _write_back_unwritten(self) -> None:
        """Write back every store with changes not written back yet, once all that was published is acknowledged."""
        assignment = self._assignment
        pending = list(self._unwritten.values())
        self._unwritten.clear()
        self._unwritten_since = None
        await self._sender.acks()  # every record published is on the broker before any state changes
        if assignment == self._assignment:  # else the partitions may be another worker's now: write nothing
            await self._write_back(pending)

    async def _with_skipped_records(self, partition: int, engine: PartitionEngine, events: list) -> list:
        """`events` (ascending offsets) with any ledger records the consumer skipped before or between them read
        back and put in their place (app.kafka.skipped_records)."""
        if self._skipped_reader is None:
            return events
        next_offset = self._next_offsets.get(partition)
        if next_offset is None:  # first batch since the assignment: the one after the last position applied
            last_offset, _ = split_position(engine.state.last_position)
            next_offset = last_offset + 1 if last_offset >= 0 else None
        missing = holes(next_offset, [event.message.offset for event in events])
        if not missing:
            return events
        # Expected after a crash or a rebalance with changes not written back (module docstring); a Faust race
        # otherwise (app.kafka.skipped_records).
        logger.warning("%s[%d]: offsets %s come after the last position applied but were not delivered by the "
                       "consumer; reading them back to apply them in order", LEDGER.name, partition,
                       ", ".join(f"{start}-{end - 1}" for start, end in missing))
        loop = asyncio.get_running_loop()
        read: list = []
        for start, end in missing:
            read += await loop.run_in_executor(None, self._skipped_reader.read, LEDGER.name, partition, start, end)
        self._observer.skipped_records_read(LEDGER.name, len(read))
        return sorted(events + read, key=lambda event: event.message.offset)

    def _engine_for(self, partition: int) -> tuple[PartitionStateStore, PartitionEngine]:
        """The partition's store and engine (created on first use: reads the partition state, so an event of the
        partition must be current)."""
        found = self._partitions.get(partition)
        if found is None:
            store = PartitionStateStore(partition, self._tables, self._cache_limit, self._limits)
            engine = PartitionEngine(partition, store, self._channels, limits=self._limits)
            found = self._partitions[partition] = (store, engine)
        return found

    async def _apply(self, engine: PartitionEngine, events: list) -> tuple[int, dict[int, int]]:
        """Apply a partition's ledger records; returns the number of entries applied and, per ingest time, the
        number of source events (clock ticks excluded) with it, for the end-to-end latency metric."""
        ingest_times: dict[int, int] = {}
        applied = 0
        for event in events:
            if time.monotonic() - self._loop_held_since >= LOOP_HOLD_SECONDS:
                # What the loop runs meanwhile already runs while a full batch waits for room in its producer queue:
                # a rebalance in the middle of a chunk is handled in `process`, and write-backs wait for its lock.
                await asyncio.sleep(0)
                self._loop_held_since = time.monotonic()
            message = event.message
            items = read_ledger_record(self._ledger, message.value)
            if type(items) is Unreadable:
                await self._dead_letter(message, None, items.reason, items.error)
                continue
            for item, ledger_event, outputs in apply_ledger_record(engine, items, message.offset):
                if type(outputs) is Unreadable:
                    await self._dead_letter(message, item, outputs.reason, outputs.error)
                    continue
                applied += 1
                if type(ledger_event) is not ClockTick:
                    ingest_times[item.ingest_time] = ingest_times.get(item.ingest_time, 0) + 1
                if outputs:
                    await self._publish(outputs, message, item)
        return applied, ingest_times

    async def _publish(self, outputs: list, message, item: LedgerItem) -> None:
        send = self._sender.send
        send_nowait = self._sender.send_nowait
        published = self._published
        for output in outputs:
            kind = type(output)
            if kind is ChannelAvailability:
                topic, encode = self._availability_encoders[output.channel]
                key, value = output.key.encode(), encode(output)
                if not send_nowait(topic, key, value):
                    await send(topic, key, value)
                published[topic] = published.get(topic, 0) + 1
            elif kind is ReservationDecision:
                await send(RESERVATION_DECISIONS.name, output.key.encode(), self._decisions.encode(output.to_record()))
                self._observer.reservation_decided(output.channel, output.outcome.value, output.reason)
                if self._waiters:
                    self._decided.append(output)
            elif kind is Rejection:
                self._observer.rejected(output.reason)
                self._rejections.append((output.reason, message.partition, message.offset))
                await self._dead_letter(message, item, output.reason, output.detail, log=logger.debug)
            elif kind is InventoryException:
                await send(INVENTORY_EXCEPTIONS.name, output.key.encode(), self._exceptions.encode(output.to_record()))
                self._observer.inventory_exception(output.kind.value)

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

    async def _dead_letter(self, message, item: LedgerItem | None, reason: str, error: str,
                           log=logger.warning) -> None:
        """Dead-letters a ledger record, or one entry of a batch record (`item`): the entry alone, as a LedgerEntry
        keyed by its SKU, with its index in the `ledger-index` header."""
        log("dead-lettered %s[%s]@%s: %s: %s", LEDGER.name, message.partition, message.offset, reason, error)
        key, value, headers = ledger_dead_letter(self._ledger, reason, error, message.partition, message.offset,
                                                 message.key, message.value, message.headers, item)
        await self._sender.send(DEAD_LETTERS.name, key, value, None, headers)
        self._observer.dead_lettered("availability", LEDGER.name, reason)

    async def _write_back(self, stores: list) -> None:
        # never write table values (changelog records) after being frozen out of the group. A generator: each
        # partition's values are encoded as it is written, so that one partition's encoded states are held at a time
        await write_back(self._sender, ((store.partition, store.dirty_writes()) for _, store in stores),
                         check_not_frozen)
        for _, store in stores:
            store.written()
        self._trim_heap()  # what the written chunks freed goes back to the system


def register_availability_agent(service: AvailabilityService) -> None:
    settings = service.settings
    processor = LedgerBatchProcessor(service)
    service.live_states = processor

    applying = asyncio.Lock()  # a micro-batch and a quiet stream's write-back never interleave

    async def apply_ledger(stream) -> None:
        async for events in stream.take_events(settings.batch_size, settings.batch_timeout_seconds):
            with end_worker_on_unexpected_error("apply_ledger", events):
                async with applying:
                    for chunk in chunks_by_size(events, APPLY_CHUNK_BYTES):
                        await processor.process(chunk)
                    # Faust commits the micro-batch's offsets once this body returns: its records are on the broker
                    # first
                    await processor.acknowledged()

    async def write_back_quiet_partitions() -> None:
        with end_worker_on_unexpected_error("write_back_quiet_partitions", []):
            async with applying:
                await processor.write_back_if_due()

    if settings.write_back_interval_seconds > 0:
        service.app.timer(settings.write_back_interval_seconds, name="write_back_quiet_partitions")(
            write_back_quiet_partitions)

    async def forget_state_on_rebalance(*args, **kwargs) -> None:
        processor.forget_state()

    service.app.on_partitions_revoked.connect(forget_state_on_rebalance)

    service.app.agent(service.topics.ledger, name="apply_ledger")(apply_ledger)
