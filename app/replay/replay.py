"""Replay: the ledger through the engine again, on fresh state, into a namespace of output topics of its own.

Faust is not needed: a consumer of our own reads the ledger partitions (assigned explicitly: no group, nothing
committed, so it runs beside the live service), one PartitionEngine per ledger partition applies the entries in
offset order on fresh state (app/replay/applying.py), and a producer writes the outputs exactly as the availability
stage does (same topic per output, same key, same bytes, partitioned by key with murmur2 like the live service).

Equivalence: a replay from the EARLIEST offset gives, per key, the records the live service published (same
versions, same bytes). A replay from a timestamp or from given offsets starts from fresh state at that point: no
stock, no reservations, no policy, version 1 again. It is for audits of what a stretch of the ledger does on its
own; it equals the live output only if the ledger before that point holds nothing (docs/REPLAY.md).
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, Producer

from app.engine import ChannelAvailability, ClockTick, InventoryException, Rejection, ReservationDecision
from app.errors import UserError
from app.kafka.client_config import client_config, consumer_for
from app.kafka.producing import produce_or_wait
from app.replay.applying import LedgerApplier
from app.replay.namespace import LIVE, create_namespace_topics, output_topics
from app.replay.reading import PartitionsReader, offsets_at_time, partition_count
from app.service.gc_pauses import frozen_survivors
from app.wire.dead_letters import ledger_dead_letter
from app.wire.ledger import LedgerItem
from app.wire.output_encoders import availability_encoder
from app.wire.serialization import AvroCodec
from app.wire.topics import DEAD_LETTERS, INVENTORY_EXCEPTIONS, LEDGER, RESERVATION_DECISIONS, availability_topic

if TYPE_CHECKING:
    from app.settings import Settings


class ReplayError(UserError):
    """A replay cannot start or could not deliver its records; the message says what to change."""


@dataclass(frozen=True)
class ReplayOptions:
    namespace: str = "replay"  # output topics get the suffix `replay-<namespace>`; LIVE: the live topics
    confirmed_live: bool = False  # writing the live topics needs this as well as namespace == LIVE
    from_time_ms: int | None = None  # start each partition at the first record at or after this time
    from_offsets: dict[int, int] | None = None  # replay only these partitions, from these offsets
    idle_seconds: float = 2.0  # quiet time at the end of the ledger that counts as "caught up"
    clock_ticks: bool = True  # False: skip the ledger's clock ticks (a backfill's clocks follow event times alone)
    processes: int = 1  # replay processes, the ledger partitions shared among them (app.replay.parallel)

    @property
    def from_earliest(self) -> bool:
        return self.from_time_ms is None and self.from_offsets is None


@dataclass
class ReplaySummary:
    namespace: str
    from_earliest: bool
    events: int = 0  # ledger entries applied (a batch record holds many)
    ledger_records: int = 0
    records: Counter = field(default_factory=Counter)  # output topic -> records written
    rejections: Counter = field(default_factory=Counter)  # reason -> count (each one also a dead letter)
    partitions: dict[int, tuple[int, int]] = field(default_factory=dict)  # partition -> (first, last offset)
    seconds: float = 0.0  # the whole run, the quiet period at the end included
    busy_seconds: float = 0.0  # until the last entry was applied and every record acknowledged
    processes: int = 1  # that replayed the partitions (fewer than asked when there are fewer partitions)
    peak_rss_mib: float = 0.0  # the largest resident set of each of them, added up
    peak_disk_mib: float = 0.0  # the most the seen ids and finished reservations of each took on disk, added up

    @property
    def events_per_second(self) -> float:
        seconds = self.busy_seconds or self.seconds
        return self.events / seconds if seconds > 0 else 0.0


ProgressCallback = Callable[[int, int, int], None]
"""(ledger records read, records expected, events applied), called about twice a second."""


def parse_offsets(text: str) -> dict[int, int]:
    """`0:120,3:0` -> {0: 120, 3: 0}."""
    offsets: dict[int, int] = {}
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        partition, separator, offset = part.partition(":")
        if not separator or not partition.strip().isdigit() or not offset.strip().isdigit():
            raise ValueError(f"{part!r} is not PARTITION:OFFSET (e.g. 0:120,3:0)")
        offsets[int(partition)] = int(offset)
    if not offsets:
        raise ValueError("no PARTITION:OFFSET given")
    return offsets


def output_producer(bootstrap_servers: str, settings: Settings | None = None,
                    on_delivery: Callable | None = None) -> Producer:
    """The replay's producer; `settings` supply the client security options (none: a plaintext connection);
    `on_delivery(error, message)` is called for each record that could not be delivered."""
    options: dict = {
        # Kafka's default partitioner (murmur2 of the key), as the live service's producer uses: each key lands on
        # the same partition number as in the live topic.
        "partitioner": "murmur2_random",
        "linger.ms": 50,
        "batch.num.messages": 10_000,
        "batch.size": 4 * 1024 * 1024,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1024 * 1024,
        # Per-key order must survive retries: one request in flight per partition leader keeps it without
        # idempotence (which the embedded broker does not offer).
        "max.in.flight.requests.per.connection": 1,
        "acks": "all",
        "delivery.report.only.error": True,  # a callback per failed record only: they are what we count
    }
    if on_delivery is not None:
        options["on_delivery"] = on_delivery  # set once here: a callback given with each record costs a third more
    if settings is None:
        return Producer({"bootstrap.servers": bootstrap_servers, **options})
    return Producer(client_config(settings, bootstrap_servers, **options))


class Replayer:
    """One replay pass. `run()` returns the summary; it raises ReplayError if records could not be delivered."""

    def __init__(self, settings: Settings, bootstrap_servers: str, options: ReplayOptions,
                 codec: AvroCodec | None = None, on_progress: ProgressCallback | None = None,
                 partitions: Collection[int] | None = None) -> None:
        """`partitions`: only these ledger partitions (one process's share of a replay with several), into topics
        that exist already."""
        if options.namespace == LIVE and not options.confirmed_live:
            raise ReplayError("writing the live topics needs confirmation; pass --yes with --to-live")
        if options.from_time_ms is not None and options.from_offsets is not None:
            raise ReplayError("give a start time or start offsets, not both")
        if options.processes < 1:
            raise ReplayError(f"--processes must be at least 1, not {options.processes}")
        self.partitions = None if partitions is None else frozenset(partitions)
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.options = options
        self.codec = codec or AvroCodec(settings)
        self.on_progress = on_progress
        self.topics = output_topics(settings, options.namespace)
        self._delivery_errors: list[str] = []
        self._before_start: set[int] = set()  # partitions still before --from-time
        self._ledger_serde = self.codec.serde(LEDGER)
        self._applier = LedgerApplier(self._ledger_serde, frozenset(settings.channels), settings.engine_limits,
                                      keep=None if options.clock_ticks else _not_a_clock_tick, kept_on_disk=True)
        self._availability = {  # channel -> (output topic, encoder of the live topic's schema)
            channel: (self.topics[availability_topic(channel).name].name,
                      availability_encoder(self.codec.serde(availability_topic(channel))))
            for channel in settings.channels
        }
        self._decisions = (self.topics[RESERVATION_DECISIONS.name].name, self.codec.serde(RESERVATION_DECISIONS).encode)
        self._exceptions = (self.topics[INVENTORY_EXCEPTIONS.name].name, self.codec.serde(INVENTORY_EXCEPTIONS).encode)

    def _starts(self) -> dict[int, int] | None:
        """Partition -> first offset to read (None: every partition from the earliest)."""
        starts = self._all_starts()
        if self.partitions is None:
            return starts
        if starts is None:
            return {partition: OFFSET_BEGINNING for partition in sorted(self.partitions)}
        return {partition: offset for partition, offset in starts.items() if partition in self.partitions}

    def _all_starts(self) -> dict[int, int] | None:
        if self.options.from_offsets is not None:
            return dict(self.options.from_offsets)
        if self.options.from_time_ms is None:
            return None
        consumer = consumer_for(self.bootstrap_servers, self.settings)
        try:
            count = partition_count(consumer, LEDGER.name)
            return offsets_at_time(consumer, LEDGER.name, count, self.options.from_time_ms)
        finally:
            consumer.close()

    def ledger_partitions(self) -> list[int]:
        """The ledger partitions this replay reads."""
        if self.options.from_offsets is not None:
            return sorted(self.options.from_offsets)
        consumer = consumer_for(self.bootstrap_servers, self.settings)
        try:
            return list(range(partition_count(consumer, LEDGER.name)))
        finally:
            consumer.close()

    def _on_delivery(self, error, message) -> None:
        if error is not None and len(self._delivery_errors) < 10:
            self._delivery_errors.append(f"{message.topic()}: {error}")

    def run(self) -> ReplaySummary:
        """The replay in this process: every partition (or this one's share). With `options.processes` above 1,
        `app.replay.parallel.replay` runs it."""
        if self.partitions is None:
            if self.options.processes > 1:
                raise ReplayError(f"a Replayer replays in its own process; for {self.options.processes} processes "
                                  "use app.replay.replay()")
            create_namespace_topics(self.settings, self.bootstrap_servers, self.topics.values())
        try:
            with frozen_survivors():  # its states, all live objects, are not the collector's to scan again and again
                summary = self._run()
        finally:
            self._applier.close()
        summary.peak_disk_mib = round(self._applier.peak_disk_bytes / 2**20, 1)
        return summary

    def _run(self) -> ReplaySummary:
        summary = ReplaySummary(self.options.namespace, self.options.from_earliest)
        started = time.monotonic()
        producer = output_producer(self.bootstrap_servers, self.settings, self._on_delivery)
        starts = self._starts()
        if starts == {}:  # from a time after the last record: nothing to replay
            summary.seconds = time.monotonic() - started
            summary.peak_rss_mib = peak_rss_mib()
            return summary
        with PartitionsReader(self.bootstrap_servers, LEDGER.name, starts, self.options.idle_seconds,
                              settings=self.settings) as reader:
            # With a start time, each partition's records before it are skipped here too, up to the first at or
            # after it: some brokers answer a time lookup with an earlier offset.
            self._before_start = set(reader.starts) if self.options.from_time_ms is not None else set()
            expected = reader.expected_records
            self._report(summary, expected, force=True)
            last_applied = started
            for batch in reader.batches():
                self._apply_batch(batch, producer, summary)
                producer.poll(0)
                last_applied = time.monotonic()
                self._report(summary, expected)
        flush_started = time.monotonic()
        remaining = producer.flush(120)
        summary.seconds = time.monotonic() - started
        summary.busy_seconds = last_applied - started + time.monotonic() - flush_started
        summary.peak_rss_mib = peak_rss_mib()
        self._report(summary, summary.ledger_records, force=True)
        if remaining or self._delivery_errors:
            raise ReplayError(f"{remaining} records not delivered; first errors: {'; '.join(self._delivery_errors)}")
        return summary

    _last_report = 0.0

    def _report(self, summary: ReplaySummary, expected: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.on_progress is not None and (force or now - self._last_report >= 0.5):
            self._last_report = now
            self.on_progress(summary.ledger_records, max(expected, summary.ledger_records), summary.events)

    def _apply_batch(self, batch: list, producer: Producer, summary: ReplaySummary) -> None:
        applier = self._applier
        produce = self._produce(producer)
        availability = self._availability
        decisions_topic, decisions_encode = self._decisions
        exceptions_topic, exceptions_encode = self._exceptions
        records = summary.records
        before_start = self._before_start
        for message in batch:
            partition, offset = message.partition(), message.offset()
            if partition in before_start:
                if message.timestamp()[1] < self.options.from_time_ms:
                    continue  # the broker started us early (Tansu ignores the time in ListOffsets)
                before_start.discard(partition)
            if partition not in summary.partitions:
                summary.partitions[partition] = (offset, offset)
            summary.ledger_records += 1
            for item, output in applier.apply(partition, offset, message.value()):
                kind = type(output)
                if kind is ChannelAvailability:
                    topic, encode = availability[output.channel]
                    produce(topic, encode(output), output.key.encode())
                    records[topic] += 1
                elif kind is ReservationDecision:
                    produce(decisions_topic, decisions_encode(output.to_record()), output.key.encode())
                    records[decisions_topic] += 1
                elif kind is Rejection:
                    self._dead_letter(produce, message, item, output.reason, output.detail, summary)
                elif kind is InventoryException:
                    produce(exceptions_topic, exceptions_encode(output.to_record()), output.key.encode())
                    records[exceptions_topic] += 1
            summary.events = applier.events
            summary.partitions[partition] = (summary.partitions[partition][0], offset)

    def _dead_letter(self, produce, message, item: LedgerItem | None, reason: str, error: str,
                     summary: ReplaySummary) -> None:
        """As the availability stage dead-letters it: the record, or one entry of a batch record on its own."""
        key, value, headers = ledger_dead_letter(self._ledger_serde, reason, error, message.partition(),
                                                 message.offset(), message.key(), message.value(),
                                                 message.headers(), item)
        topic = self.topics[DEAD_LETTERS.name].name
        produce(topic, value, key, headers)
        summary.records[topic] += 1
        summary.rejections[reason] += 1

    def _produce(self, producer: Producer):
        def produce(topic: str, value: bytes, key: bytes | None, headers=None) -> None:
            # failed deliveries reach the producer's own callback (output_producer): none is passed per record
            produce_or_wait(producer, topic, value, key, headers=headers)

        return produce


def peak_rss_mib() -> float:
    """This process's largest resident set so far."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _not_a_clock_tick(event) -> bool:
    return type(event) is not ClockTick
