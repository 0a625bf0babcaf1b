"""Ingest stage: source topics -> validated, SKU-keyed `ledger`; everything else -> `dead-letters`.

The logic of one source micro-batch is `ingest_micro_batch` (plain Python: no Faust, no I/O), run by an
IngestProcess on confluent-kafka (app.service.ingest_process): on a thread of the worker (AVAILABILITY_STAGES=all,
app.service.ingest_thread) or in the separate ingest process (app.service.ingest_worker, `availability ingest`).
Per source record:
- decode with the codec, convert (`event_from_record`) and `validate`; a failure dead-letters the ORIGINAL key,
  bytes and headers plus reason, error, source topic/partition/offset, and is logged as `topic[partition]@offset`.
  A movement or command written with the schema the service registered for its topic is read straight into its
  event instead (app.wire.ledger.event_reader: the same event, no dict) and goes to the ledger as its own bytes;
- a stock movement or reservation command becomes an entry of ledger partition `ledger_partition(sku)`;
- a StockMovementBatch becomes one entry per movement, in its order (an invalid movement is dead-lettered on its
  own, with the movement's index in a header, and does not hold back the others);
- a PolicyChange is written to EVERY ledger partition, so it takes effect at a defined position in each.
The entries of one micro-batch are written per ledger partition, in arrival order, as LedgerEntryBatch records of
up to `ledger_batch_max_entries` (app/wire/ledger.py): the availability stage then pays Faust's per-record cost once per
record, not once per event. A policy change flushes what came before it, so it keeps its place in every partition.
The batch's records are sent together and their acknowledgements awaited before the batch is acknowledged:
a crash re-ingests the batch: every ledger entry names its source entry (topic, partition, offset, index inside the
record), and the engine recognises a repeat by it, however far apart the copies are.

The leader worker also appends a ClockTick to every ledger partition every `tick_interval_seconds`
(`register_clock_ticks`, whatever the stages), so reservations expire in quiet partitions too, at a ledger position
a replay reproduces.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.engine import (
    DEFAULT_LIMITS,
    ClockTick,
    EventDecodeError,
    FeedActivity,
    FeedSeen,
    FeedType,
    PolicyChange,
    ReservationCommand,
    StockMovement,
    event_from_record,
    event_to_record,
    reasons,
    validate,
)
from app.engine.constructors import trusted_constructor
from app.engine.reservations import answerable
from app.kafka.batch_sender import BatchSender
from app.service.runtime import AvailabilityService, PipelineObserver
from app.wire.dead_letters import MOVEMENT_INDEX_HEADER, dead_letter_headers, fit_dead_letter
from app.wire.ledger import LedgerAppend, LedgerBatcher, event_reader
from app.wire.serialization import AVRO_NAMESPACE, HEADER_SIZE, AvroCodec, SerializationError
from app.wire.topics import (
    DEAD_LETTERS,
    FEED_OF_SOURCE_TOPIC,
    LEDGER,
    LEDGER_BROADCAST_KEY,
    ledger_partition,
    memoized_partitions,
)

logger = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    error: str
    movement_index: int | None = None


@dataclass(frozen=True, slots=True)
class LedgerEntryDraft:
    """A movement or command bound for one ledger partition (batched by LedgerBatcher): its event, and its Avro
    record as decoded, unless it was read straight into the event (`record` gives the dict either way)."""

    partition: int
    sku: str
    record_name: str
    event: StockMovement | ReservationCommand
    source_index: int  # the event's index inside its source record (0 unless a StockMovementBatch)
    body: bytes | None = None  # the record's Avro bytes as the source wrote them, with the ledger's schema
    decoded: dict | None = None  # the record as decoded; None when it was read straight into `event`

    @property
    def record(self) -> dict:
        """The entry's Avro record: as decoded, or the event's own record, which has the same fields."""
        return self.decoded if self.decoded is not None else event_to_record(self.event)[1]

    @property
    def ledger_record(self) -> dict | StockMovement | ReservationCommand:
        """What LedgerBatcher.add takes: the decoded dict, or the event (made a dict only if it is encoded)."""
        return self.decoded if self.decoded is not None else self.event


_new_draft = trusted_constructor(LedgerEntryDraft)  # one per event: a quarter of the dataclass's __init__


@dataclass
class IngestResult:
    entries: list[LedgerEntryDraft] = field(default_factory=list)  # movements and commands, in order
    appends: list[LedgerAppend] = field(default_factory=list)  # policy changes, one record per ledger partition
    dead_letters: list[DeadLetter] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)


class LedgerWriter:
    """Turns source records into ledger records. Pure apart from the codec: no Faust, no I/O."""

    def __init__(self, codec: AvroCodec, partition_count: int, max_record_bytes: int | None = None,
                 max_event_time_skew_ms: int = DEFAULT_LIMITS.max_event_time_skew_ms, source_bytes: bool = True) -> None:
        """`source_bytes=False`: every record is decoded to a dict and encoded again from it, none read straight
        into its event or handed to the ledger as the source wrote it (the same ledger bytes; the ingest
        benchmark's baseline)."""
        self._codec = codec
        self._ledger = codec.serde(LEDGER)
        self._partition_count = partition_count
        self._max_record_bytes = max_record_bytes
        self._max_skew_ms = max_event_time_skew_ms
        self._own_schema_ids: dict[str, int] = {}
        self._event_readers: dict[str, Callable[[bytes], object | None]] = {}
        self._source_bytes = source_bytes

    def entry_value(self, event, source: tuple[str, int, int] | None, ingest_time: int) -> bytes:
        """A LedgerEntry of one event; `source` (topic, partition, offset) of a record holding that event alone."""
        record_name, record = event_to_record(event)
        topic, partition, offset = source if source is not None else (None, None, None)
        return self._ledger.encode(
            {
                "entry": (f"{AVRO_NAMESPACE}.{record_name}", record),
                "source_topic": topic,
                "source_partition": partition,
                "source_offset": offset,
                "ingest_time": ingest_time,
                "source_index": None if source is None else 0,
            }
        )

    def broadcast(self, value: bytes) -> list[LedgerAppend]:
        key = LEDGER_BROADCAST_KEY.encode()
        return [LedgerAppend(partition, key, value) for partition in range(self._partition_count)]

    def ingest(self, topic: str, partition: int, offset: int, value: bytes | None, ingest_time: int) -> IngestResult:
        result = IngestResult()
        if value is None:
            result.dead_letters.append(DeadLetter(reasons.UNDECODABLE_RECORD, "record has no value"))
            return result
        if self._max_record_bytes is not None and len(value) > self._max_record_bytes:
            result.dead_letters.append(DeadLetter(
                reasons.RECORD_TOO_LARGE,
                f"{len(value)} bytes, above AVAILABILITY_MAX_SOURCE_RECORD_BYTES={self._max_record_bytes}; "
                "split it (e.g. a StockMovementBatch into several)",
            ))
            return result
        source = (topic, partition, offset)
        if self._source_bytes:
            read_event = self._event_readers.get(topic)
            if read_event is None:
                read_event = self._event_readers[topic] = self._event_reader(topic)
            event = read_event(value)
            if event is not None:  # a movement or command in the service's own schema: no dict, its bytes as they are
                self._append_event(type(event).__name__, None, source, ingest_time, result, None, value[HEADER_SIZE:],
                                   event)
                return result
        try:
            decoded = self._codec.decode(topic, value)
        except SerializationError as error:
            result.dead_letters.append(DeadLetter(reasons.UNDECODABLE_RECORD, f"{type(error).__name__}: {error}"))
            return result
        record_name = decoded.record_name.removeprefix(f"{AVRO_NAMESPACE}.")
        if record_name == "StockMovementBatch":
            for index, movement in enumerate(decoded.value["movements"]):
                self._append_event("StockMovement", movement, source, ingest_time, result, index)
        else:
            # Written with the schema this service registered for the topic, which is the ledger's schema of the
            # record (both from avro/): the ledger takes the record's bytes as they are (LedgerBatcher).
            own_id = self._own_schema_ids.get(topic)
            if own_id is None:
                own_id = self._own_schema_ids[topic] = self._codec.serde(topic).schema_id
            body = value[HEADER_SIZE:] if decoded.schema_id == own_id and self._source_bytes else None
            self._append_event(record_name, decoded.value, source, ingest_time, result, None, body)
        return result

    def _event_reader(self, topic: str) -> Callable[[bytes], object | None]:
        try:
            serde = self._codec.serde(topic)
        except SerializationError:  # not a topic of the codec: decode() says so, in a dead letter
            serde = None
        return event_reader(serde)

    def _append_event(self, record_name, record, source, ingest_time, result: IngestResult, index,
                      body: bytes | None = None, event=None) -> None:
        if event is None:
            try:
                event = event_from_record(record_name, record)
            except EventDecodeError as error:
                result.dead_letters.append(DeadLetter(error.reason, str(error), index))
                return
        reason = validate(event)
        if reason is None and event.event_time > ingest_time + self._max_skew_ms:
            reason = reasons.EVENT_TIME_IN_FUTURE
        if reason is not None and not (type(event) is ReservationCommand and answerable(event)):
            result.dead_letters.append(DeadLetter(reason, _refusal(record_name, reason, event, ingest_time), index))
            return
        # A malformed command that names its reservation goes on to the ledger all the same: the availability stage
        # refuses it there with a REJECTED decision (and its dead letter), so order management gets an answer.
        result.event_types.append(type(event).__name__)
        if isinstance(event, PolicyChange):
            result.appends.extend(self.broadcast(self.entry_value(event, source, ingest_time)))
        else:
            sku = event.sku
            # the source's own bytes, or else the decoded record, are the event's Avro form already (read with the
            # schema the ledger writes): no conversion back (tests/service/test_ingest_batch.py)
            result.entries.append(_new_draft(_ledger_partition(sku, self._partition_count), sku, record_name, event,
                                             index or 0, body, record))


def _refusal(record_name: str, reason: str, event, ingest_time: int) -> str:
    if reason == reasons.EVENT_TIME_IN_FUTURE:
        return (f"{record_name} event_time {event.event_time} is more than the allowed skew ahead of the ingest "
                f"clock {ingest_time} (AVAILABILITY_MAX_EVENT_TIME_SKEW_SECONDS); milliseconds since the epoch?")
    return f"{record_name} failed validation: {reason}"


_ledger_partition = memoized_partitions(ledger_partition)


def _now_ms() -> int:
    return int(time.time() * 1000)


# ------------------------------------------------------------------------------------------- one source micro-batch
# The per-micro-batch logic of the confluent-kafka ingest stage (app.service.ingest_process): plain Python, no
# Faust, no I/O. The caller sends `records` in order, waits for their
# acknowledgements and only then acknowledges the source batch; it reports `ingested` and `dead_letters`.


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """One source record of a micro-batch, as any consumer delivers it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list | tuple | None = None


new_source_message = trusted_constructor(SourceMessage)
"""SourceMessage(topic, partition, offset, key, value, headers) for a consumer's hot loop (one per source record)."""


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """A record to send: a ledger append (explicit partition) or a dead letter (partition None: Kafka's default
    partitioner on its key, murmur2, or any partition for a keyless one)."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


@dataclass(frozen=True, slots=True)
class DeadLetterReport:
    """What a dead letter of the ingest stage is about, for the log line and the metrics."""

    source_topic: str
    partition: int
    offset: int
    reason: str
    error: str
    movement_index: int | None = None

    def log_line(self) -> str:
        """`dead-lettered topic[partition]@offset: REASON: error[ (movement i)]` (docs/OPERATIONS.md, Logs)."""
        movement = "" if self.movement_index is None else f" (movement {self.movement_index})"
        return f"dead-lettered {self.source_topic}[{self.partition}]@{self.offset}: {self.reason}: {self.error}{movement}"


@dataclass
class IngestedBatch:
    """Everything one source micro-batch turns into."""

    records: list[OutgoingRecord] = field(default_factory=list)  # in send order
    ingested: Counter[tuple[str, str]] = field(default_factory=Counter)  # events per (source topic, event type)
    dead_letters: list[DeadLetterReport] = field(default_factory=list)


class FeedActivityReporter:
    """What the ingest stage tells every ledger partition of its feeds (docs/RULES.md, section 12): per source
    micro-batch, one FeedActivity per feed whose locations spoke, with each location's latest event time. A location
    is reported again only once that time has moved REPORT_STEP_MS past the last report, so a busy feed costs a few
    records a minute, not one per batch. Pure apart from what it remembers; one per ingest consumer."""

    REPORT_STEP_MS = 10_000

    def __init__(self) -> None:
        self._reported: dict[tuple[str, str], int] = {}
        self._latest: dict[tuple[str, str], int] = {}  # this batch's movements

    def observe(self, topic: str, movement: StockMovement) -> None:
        feed = FEED_OF_SOURCE_TOPIC.get(topic)
        if feed is not None:
            key = (feed.value, movement.location)
            if movement.event_time > self._latest.get(key, -1):
                self._latest[key] = movement.event_time

    def activities(self) -> list[FeedActivity]:
        """The batch's FeedActivity events (none when nothing new is worth a record); forgets the batch."""
        due: dict[str, list[FeedSeen]] = {}
        for (feed, location), latest in sorted(self._latest.items()):
            reported = self._reported.get((feed, location))
            if reported is None or latest >= reported + self.REPORT_STEP_MS:
                self._reported[(feed, location)] = latest
                due.setdefault(feed, []).append(FeedSeen(location, latest))
        self._latest.clear()
        return [FeedActivity(FeedType(feed), max(item.last_event_time for item in seen), tuple(seen))
                for feed, seen in sorted(due.items())]


def ingest_micro_batch(
    messages: Iterable[SourceMessage], ingest_time: int, writer: LedgerWriter, batcher: LedgerBatcher,
    feeds: FeedActivityReporter | None = None,
) -> IngestedBatch:
    """The records one source micro-batch becomes, in send order. Movements and commands are batched per ledger
    partition; a policy change first flushes what came before it and is then written to every partition, so it
    keeps its place in each; the batcher is flushed at the end (it is empty on return), followed by the feeds'
    activity (`feeds`), written to every partition. Dead letters keep the original key, value and headers, plus
    the dead-letter headers (`dead_letter_headers`, MOVEMENT_INDEX_HEADER), cut to fit one record
    (`fit_dead_letter`)."""
    batch = IngestedBatch()
    records = batch.records
    ingested = batch.ingested
    ledger = LEDGER.name
    for message in messages:
        topic, partition, offset = message.topic, message.partition, message.offset
        result = writer.ingest(topic, partition, offset, message.value, ingest_time)
        for draft in result.entries:
            batcher.add(draft.partition, draft.sku, draft.record_name, draft.ledger_record,
                        (topic, partition, offset, draft.source_index), ingest_time, draft.body)
            if feeds is not None and draft.record_name == "StockMovement":
                feeds.observe(topic, draft.event)
        if result.appends:  # a policy change: everything before it goes first, in every partition
            for append in batcher.flush() + result.appends:
                records.append(OutgoingRecord(ledger, append.key, append.value, append.partition))
        for event_type in result.event_types:
            ingested[topic, event_type] += 1
        for dead in result.dead_letters:
            headers = dead_letter_headers(dead.reason, dead.error, topic, partition, offset, message.headers)
            if dead.movement_index is not None:
                headers.append((MOVEMENT_INDEX_HEADER, str(dead.movement_index).encode()))
            dead_key, dead_value, headers = fit_dead_letter(message.key, message.value, headers)
            records.append(OutgoingRecord(DEAD_LETTERS.name, dead_key, dead_value, None, headers))
            batch.dead_letters.append(
                DeadLetterReport(topic, partition, offset, dead.reason, dead.error, dead.movement_index)
            )
    for append in batcher.flush():
        records.append(OutgoingRecord(ledger, append.key, append.value, append.partition))
    for activity in feeds.activities() if feeds is not None else ():
        for append in writer.broadcast(writer.entry_value(activity, None, ingest_time)):
            records.append(OutgoingRecord(ledger, append.key, append.value, append.partition))
    return batch


def report_ingested(batch: IngestedBatch, observer: PipelineObserver) -> None:
    """Log every dead letter (WARNING, one line each) and feed the observer's counters."""
    for (topic, event_type), count in batch.ingested.items():
        observer.ingested(topic, event_type, count)
    for dead in batch.dead_letters:
        logger.warning("%s", dead.log_line())
        observer.dead_lettered("ingest", dead.source_topic, dead.reason)


# ------------------------------------------------------------------------------------------------ clock ticks
def register_clock_ticks(service: AvailabilityService) -> None:
    """The leader appends a ClockTick to every ledger partition every `tick_interval_seconds`, unless
    `clock_ticks` is off (a backfill). Registered whatever `stages` says: ticks belong to the ledger's order, and a
    worker of the availability stage alone still elects a leader."""

    app, settings = service.app, service.settings
    if not settings.clock_ticks:
        return
    writer = LedgerWriter(service.codec, settings.partitions, settings.max_source_record_bytes)

    async def append_clock_ticks() -> None:
        """Leader only: one ClockTick per ledger partition, with the leader's wall clock as event time."""
        now = _now_ms()
        value = writer.entry_value(ClockTick(event_time=now), None, now)
        sender = BatchSender(app)
        for append in writer.broadcast(value):
            await sender.send(LEDGER.name, append.key, append.value, append.partition)
        await sender.acks()

    app.timer(settings.tick_interval_seconds, on_leader=True, name="append_clock_ticks")(append_clock_ticks)
