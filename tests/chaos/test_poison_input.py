"""Poison input of every kind, mixed into a live stream: each record lands in `dead-letters` with its reason and
source position, the stream keeps going (no crash, no restart), and nothing else changes (the output equals the
engine run on the ledger, and the ledger holds exactly the good events plus those only the rules can refuse).

In the default suite (integration, ~30 s) as well as in `make chaos`."""

from __future__ import annotations

import os

import pytest
from confluent_kafka import Producer

from app.engine import event_to_record, reasons
from app.service.ingest import LedgerWriter
from app.wire.dead_letters import DEAD_LETTER_MAX_VALUE_BYTES, MOVEMENT_INDEX_HEADER
from app.wire.ledger import ledger_items
from app.wire.topics import (
    DEAD_LETTER_LEDGER_INDEX_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_SOURCE_OFFSET_HEADER,
    DEAD_LETTER_SOURCE_PARTITION_HEADER,
    DEAD_LETTER_SOURCE_TOPIC_HEADER,
    DEAD_LETTER_TRUNCATED_HEADER,
    DEAD_LETTERS,
    INVENTORY_EXCEPTIONS,
    LEDGER,
    POLICY_CHANGES,
    RESERVATION_COMMANDS,
    STOCK_MOVEMENTS,
    STORE_TRANSACTIONS,
)
from tests.chaos.checker import check_against_engine, consume_topic
from tests.chaos.results import record_figures
from tests.chaos.workload import Workload
from tests.engine.factories import adjustment, receipt, release, reserve, sale
from tests.service.harness import WORKER_READY, wait_for_ledger_entries

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

OVERSIZED_BYTES = 1_500_000


class LocatingProducer:
    """Sends raw records and returns where each landed (partition, offset), to match its dead letter."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap_servers, "message.max.bytes": 8_000_000})

    def send(self, topic: str, value: bytes | None, key: bytes = b"poison") -> tuple[int, int]:
        landed = []
        self._producer.produce(topic, value=value, key=key,
                               on_delivery=lambda error, message: landed.append((error, message)))
        self._producer.flush(30)
        error, message = landed[0]
        assert error is None, f"{topic}: {error}"
        return message.partition(), message.offset()


POISON_LOCATION = reserve("poison-res", 1, sku="SKU000001", location="NOWHERE", event_id="poison-location")
POISON_SKU = release("never-reserved", sku="NEVER-STOCKED", event_id="poison-sku")
"""The two poison records that are valid on their own and so reach the ledger, where the rules refuse them: intents
that do not fit. (Facts that do not fit are applied, with an exception: FACTS_THAT_DO_NOT_FIT.)"""

FACTS_THAT_DO_NOT_FIT = (sale(1, "NOWHERE", sku="SKU000001", event_id="fact-unknown-location"),
                         sale(1, "S000", sku="NEVER-STOCKED", event_id="fact-never-stocked"))
"""A sale at a location the policy does not list, and of a SKU never stocked: applied, never dead-lettered, each
reported on inventory-exceptions (UNKNOWN_LOCATION, NEGATIVE_STOCK)."""


def event_id_in(letter) -> str | None:
    """Which of the facts that do not fit a dead letter holds (in its original bytes), if any."""
    value = letter.value() or b""
    for marker in (b"fact-unknown-location", b"fact-never-stocked"):
        if marker in value:
            return marker.decode()
    return None


def poison_records(codec, store: str):
    """(kind, topic, value bytes or None, the reason its dead letter must carry, stage that refuses it)."""
    def encoded(topic, event):
        return codec.encode(topic, event_to_record(event)[1])

    good_sale = encoded(STORE_TRANSACTIONS.name, sale(1, store, sku="SKU000001", event_id="poison-template"))
    command_bytes = encoded(RESERVATION_COMMANDS.name, reserve("poison-res", 1, sku="SKU000001",
                                                               event_id="poison-command"))
    # A record type no source carries: the ledger's own envelope, sent to a source topic.
    ledger_entry_bytes = LedgerWriter(codec, 4).entry_value(sale(1, store, sku="SKU000001", event_id="poison-type"),
                                                            None, 0)
    huge_batch = codec.encode(STOCK_MOVEMENTS.name, {"movements": [
        event_to_record(receipt(1, store, sku=f"BULK{index:06d}", event_id=f"bulk-{index}"))[1]
        for index in range(OVERSIZED_BYTES // 40)
    ]})
    assert len(huge_batch) > OVERSIZED_BYTES
    ingest, rules = "ingest", "availability"
    records = [
        ("not Avro at all", STORE_TRANSACTIONS.name, b"definitely not avro", reasons.UNDECODABLE_RECORD, ingest),
        ("unknown schema id", STORE_TRANSACTIONS.name, b"\x00\x00\x00\x10\x92" + good_sale[5:],
         reasons.UNDECODABLE_RECORD, ingest),
        ("another record's schema id", STORE_TRANSACTIONS.name, command_bytes, reasons.UNDECODABLE_RECORD, ingest),
        ("unknown event type (a LedgerEntry)", POLICY_CHANGES.name, ledger_entry_bytes, reasons.UNDECODABLE_RECORD,
         ingest),
        ("missing fields (body cut short)", STORE_TRANSACTIONS.name, good_sale[: len(good_sale) // 2],
         reasons.UNDECODABLE_RECORD, ingest),
        ("no value (tombstone)", STORE_TRANSACTIONS.name, None, reasons.UNDECODABLE_RECORD, ingest),
        ("negative quantity", STORE_TRANSACTIONS.name,
         encoded(STORE_TRANSACTIONS.name, sale(-5, store, sku="SKU000001", event_id="poison-negative")),
         reasons.INVALID_QUANTITY, ingest),
        ("huge quantity", STORE_TRANSACTIONS.name,
         encoded(STORE_TRANSACTIONS.name, receipt(2**62, store, sku="SKU000001", event_id="poison-huge")),
         reasons.INVALID_QUANTITY, ingest),
        ("zero adjustment", STORE_TRANSACTIONS.name,
         encoded(STORE_TRANSACTIONS.name, adjustment(0, store, sku="SKU000001", event_id="poison-zero")),
         reasons.INVALID_DELTA, ingest),
        ("invalid id", STORE_TRANSACTIONS.name,
         encoded(STORE_TRANSACTIONS.name, sale(1, store, sku="bad sku!", event_id="poison-id")),
         reasons.INVALID_ID, ingest),
        ("reservation at an unknown location", RESERVATION_COMMANDS.name,
         encoded(RESERVATION_COMMANDS.name, POISON_LOCATION), reasons.UNKNOWN_LOCATION, rules),
        ("release of a reservation never made", RESERVATION_COMMANDS.name,
         encoded(RESERVATION_COMMANDS.name, POISON_SKU), reasons.UNKNOWN_RESERVATION, rules),
        ("oversized bytes", STORE_TRANSACTIONS.name, os.urandom(OVERSIZED_BYTES), reasons.RECORD_TOO_LARGE, ingest),
        ("oversized valid StockMovementBatch", STOCK_MOVEMENTS.name, huge_batch, reasons.RECORD_TOO_LARGE, ingest),
    ]
    return records


def headers_of(record) -> dict[str, bytes]:
    return dict(record.headers() or ())


def test_poison_input_is_dead_lettered_and_the_stream_keeps_going(chaos_settings, source_for, workers, broker):
    settings = chaos_settings()
    source = source_for(settings)
    codec = source.codec
    workload = Workload(seed=61, sku_count=100)
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=90)
    workload.send_policy(source)
    wait_for_ledger_entries(broker.bootstrap_servers, codec, settings.partitions, "PolicyChange")
    workload.send_seed_stock(source)
    workload.send_wave(source, 1_000)

    store = "S000"
    locating = LocatingProducer(broker.bootstrap_servers)
    sent = {}  # (topic, partition, offset) of the record -> (kind, reason, stage)
    for kind, topic, value, reason, stage in poison_records(codec, store):
        sent[(topic, *locating.send(topic, value))] = (kind, reason, stage)
    # One bad movement inside a good batch: only it is refused, the others are ingested.
    mixed = [receipt(3, store, sku="SKU000002", event_id="mixed-good-1"),
             receipt(-3, store, sku="SKU000002", event_id="mixed-bad"),
             receipt(4, store, sku="SKU000003", event_id="mixed-good-2")]
    mixed_at = (STOCK_MOVEMENTS.name, *locating.send(
        STOCK_MOVEMENTS.name, codec.encode(STOCK_MOVEMENTS.name, {"movements": [event_to_record(m)[1] for m in mixed]})))
    workload.record(mixed[0], mixed[2], POISON_LOCATION, POISON_SKU)
    for fact in FACTS_THAT_DO_NOT_FIT:
        locating.send(STORE_TRANSACTIONS.name, codec.encode(STORE_TRANSACTIONS.name, event_to_record(fact)[1]))
    workload.record(*FACTS_THAT_DO_NOT_FIT)
    workload.send_wave(source, 1_000)  # the stream goes on after the poison

    letters = {}

    def on_letter(record) -> None:
        headers = headers_of(record)
        position = (headers[DEAD_LETTER_SOURCE_TOPIC_HEADER].decode(),
                    int(headers[DEAD_LETTER_SOURCE_PARTITION_HEADER]), int(headers[DEAD_LETTER_SOURCE_OFFSET_HEADER]))
        if DEAD_LETTER_LEDGER_INDEX_HEADER in headers:  # one entry of a ledger batch record
            position += (int(headers[DEAD_LETTER_LEDGER_INDEX_HEADER]),)
        letters.setdefault(position, []).append(record)

    report = check_against_engine(broker.bootstrap_servers, settings, codec, workload.sent.values())
    ledger_positions = {}

    def on_ledger(record) -> None:  # where the two rule-refused events landed on the ledger
        for item in ledger_items(codec.decode(LEDGER.name, record.value()).value):
            if item.record.get("event_id") in ("poison-location", "poison-sku"):
                position = (LEDGER.name, record.partition(), record.offset())
                ledger_positions[position + ((item.index,) if item.batched else ())] = item.record["event_id"]

    consume_topic(broker.bootstrap_servers, LEDGER.name, on_ledger, idle_seconds=0.5,
                  done=lambda: len(ledger_positions) >= 2, timeout=60)
    by_event_id = {event_id: position for position, event_id in ledger_positions.items()}
    expected_positions = {position for position, (_, _, stage) in sent.items() if stage == "ingest"}
    expected_positions |= set(ledger_positions) | {mixed_at}
    consume_topic(broker.bootstrap_servers, DEAD_LETTERS.name, on_letter, idle_seconds=0.5,
                  done=lambda: expected_positions <= set(letters), timeout=60)

    outcomes = {}
    for position, (kind, reason, stage) in sent.items():
        if stage == "availability":
            position = by_event_id["poison-location" if "location" in kind else "poison-sku"]
        found = letters.get(position, [])
        assert len(found) == 1, f"{kind}: {len(found)} dead letters at {position}"
        headers = headers_of(found[0])
        assert headers[DEAD_LETTER_REASON_HEADER].decode() == reason, f"{kind}: {headers}"
        outcomes[kind] = reason
        if reason == reasons.RECORD_TOO_LARGE:
            assert len(found[0].value()) == DEAD_LETTER_MAX_VALUE_BYTES
            assert int(headers[DEAD_LETTER_TRUNCATED_HEADER]) >= OVERSIZED_BYTES
    mixed_letters = letters.get(mixed_at, [])
    assert [headers_of(letter)[MOVEMENT_INDEX_HEADER] for letter in mixed_letters] == [b"1"]

    # Facts that do not fit are applied, never dead-lettered, and each is reported on inventory-exceptions.
    reported = {}

    def on_exception(record) -> None:
        value = codec.decode(INVENTORY_EXCEPTIONS.name, record.value()).value
        reported.setdefault(value["event_id"], []).append(value["kind"])

    consume_topic(broker.bootstrap_servers, INVENTORY_EXCEPTIONS.name, on_exception, idle_seconds=0.5, timeout=60,
                  done=lambda: {"fact-unknown-location", "fact-never-stocked"} <= set(reported))
    assert "UNKNOWN_LOCATION" in reported["fact-unknown-location"]
    assert reported["fact-never-stocked"] == ["NEGATIVE_STOCK"]
    letter_ids = {event_id_in(letter) for found in letters.values() for letter in found}
    assert not {"fact-unknown-location", "fact-never-stocked"} & letter_ids

    # Nothing else changed: the ledger holds the good events and the rule-refused ones, none of the rest.
    poison_ids = {"poison-type", "poison-negative", "poison-huge", "poison-zero", "poison-id", "poison-command", "mixed-bad"}
    assert not poison_ids & report.ledger_event_ids
    assert not any(event_id.startswith("bulk-") for event_id in report.ledger_event_ids)
    assert worker.process.poll() is None, "the worker died on poison input"
    log = worker.log_text()
    assert "Traceback" not in log and "CRITICAL" not in log
    record_figures("poison_input", {"poison_records": len(sent) + 1, "dead_letters_matched": len(outcomes) + 1,
                                    "reasons": outcomes, "worker_restarts": 0, **report.figures()})
    report.assert_holds()
