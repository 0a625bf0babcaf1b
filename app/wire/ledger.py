"""Ledger records: how events are written to and read from the `ledger` topic, in one place for the ingest stage
(writing), the availability stage and replay (reading), and the tools and tests that read the ledger.

A ledger record holds one event (a LedgerEntry whose `entry` is the event: policy changes, clock ticks, and a
movement or command alone in its partition's share of a source micro-batch) or several (a LedgerEntry whose
`entry` is a LedgerEntryBatch: the movements and commands of one ledger partition from one source micro-batch, in
source order). Entry i of the record at offset o is at ledger position (o, i) (app.engine.positions), so a bulk
feed of N movements costs the availability stage a record per ledger partition instead of N.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, fields

from app.engine import EventDecodeError, PartitionEngine, event_from_record, event_to_record, reasons
from app.engine.constructors import trusted_constructor
from app.engine.events import (
    MovementType,
    ReservationAction,
    ReservationCommand,
    ReturnDisposition,
    StockBucket,
    StockMovement,
)
from app.engine.positions import EntryOrigin, ledger_position
from app.wire.avro_decoder import RecordObject
from app.wire.avro_encoder import EncodedRecord
from app.wire.serialization import AVRO_NAMESPACE, RecordSerde, SerializationError, UnencodableRecordError
from app.wire.topics import LEDGER_BROADCAST_KEY, ledger_key

LEDGER_BATCH_RECORD = f"{AVRO_NAMESPACE}.LedgerEntryBatch"
MAX_LEDGER_RECORD_BYTES = 512 * 1024
"""A batch record larger than this is split in two (producers refuse requests above about 1 MB)."""


@dataclass(frozen=True, slots=True)
class LedgerAppend:
    """One record to append: ledger partition, key and encoded LedgerEntry."""

    partition: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class LedgerItem:
    """One event of a ledger record, as Avro: `record_name` is the full name of its record, `record` the record as a
    dict, or None when the reader built the engine's `event` from the bytes instead (read_ledger_record;
    `item_record` gives the dict of either)."""

    index: int
    record_name: str
    record: dict | None
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    ingest_time: int
    batched: bool  # from a LedgerEntryBatch (its dead letter carries the entry alone, not the whole record)
    source_index: int | None = None  # the event's index inside its source record (None: not recorded)
    event: object | None = None  # the engine's event, when built from the bytes

    @property
    def origin(self) -> EntryOrigin:
        """What the engine needs of where the entry came from (app.engine.positions.EntryOrigin)."""
        if self.source_topic is None or self.source_offset is None or self.source_index is None:
            return EntryOrigin(None, None, self.ingest_time)
        return EntryOrigin(f"{self.source_topic}/{self.source_partition}",
                           ledger_position(self.source_offset, self.source_index), self.ingest_time)


_new_item = trusted_constructor(LedgerItem)


def ledger_items(value: dict) -> list[LedgerItem]:
    """The events of a decoded LedgerEntry, in ledger order."""
    entry_name, entry = value["entry"]
    ingest_time = value["ingest_time"]
    if entry_name == LEDGER_BATCH_RECORD:
        new_item = _new_item
        return [
            new_item(index, *item["entry"], item["source_topic"], item["source_partition"], item["source_offset"],
                     ingest_time, True, item.get("source_index"))
            for index, item in enumerate(entry["entries"])
        ]
    return [_new_item(0, entry_name, entry, value["source_topic"], value["source_partition"], value["source_offset"],
                      ingest_time, False, value.get("source_index"))]


def _items_with_events(value: dict) -> list[LedgerItem]:
    """ledger_items of a LedgerEntry decoded with its movements and commands built as events (`_EVENT_OBJECTS`)."""
    entry_name, entry = value["entry"]
    ingest_time = value["ingest_time"]
    if entry_name == LEDGER_BATCH_RECORD:  # a batch holds movements and commands only
        new_item = _new_item
        return [
            new_item(index, name, None, item["source_topic"], item["source_partition"], item["source_offset"],
                     ingest_time, True, item["source_index"], event)
            for index, item in enumerate(entry["entries"]) for name, event in (item["entry"],)
        ]
    if type(entry) is dict:  # a policy change, clock tick or feed activity
        return [_new_item(0, entry_name, entry, value["source_topic"], value["source_partition"],
                          value["source_offset"], ingest_time, False, value["source_index"])]
    return [_new_item(0, entry_name, None, value["source_topic"], value["source_partition"], value["source_offset"],
                      ingest_time, False, value["source_index"], entry)]


def ledger_events(value: dict, offset: int) -> list[tuple[int, object, EntryOrigin]]:
    """(ledger position, engine event, origin) of every entry of the decoded LedgerEntry at `offset`, in ledger
    order: for readers of a ledger the service wrote (tools and checks), so an entry the engine cannot read
    raises."""
    return [(ledger_position(offset, item.index), event_from_record(item.record_name, item.record), item.origin)
            for item in ledger_items(value)]


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A ledger record, or one entry of it, that could not be read: the dead-letter reason and the error."""

    reason: str
    error: str


_EVENT_OBJECTS = {
    f"{AVRO_NAMESPACE}.{kind.__name__}": RecordObject(tuple(field.name for field in fields(kind)),
                                                      trusted_constructor(kind))
    for kind in (StockMovement, ReservationCommand)
}
"""The records a ledger reader (and the ingest stage's `event_reader`) builds as the engine's events straight from
the bytes: what event_from_record makes of their dicts (tests/wire/test_ledger.py checks both agree), without the
dicts."""
_EVENT_ENUMS = {f"{AVRO_NAMESPACE}.{kind.__name__}": kind
                for kind in (MovementType, ReturnDisposition, StockBucket, ReservationAction)}
_event_decoders: weakref.WeakKeyDictionary[RecordSerde, Callable[[bytes], object | None]] = weakref.WeakKeyDictionary()


def _objects_decoder(serde: RecordSerde) -> Callable[[bytes], object | None]:
    decode = _event_decoders.get(serde)
    if decode is None:
        decode = _event_decoders[serde] = serde.object_decoder(_EVENT_OBJECTS, _EVENT_ENUMS)
    return decode


def _no_event(value: bytes) -> None:
    return None


def event_reader(serde: RecordSerde | None) -> Callable[[bytes], object | None]:
    """For a source topic of stock movements or reservation commands, a function that reads a record written with
    the serde's own schema straight into the engine's event, as read_ledger_record reads a ledger's entries (no dict;
    what event_from_record makes of the decoded dict), or gives None: another schema id, or bytes the compiled
    decoder refuses, which the caller decodes with `serde.decode`. For any other topic, or no serde (a topic the
    codec does not know), it always gives None."""
    record = None if serde is None else serde.topic.value_record
    if record is None or f"{AVRO_NAMESPACE}.{record}" not in _EVENT_OBJECTS:
        return _no_event
    return _objects_decoder(serde)


def read_ledger_record(serde: RecordSerde, value: bytes) -> list[LedgerItem] | Unreadable:
    """The entries of an encoded ledger record, or why it cannot be read. The movements and commands of the
    records written with the serde's own schema come with their events built (`LedgerItem.event`, no `record`);
    other records are read as dicts."""
    decode = _objects_decoder(serde)
    try:
        decoded = decode(value)
        if decoded is not None:
            return _items_with_events(decoded)
        return ledger_items(serde.decode(value).value)
    except (SerializationError, TypeError, KeyError, ValueError) as error:
        return Unreadable(reasons.UNDECODABLE_RECORD, f"{type(error).__name__}: {error}")


def item_event(item: LedgerItem):
    """The entry's engine event: as built by the reader, or made from its record (raises EventDecodeError)."""
    return item.event if item.event is not None else event_from_record(item.record_name, item.record)


def item_record(item: LedgerItem) -> dict:
    """The entry's record as a dict: as read, or for an entry read with its event built, the event's own record,
    which is the dict it was read from (the decoder built the event from exactly the record's fields)."""
    return item.record if item.record is not None else event_to_record(item.event)[1]


def apply_ledger_record(engine: PartitionEngine, items: list[LedgerItem], offset: int,
                        keep: Callable[[object], bool] | None = None
                        ) -> list[tuple[LedgerItem, object, list | Unreadable]]:
    """Apply the entries of the ledger record at `offset` to its partition's engine, in ledger order, as one record
    (PartitionEngine.begin_record: each availability key it changes is published once); for each entry,
    (item, event, outputs), or (item, None, Unreadable) for an entry the engine cannot read. The record's
    availability changes come after the outputs of its last applied entry. The one loop behind the availability
    stage, replay and reconciliation, so all apply a ledger the same way (byte-identical replay rests on it). With
    `keep`, only the entries it accepts are applied (replay --without-clock-ticks, reconcile as of a time)."""
    base_position = ledger_position(offset)
    apply = engine.apply
    results: list[tuple[LedgerItem, object, list | Unreadable]] = []
    last_applied: list | None = None
    engine.begin_record()
    for item in items:
        event = item.event
        if event is None:
            try:
                event = event_from_record(item.record_name, item.record)
            except (EventDecodeError, TypeError, KeyError, ValueError) as error:
                results.append((item, None, Unreadable(getattr(error, "reason", reasons.UNDECODABLE_RECORD),
                                                       f"{type(error).__name__}: {error}")))
                continue
        if keep is not None and not keep(event):
            continue
        last_applied = apply(event, base_position + item.index, item.origin)
        results.append((item, event, last_applied))
    changes = engine.end_record()
    if changes:
        last_applied.extend(changes)  # there are changes only if an entry was applied
    return results


def _as_dict(record: object) -> dict:
    """A batcher entry's record as a dict: as given, or the record of the event it was read as."""
    return record if type(record) is dict else event_to_record(record)[1]


def entry_record(item: LedgerItem) -> dict:
    """A LedgerEntry holding `item` alone (the dead letter of one entry of a batch)."""
    return {
        "entry": (item.record_name, item_record(item)),
        "source_topic": item.source_topic,
        "source_partition": item.source_partition,
        "source_offset": item.source_offset,
        "ingest_time": item.ingest_time,
        "source_index": item.source_index,
    }


def item_key(item: LedgerItem) -> bytes:
    """The ledger key the entry would have on its own: its SKU, or empty for partition-wide entries."""
    sku = item_record(item).get("sku")
    return (ledger_key(sku) if isinstance(sku, str) else LEDGER_BROADCAST_KEY).encode()


class LedgerBatcher:
    """Collects the movements and commands of one source micro-batch per ledger partition, in arrival order, and
    turns each partition's share into ledger records: one LedgerEntryBatch of up to `max_entries` entries (a plain
    LedgerEntry keyed by SKU for a single entry). `max_entries=1` writes one record per event. A partition's record
    is encoded as soon as it is full, so a micro-batch of bulk source records (200 movements each) holds encoded
    records, not a decoded dict per movement: ~1 KiB less per event; the records and their order within each
    partition are the same as if all were encoded at the flush.

    An event given with its `body` (its record's Avro bytes as the source wrote them, with the schema the ledger
    writes that record with) goes into the ledger record as those bytes, not encoded again from its decoded form:
    the ingest stage's ledger encoding was mostly that (docs/PERFORMANCE.md, "The ingest stage, step by step")."""

    def __init__(self, serde: RecordSerde, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._serde = serde
        self._max_entries = max_entries
        self._pending: dict[int, list[tuple[str, str, object, tuple[str, int, int, int], bytes | None]]] = {}
        self._full: list[LedgerAppend] = []  # records of full partitions, encoded as they filled
        self._ingest_time = 0

    def __bool__(self) -> bool:
        return bool(self._pending or self._full)

    def add(self, partition: int, sku: str, record_name: str, record: object, source: tuple[str, int, int, int],
            ingest_time: int, body: bytes | None = None) -> None:
        """`record`: the entry's Avro record as a dict, or the engine's event it was read as (made a dict only if
        the record is encoded from its decoded form); `source`: (topic, partition, offset, index of the event inside
        the source record); `body`: the record's Avro bytes, written with the ledger's schema of `record_name`, when
        the caller has them (class docstring)."""
        self._ingest_time = ingest_time
        entries = self._pending.get(partition)
        if entries is None:
            entries = self._pending[partition] = []
        entries.append((sku, f"{AVRO_NAMESPACE}.{record_name}", record, source, body))
        if len(entries) >= self._max_entries:
            del self._pending[partition]
            self._full.extend(self._records(partition, entries))

    def flush(self) -> list[LedgerAppend]:
        """The records of everything added since the last flush: the full ones in the order they filled, then the
        rest partition by partition (in ascending order). Each partition's records come in arrival order."""
        appends = self._full
        for partition in sorted(self._pending):
            appends.extend(self._records(partition, self._pending[partition]))
        self._pending.clear()
        self._full = []
        return appends

    def _records(self, partition: int, entries: list) -> list[LedgerAppend]:
        try:
            return self._encoded(partition, entries, True)
        except UnencodableRecordError:  # the record's bytes refused, or something else: as if none were given
            return self._encoded(partition, entries, False)

    def _encoded(self, partition: int, entries: list, bodies: bool) -> list[LedgerAppend]:
        ingest_time = self._ingest_time
        if len(entries) == 1:
            sku, name, record, (topic, source_partition, offset, index), body = entries[0]
            written = _as_dict(record) if body is None or not bodies else EncodedRecord(body)
            value = self._serde.encode({"entry": (name, written), "source_topic": topic,
                                        "source_partition": source_partition, "source_offset": offset,
                                        "ingest_time": ingest_time, "source_index": index})
            return [LedgerAppend(partition, ledger_key(sku).encode(), value)]
        value = self._serde.encode({
            "entry": (LEDGER_BATCH_RECORD, {"entries": [
                {"entry": (name, _as_dict(record) if body is None or not bodies else EncodedRecord(body)),
                 "source_topic": topic,
                 "source_partition": source_partition, "source_offset": offset, "source_index": index}
                for _, name, record, (topic, source_partition, offset, index), body in entries
            ]}),
            "source_topic": None, "source_partition": None, "source_offset": None, "ingest_time": ingest_time,
            "source_index": None,
        })
        if len(value) > MAX_LEDGER_RECORD_BYTES:
            half = len(entries) // 2
            return self._encoded(partition, entries[:half], bodies) + self._encoded(partition, entries[half:], bodies)
        return [LedgerAppend(partition, LEDGER_BROADCAST_KEY.encode(), value)]

