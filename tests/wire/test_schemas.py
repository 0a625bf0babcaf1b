"""Every .avsc parses, is documented, and round-trips representative records through fastavro."""

import io
import json

import fastavro
import pytest

from app.wire.serialization import AVRO_NAMESPACE, DEFAULT_SCHEMA_DIR, full_name, load_schema_library
from app.wire.topics import FIXED_TOPICS, availability_topic

STOCK_MOVEMENT_SALE = {
    "event_id": "pos-1.000017",
    "sku": "SKU-1001",
    "location": "store-042",
    "event_time": 1_700_000_000_000,
    "source": "pos-store-042",
    "type": "SALE",
    "quantity": 2,
    "delta": None,
    "reason": None,
    "disposition": None,
    "counterparty_location": None,
    "from_bucket": None,
    "to_bucket": None,
}
STOCK_MOVEMENT_RETURN = {**STOCK_MOVEMENT_SALE, "type": "RETURN", "disposition": "QUARANTINE"}
STOCK_MOVEMENT_ADJUSTMENT = {**STOCK_MOVEMENT_SALE, "type": "ADJUSTMENT", "quantity": None, "delta": -3, "reason": "X"}
STOCK_MOVEMENT_TRANSFER = {**STOCK_MOVEMENT_SALE, "type": "TRANSFER_SHIPPED", "counterparty_location": "dc-1"}
STOCK_MOVEMENT_BUCKET_MOVE = {
    **STOCK_MOVEMENT_SALE,
    "type": "BUCKET_MOVE",
    "quantity": 1,
    "from_bucket": "SELLABLE",
    "to_bucket": "DAMAGED",
}
RESERVATION_COMMAND = {
    "event_id": "om-77",
    "command": "RESERVE",
    "reservation_id": "order-9001",
    "sku": "SKU-1001",
    "channel": "ecommerce",
    "quantity": 3,
    "location": None,
    "allow_partial": True,
    "expires_at": 1_700_000_900_000,
    "event_time": 1_700_000_000_500,
    "source": "order-management",
}
POLICY_CHANGE = {
    "event_id": "policy-12",
    "version": 12,
    "event_time": 1_700_000_000_000,
    "source": "policy-admin",
    "locations": [
        {"location": "store-042", "location_type": "STORE"},
        {"location": "dc-1", "location_type": "DISTRIBUTION_CENTRE"},
    ],
    "safety_stock": [
        {"scope": "SKU_LOCATION", "sku": "SKU-1001", "location": "store-042", "location_type": None, "quantity": 2},
        {"scope": "LOCATION_TYPE", "sku": None, "location": None, "location_type": "STORE", "quantity": 1},
    ],
    "channels": [
        {
            "channel": "ecommerce",
            "priority": 0,
            "granularity": "NETWORK",
            "location_types": ["DISTRIBUTION_CENTRE", "STORE"],
            "locations": [],
            "share_bp": 10_000,
            "protected_quantity": 5,
            "buffer": 1,
            "max_advertised": None,
            "include_in_transit": True,
            "low_stock_threshold": 3,
        },
        {
            "channel": "store-pickup",
            "priority": 1,
            "granularity": "LOCATION",
            "location_types": [],
            "locations": ["store-042"],
            "share_bp": 5_000,
            "protected_quantity": 0,
            "buffer": 0,
            "max_advertised": 20,
            "include_in_transit": False,
            "low_stock_threshold": 2,
        },
    ],
    "feeds": [{"feed": "POS", "max_silence_seconds": 900, "fallback": "BUFFER_UNITS", "amount": 2,
               "location_types": ["STORE"]}],
}
CLOCK_TICK = {"event_time": 1_700_000_001_000}
CHANNEL_AVAILABILITY = {
    "channel": "store-pickup",
    "sku": "SKU-1001",
    "location": "store-042",
    "quantity": 4,
    "status": "LOW_STOCK",
    "version": 7,
    "event_id": "pos-1.000017",
    "ledger_partition": 3,
    "ledger_offset": 1234,
    "ledger_index": 0,
    "policy_version": 12,
    "event_time": 1_700_000_000_000,
    "snapshot": False,
    "fallbacks": [],
}
RESERVATION_DECISION = {
    "reservation_id": "order-9001",
    "channel": "ecommerce",
    "sku": "SKU-1001",
    "outcome": "ACCEPTED",
    "reason": None,
    "requested_quantity": 3,
    "reserved_quantity": 3,
    "lines": [{"location": "dc-1", "quantity": 2}, {"location": "store-042", "quantity": 1}],
    "event_id": "om-77",
    "ledger_partition": 3,
    "ledger_offset": 1235,
    "ledger_index": 17,
    "event_time": 1_700_000_000_500,
}


def ledger_entry(record_name, entry, source=("source.store-transactions", 0, 41)):
    topic, partition, offset = source
    return {
        "entry": (full_name(record_name), entry),
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "ingest_time": 1_700_000_000_020,
        "source_index": 0,
    }


SAMPLES = {  # record name -> representative records, fully specified so a round trip returns them unchanged
    "StockMovement": [
        STOCK_MOVEMENT_SALE,
        STOCK_MOVEMENT_RETURN,
        STOCK_MOVEMENT_ADJUSTMENT,
        STOCK_MOVEMENT_TRANSFER,
        STOCK_MOVEMENT_BUCKET_MOVE,
    ],
    "StockMovementBatch": [{"movements": [STOCK_MOVEMENT_SALE, STOCK_MOVEMENT_TRANSFER]}, {"movements": []}],
    "ReservationCommand": [RESERVATION_COMMAND, {**RESERVATION_COMMAND, "command": "RELEASE", "expires_at": None}],
    "PolicyChange": [POLICY_CHANGE],
    "ClockTick": [CLOCK_TICK],
    "FeedActivity": [{"feed": "WMS", "event_time": 1_700_000_000_900,
                      "seen": [{"location": "dc-1", "last_event_time": 1_700_000_000_900}]}],
    "LedgerEntry": [
        ledger_entry("StockMovement", STOCK_MOVEMENT_SALE),
        ledger_entry("ReservationCommand", RESERVATION_COMMAND, ("source.reservation-commands", 2, 7)),
        ledger_entry("PolicyChange", POLICY_CHANGE, ("source.policy-changes", 0, 3)),
        {
            **ledger_entry("ClockTick", CLOCK_TICK),
            **{"source_topic": None, "source_partition": None, "source_offset": None, "source_index": None},
        },
        {
            **ledger_entry("LedgerEntryBatch", {"entries": [
                {"entry": (full_name("StockMovement"), STOCK_MOVEMENT_SALE),
                 "source_topic": "source.store-transactions", "source_partition": 0, "source_offset": 41,
                 "source_index": 3},
                {"entry": (full_name("ReservationCommand"), RESERVATION_COMMAND),
                 "source_topic": "source.reservation-commands", "source_partition": 2, "source_offset": 7,
                 "source_index": None},
            ]}),
            **{"source_topic": None, "source_partition": None, "source_offset": None, "source_index": None},
        },
    ],
    "ChannelAvailability": [CHANNEL_AVAILABILITY, {**CHANNEL_AVAILABILITY, "location": None, "snapshot": True,
                                                   "fallbacks": ["store-042:POS"]}],
    "ReservationDecision": [
        RESERVATION_DECISION,
        {
            **RESERVATION_DECISION,
            **{"outcome": "REJECTED", "reason": "INSUFFICIENT_STOCK", "reserved_quantity": 0, "lines": []},
        },
    ],
    "InventoryException": [
        {"kind": "NEGATIVE_STOCK", "sku": "SKU-1001", "location": "S01", "bucket": "SELLABLE", "quantity": -2,
         "position": {"sellable": -2, "damaged": 0, "quarantine": 1, "in_transit": 0, "reserved": 0},
         "event_id": "pos-9", "ledger_partition": 3, "ledger_offset": 41, "ledger_index": 7,
         "event_time": 1_700_000_000_500, "detail": "a sale beyond the sellable units known"},
        {"kind": "STALE_FEED", "sku": None, "location": "S01", "bucket": None, "quantity": 900_000, "position": None,
         "event_id": None, "ledger_partition": 3, "ledger_offset": 42, "ledger_index": 0,
         "event_time": 1_700_000_900_500, "detail": "POS quiet for 15 minutes"},
        {"kind": "RECONCILIATION_DRIFT", "sku": "SKU-1001", "location": "S01", "bucket": "SELLABLE", "quantity": 4,
         "position": {"sellable": 6, "damaged": 0, "quarantine": 0, "in_transit": 0, "reserved": 1},
         "event_id": None, "ledger_partition": None, "ledger_offset": None, "ledger_index": None,
         "event_time": 1_700_000_000_000, "detail": "system of record 10, service 6"},
    ],
}
VALUE_RECORDS = sorted({topic.value_record for topic in FIXED_TOPICS if topic.value_record}
                       | {"ChannelAvailability", "InventoryException"})
SCHEMA_FILES = sorted(DEFAULT_SCHEMA_DIR.glob("*.avsc"))


def round_trip(schema, record, reader_schema=None):
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    buffer.seek(0)
    return fastavro.schemaless_reader(
        buffer, schema, reader_schema, return_record_name=True, return_record_name_override=True
    )


def named_types(schema):
    if isinstance(schema, list):
        for branch in schema:
            yield from named_types(branch)
    elif isinstance(schema, dict):
        if schema["type"] in ("record", "enum"):
            yield schema
        for field in schema.get("fields", ()):
            yield from named_types(field["type"])
        yield from named_types(schema.get("items"))


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda path: path.name)
def test_each_file_defines_one_documented_type_named_after_it(path):
    document = json.loads(path.read_text())
    assert document["name"] == path.stem
    assert document["namespace"] == AVRO_NAMESPACE
    for named in named_types(document):
        assert named.get("doc"), f"{named['name']} has no doc"
        for field in named.get("fields", ()):
            assert field.get("doc"), f"{named['name']}.{field['name']} has no doc"


def test_library_loads_every_file_with_dependencies_first():
    library = load_schema_library()
    assert set(library.names) == {full_name(path.stem) for path in SCHEMA_FILES}
    order = library.names
    assert order.index(full_name("LocationType")) < order.index(full_name("PolicyLocation"))
    assert order.index(full_name("PolicyChange")) < order.index(full_name("LedgerEntry"))
    assert order.index(full_name("StockMovement")) < order.index(full_name("StockMovementBatch"))


@pytest.mark.parametrize("record_name", sorted(SAMPLES))
def test_expanded_schema_is_self_contained(record_name):
    expanded = load_schema_library().expanded(record_name)
    parsed = fastavro.parse_schema(expanded, named_schemas={})  # no other files: must stand alone
    for record in SAMPLES[record_name]:
        assert round_trip(parsed, record) == record


@pytest.mark.parametrize(
    "record_name, index",
    [(name, index) for name, records in sorted(SAMPLES.items()) for index in range(len(records))],
)
def test_representative_records_round_trip(record_name, index):
    record = SAMPLES[record_name][index]
    assert round_trip(load_schema_library().parsed(record_name), record) == record


def test_every_topic_value_record_has_samples():
    assert set(VALUE_RECORDS) <= set(SAMPLES)
    assert availability_topic("ecommerce").value_record == "ChannelAvailability"


def test_ledger_entry_union_keeps_the_branch_name():
    parsed = load_schema_library().parsed("LedgerEntry")
    names = [round_trip(parsed, entry)["entry"][0] for entry in SAMPLES["LedgerEntry"]]
    assert names == [full_name(name) for name in
                     ("StockMovement", "ReservationCommand", "PolicyChange", "ClockTick", "LedgerEntryBatch")]


def test_optional_fields_default_when_omitted():
    parsed = load_schema_library().parsed("ChannelAvailability")
    minimal = {key: value for key, value in CHANNEL_AVAILABILITY.items() if key not in ("location", "snapshot")}
    decoded = round_trip(parsed, minimal)
    assert decoded["location"] is None and decoded["snapshot"] is False


def test_enums_match_the_canonical_events():
    symbols = {schema["name"]: schema["symbols"] for name in SAMPLES for schema in _enums(name)}
    assert symbols[full_name("MovementType")] == [
        *("RECEIPT", "SALE", "RETURN", "ADJUSTMENT", "CYCLE_COUNT"),
        *("TRANSFER_SHIPPED", "TRANSFER_RECEIVED", "BUCKET_MOVE"),
    ]
    assert symbols[full_name("ReservationAction")] == ["RESERVE", "RELEASE", "FULFIL"]
    assert symbols[full_name("AvailabilityStatus")] == ["IN_STOCK", "LOW_STOCK", "OUT_OF_STOCK"]
    assert symbols[full_name("ReservationOutcome")] == ["ACCEPTED", "REJECTED", "RELEASED", "FULFILLED", "EXPIRED"]
    assert symbols[full_name("StockBucket")] == ["SELLABLE", "DAMAGED", "QUARANTINE"]
    assert symbols[full_name("ChannelGranularity")] == ["NETWORK", "LOCATION"]
    assert symbols[full_name("SafetyStockScope")] == ["SKU_LOCATION", "SKU", "LOCATION_TYPE"]


def test_unknown_status_from_a_newer_writer_reads_as_out_of_stock():
    library = load_schema_library()
    newer = library.expanded("ChannelAvailability")
    status = next(field for field in newer["fields"] if field["name"] == "status")
    status["type"]["symbols"].append("BACK_ORDER")
    writer = fastavro.parse_schema(newer, named_schemas={})
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, writer, {**CHANNEL_AVAILABILITY, "status": "BACK_ORDER"})
    buffer.seek(0)
    decoded = fastavro.schemaless_reader(buffer, writer, library.parsed("ChannelAvailability"))
    assert decoded["status"] == "OUT_OF_STOCK"


def _enums(record_name):
    return (schema for schema in named_types(load_schema_library().expanded(record_name)) if schema["type"] == "enum")


def test_contract_names_every_topic_and_schema_file():
    contract = (DEFAULT_SCHEMA_DIR.parent / "docs" / "CONTRACT.md").read_text()
    for topic in FIXED_TOPICS:
        assert f"`{topic.name}`" in contract
        if topic.schema_file:
            assert f"`{topic.schema_file}`" in contract
    assert "`availability.<channel>`" in contract and "`avro/ChannelAvailability.avsc`" in contract
    for path in SCHEMA_FILES:
        assert path.stem in contract
