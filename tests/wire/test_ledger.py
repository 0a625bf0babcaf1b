"""Ledger records (app/wire/ledger.py): batches per ledger partition, positions, and the reading side."""

from __future__ import annotations

import fastavro
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.engine import event_to_record
from app.engine.events import event_from_record
from app.engine.positions import POSITION_STRIDE, EntryOrigin, ledger_position, split_position
from app.settings import Settings
from app.wire.dead_letters import ledger_dead_letter
from app.wire.ledger import (
    LEDGER_BATCH_RECORD,
    MAX_LEDGER_RECORD_BYTES,
    LedgerBatcher,
    entry_record,
    item_key,
    item_record,
    ledger_events,
    ledger_items,
    read_ledger_record,
)
from app.wire.serialization import HEADER_SIZE, AvroCodec, full_name
from app.wire.topics import LEDGER, RESERVATION_COMMANDS, STORE_TRANSACTIONS, ledger_key
from tests.engine.factories import receipt, reserve
from tests.wire.test_avro_encoder import values_for

LEDGER_RECORDS = values_for(fastavro.parse_schema(AvroCodec(Settings(_env_file=None)).schemas.expanded(
    LEDGER.value_record), named_schemas={}))


@pytest.fixture(scope="module")
def serde():
    return AvroCodec(Settings(_env_file=None)).serde(LEDGER)


def movement(n: int, sku: str = "SKU1", reason: str | None = None):
    event = receipt(1, "S1", sku=sku, event_id=f"m{n}")
    name, record = event_to_record(event)
    if reason is not None:
        record = {**record, "reason": reason}
    return name, record


def decode(serde, append) -> list:
    return ledger_items(serde.decode(append.value).value)


def test_entries_of_one_partition_become_one_batch_record_in_arrival_order(serde):
    batcher = LedgerBatcher(serde, max_entries=500)
    for n in range(5):
        batcher.add(n % 2, f"SKU{n}", *movement(n, f"SKU{n}"), ("source.stock-movements", 0, 100 + n, 0), 7)
    appends = batcher.flush()
    assert [append.partition for append in appends] == [0, 1]
    assert all(append.key == b"" for append in appends)  # a batch spans SKUs: partition-wide key
    items = decode(serde, appends[0])
    assert [(item.index, item.record["event_id"], item.source_offset) for item in items] == [
        (0, "m0", 100), (1, "m2", 102), (2, "m4", 104)]
    assert [item.origin for item in items] == [
        EntryOrigin("source.stock-movements/0", ledger_position(100 + n), 7) for n in (0, 2, 4)]
    assert all(item.batched and item.ingest_time == 7 for item in items)
    assert not batcher and batcher.flush() == []


def test_a_single_entry_is_a_plain_ledger_entry_keyed_by_its_sku(serde):
    batcher = LedgerBatcher(serde, max_entries=500)
    batcher.add(3, "SKU-A", *movement(1, "SKU-A"), ("source.store-transactions", 2, 9, 0), 5)
    [append] = batcher.flush()
    assert (append.partition, append.key) == (3, ledger_key("SKU-A").encode())
    decoded = serde.decode(append.value).value
    assert decoded["entry"][0] == full_name("StockMovement") and decoded["source_offset"] == 9
    [item] = ledger_items(decoded)
    assert (item.index, item.batched, item.source_topic) == (0, False, "source.store-transactions")


def test_ledger_events_are_the_engine_events_at_their_positions(serde):
    batcher = LedgerBatcher(serde, max_entries=500)
    for n in range(3):
        batcher.add(0, f"SKU{n}", *movement(n, f"SKU{n}"), ("source.stock-movements", 0, n, 0), 7)
    [append] = batcher.flush()
    events = ledger_events(serde.decode(append.value).value, offset=12)
    assert [position for position, _, _ in events] == [ledger_position(12, index) for index in range(3)]
    assert [event for _, event, _ in events] == [receipt(1, "S1", sku=f"SKU{n}", event_id=f"m{n}") for n in range(3)]
    assert [origin.source_position for _, _, origin in events] == [ledger_position(n) for n in range(3)]


def test_max_entries_cuts_a_partition_into_several_records_and_one_means_a_record_per_event(serde):
    batcher = LedgerBatcher(serde, max_entries=2)
    for n in range(5):
        batcher.add(0, "SKU1", *movement(n), ("source.stock-movements", 0, n, 0), 1)
    sizes = [len(decode(serde, append)) for append in batcher.flush()]
    assert sizes == [2, 2, 1]
    single = LedgerBatcher(serde, max_entries=1)
    for n in range(3):
        single.add(0, "SKU1", *movement(n), ("source.stock-movements", 0, n, 0), 1)
    assert [serde.decode(a.value).value["entry"][0] for a in single.flush()] == [full_name("StockMovement")] * 3


@hypothesis_settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=40), st.integers(1, 6), st.integers(0, 40))
def test_every_partition_gets_its_entries_in_arrival_order_cut_every_max_entries(serde, partitions, max_entries,
                                                                                    policy_at):
    """Whenever full records are encoded (a partition's as it fills), each partition's records are its entries in
    arrival order, cut every `max_entries`, and a flush (a policy change's) ends every partition's current record."""
    segments = [list(enumerate(partitions))[:policy_at], list(enumerate(partitions))[policy_at:]]
    batcher = LedgerBatcher(serde, max_entries=max_entries)
    records: dict[int, list[list[str]]] = {}
    expected: dict[int, list[list[str]]] = {}
    for segment in segments:
        for n, partition in segment:
            batcher.add(partition, "SKU1", *movement(n), ("source.stock-movements", 0, n, 0), 1)
        for append in batcher.flush():
            records.setdefault(append.partition, []).append([item.record["event_id"] for item in decode(serde, append)])
        assert not batcher
        for partition in sorted({partition for _, partition in segment}):
            ids = [f"m{n}" for n, p in segment if p == partition]
            expected.setdefault(partition, []).extend(
                ids[start:start + max_entries] for start in range(0, len(ids), max_entries))
    assert records == expected


def test_a_full_record_is_encoded_when_it_fills_not_kept_decoded_until_the_flush(serde):
    batcher = LedgerBatcher(serde, max_entries=2)
    first, second = movement(0), movement(1)
    batcher.add(0, "SKU1", *first, ("source.stock-movements", 0, 0, 0), 1)
    batcher.add(0, "SKU1", *second, ("source.stock-movements", 0, 1, 0), 1)
    second[1]["event_id"] = "changed after the record filled"
    assert [item.record["event_id"] for item in decode(serde, batcher.flush()[0])] == ["m0", "m1"]


def test_a_batch_above_the_record_size_limit_is_split_in_order(serde):
    batcher = LedgerBatcher(serde, max_entries=100_000)
    reason = "x" * 20_000
    count = MAX_LEDGER_RECORD_BYTES // 20_000 * 3
    for n in range(count):
        batcher.add(0, "SKU1", *movement(n, reason=reason), ("source.stock-movements", 0, n, 0), 1)
    appends = batcher.flush()
    assert len(appends) > 1 and all(len(append.value) <= MAX_LEDGER_RECORD_BYTES for append in appends)
    ids = [item.record["event_id"] for append in appends for item in decode(serde, append)]
    assert ids == [f"m{n}" for n in range(count)]


def test_the_dead_letter_of_a_batch_entry_is_that_entry_alone(serde):
    batcher = LedgerBatcher(serde, max_entries=500)
    batcher.add(0, "SKU-A", *movement(1, "SKU-A"), ("source.stock-movements", 0, 1, 0), 4)
    name, record = event_to_record(reserve("r1", 2, sku="SKU-B", event_id="c1"))
    batcher.add(0, "SKU-B", name, record, ("source.reservation-commands", 1, 8, 0), 4)
    [append] = batcher.flush()
    assert serde.decode(append.value).value["entry"][0] == LEDGER_BATCH_RECORD
    second = decode(serde, append)[1]
    alone = serde.decode(serde.encode(entry_record(second))).value
    assert alone == {"entry": (full_name("ReservationCommand"), record), "source_topic": "source.reservation-commands",
                     "source_partition": 1, "source_offset": 8, "ingest_time": 4, "source_index": 0}
    assert item_key(second) == ledger_key("SKU-B").encode()


def test_the_entries_of_a_bulk_record_keep_their_index_inside_it(serde):
    """Movements of one StockMovementBatch share its offset; their index tells a repeat from the next movement."""
    batcher = LedgerBatcher(serde, max_entries=500)
    for index in (0, 2, 5):  # movements 1, 3 and 4 went to another partition (or were dead-lettered)
        batcher.add(0, "SKU1", *movement(index), ("source.stock-movements", 3, 40, index), 1)
    items = decode(serde, batcher.flush()[0])
    assert [item.origin.source_position for item in items] == [ledger_position(40, index) for index in (0, 2, 5)]
    assert {item.origin.source for item in items} == {"source.stock-movements/3"}


def test_records_written_before_source_index_existed_have_no_source_position():
    old = {"entry": (full_name("StockMovement"), event_to_record(receipt(1))[1]), "source_topic": "t",
           "source_partition": 0, "source_offset": 5, "ingest_time": 9}
    [item] = ledger_items(old)
    assert item.origin == EntryOrigin(None, None, 9)  # the engine then relies on event ids alone


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**62), st.integers(0, POSITION_STRIDE - 1), st.integers(0, 2**62), st.integers(0, POSITION_STRIDE - 1))
def test_positions_order_as_offset_then_index_and_split_back(offset, index, other_offset, other_index):
    position, other = ledger_position(offset, index), ledger_position(other_offset, other_index)
    assert split_position(position) == (offset, index)
    assert (position < other) == ((offset, index) < (other_offset, other_index))


SOURCE_CODEC = AvroCodec(Settings(_env_file=None))


def body_of(record_name: str, record: dict) -> bytes:
    """The record's Avro bytes, as a source writes it with the schema the ledger writes it with."""
    topic = {"StockMovement": STORE_TRANSACTIONS, "ReservationCommand": RESERVATION_COMMANDS}[record_name]
    return SOURCE_CODEC.encode(topic, record)[HEADER_SIZE:]


@given(counts=st.lists(st.integers(1, 4), min_size=1, max_size=6), with_bodies=st.lists(st.booleans(), min_size=24,
                                                                                            max_size=24))
@hypothesis_settings(max_examples=40, deadline=None)
def test_an_entry_given_its_source_bytes_is_written_as_its_decoded_record_is(serde, counts, with_bodies):
    """Entries given their bodies (and their events in place of the dicts), some or all, single or batched: the same
    ledger records as from the records."""
    entries = []
    for partition, count in enumerate(counts):
        for n in range(count):
            if n % 2:
                name, record = event_to_record(reserve("r%d" % n, 2, sku=f"SKU{partition}", event_id=f"c{n}"))
            else:
                name, record = movement(n, f"SKU{partition}")
            entries.append((partition, f"SKU{partition}", name, record, ("source.stock-movements", 0, n, 0)))
    plain, spliced = LedgerBatcher(serde, 3), LedgerBatcher(serde, 3)
    for (partition, sku, name, record, source), given_body in zip(entries, with_bodies):
        plain.add(partition, sku, name, record, source, 9)
        if given_body:  # as the ingest stage gives a record it read straight into its event
            spliced.add(partition, sku, name, event_from_record(name, record), source, 9, body_of(name, record))
        else:
            spliced.add(partition, sku, name, record, source, 9)
    assert spliced.flush() == plain.flush()


def test_source_bytes_are_not_encoded_again_so_the_ledger_keeps_them_as_the_source_wrote_them(serde):
    """Avro lets a writer spend more bytes on a varint than it needs; the ledger keeps the source's own bytes, and
    its entry reads as the record they encode."""
    name, record = movement(1)
    canonical = body_of(name, record)
    assert canonical[0] == 2 * len("m1")  # the event id's length comes first
    padded = bytes([canonical[0] | 0x80, 0]) + canonical[1:]  # the same length in two bytes
    batcher = LedgerBatcher(serde, 10)
    batcher.add(0, "SKU1", name, record, ("source.stock-movements", 0, 1, 0), 9, padded)
    (append,) = batcher.flush()
    assert padded in append.value and canonical not in append.value
    (item,) = decode(serde, append)
    assert item.record == record


def test_an_encoder_that_cannot_take_source_bytes_gets_the_decoded_records(serde, monkeypatch):
    """fastavro (the codec's encoder for a schema the compiled ones cannot do) refuses an EncodedRecord: the batcher
    then writes the records themselves, the same bytes, also for an entry given as the event it was read as (the
    ingest stage's own-schema records: their dict is made from the event then)."""
    name, record = movement(1)
    expected = LedgerBatcher(serde, 10)
    expected.add(0, "SKU1", name, record, ("source.stock-movements", 0, 1, 0), 9)
    expected = expected.flush()
    monkeypatch.setattr(serde, "_encoder", None)
    for entry in (record, event_from_record(name, record)):
        batcher = LedgerBatcher(serde, 10)
        batcher.add(0, "SKU1", name, entry, ("source.stock-movements", 0, 1, 0), 9, b"\xff not a record")
        assert batcher.flush() == expected


def test_the_reader_builds_the_events_event_from_record_makes_of_the_dicts(serde):
    """read_ledger_record builds movements and commands straight from the bytes: the same events, origins and
    items as the dicts give, and each event's record is the dict it was read from (a dead letter's); policies,
    clock ticks and feed activity stay dicts."""
    from tests.benchmarks.test_ledger_projection import ledger_values

    built = as_dicts = 0
    for value in ledger_values(serde, 3_000, seed=7):
        expected = ledger_items(serde.decode(value).value)
        items = read_ledger_record(serde, value)
        assert len(items) == len(expected)
        for item, plain in zip(items, expected):
            assert (item.index, item.record_name, item.origin, item.batched, item.ingest_time) == \
                   (plain.index, plain.record_name, plain.origin, plain.batched, plain.ingest_time)
            if item.record is None:
                built += 1
                assert item.event == event_from_record(plain.record_name, plain.record)
                assert item_record(item) == plain.record
            else:
                as_dicts += 1
                assert (item.record, item.event) == (plain.record, None)
    assert built > 2_900 and as_dicts > 8


def test_the_dead_letter_of_an_entry_read_with_its_event_is_the_one_of_its_dict(serde):
    batcher = LedgerBatcher(serde, max_entries=500)
    for n in range(3):
        batcher.add(0, f"SKU{n}", *movement(n, f"SKU{n}", reason="r" * n), ("source.stock-movements", 0, n, 0), 4)
    [append] = batcher.flush()
    for item, plain in zip(read_ledger_record(serde, append.value), ledger_items(serde.decode(append.value).value)):
        assert item.record is None and item.event is not None
        letters = [ledger_dead_letter(serde, "REASON", "error", 0, 12, b"", append.value, [], entry)
                   for entry in (item, plain)]
        assert letters[0] == letters[1]
        key, value, headers = letters[0]
        assert key == ledger_key(plain.record["sku"]).encode()
        assert serde.decode(value).value["entry"] == (plain.record_name, plain.record)


def test_records_of_another_schema_id_are_read_as_dicts(serde):
    batcher = LedgerBatcher(serde, max_entries=500)
    batcher.add(0, "SKU1", *movement(1), ("source.stock-movements", 0, 1, 0), 4)
    [append] = batcher.flush()
    other = AvroCodec(Settings(_env_file=None)).serde(LEDGER)
    other.schema_id += 1  # a later version of the schema, say: the compiled reader is for its own id only
    value = append.value[:1] + other.schema_id.to_bytes(4, "big") + append.value[5:]
    other._plans[other.schema_id] = other._plans[serde.schema_id]
    [item] = read_ledger_record(other, value)
    assert item.event is None and item.record == movement(1)[1]


@hypothesis_settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_ledger_record_reads_the_same_both_ways(serde, data):
    """Records of every shape the ledger schema allows (random strings, optional fields, large numbers)."""
    value = serde.encode(data.draw(LEDGER_RECORDS))
    expected = ledger_items(serde.decode(value).value)
    items = read_ledger_record(serde, value)
    assert [item_record(item) for item in items] == [plain.record for plain in expected]
    assert [item.event for item in items if item.record is None] == [
        event_from_record(plain.record_name, plain.record) for item, plain in zip(items, expected)
        if item.record is None]
