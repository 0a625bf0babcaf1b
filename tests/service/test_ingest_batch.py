"""The ingest stage's micro-batch logic (app.service.ingest.ingest_micro_batch), shared by the Faust agents and the
confluent-kafka ingest process, without a broker; and the `stages` setting that chooses who runs it."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from app.engine import event_to_record, reasons
from app.service.ingest import IngestedBatch, LedgerWriter, SourceMessage, ingest_micro_batch, report_ingested
from app.wire.dead_letters import DEAD_LETTER_MAX_VALUE_BYTES, MOVEMENT_INDEX_HEADER
from app.wire.ledger import LedgerBatcher, ledger_items
from app.wire.serialization import AVRO_NAMESPACE, AvroCodec
from app.wire.topics import (
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_SOURCE_OFFSET_HEADER,
    DEAD_LETTER_SOURCE_PARTITION_HEADER,
    DEAD_LETTER_SOURCE_TOPIC_HEADER,
    DEAD_LETTER_TRUNCATED_HEADER,
    DEAD_LETTERS,
    LEDGER,
    LEDGER_BROADCAST_KEY,
    POLICY_CHANGES,
    RESERVATION_COMMANDS,
    STOCK_MOVEMENTS,
    STORE_TRANSACTIONS,
    ledger_partition,
)
from tests.engine.factories import policy, receipt, reserve, sale

PARTITIONS = 4


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    from app.settings import Settings

    return AvroCodec(Settings(_env_file=None, partitions=PARTITIONS))


def skus_by_partition() -> dict[int, str]:
    """One SKU per ledger partition."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < PARTITIONS:
        sku = f"SKU{index}"
        found.setdefault(ledger_partition(sku, PARTITIONS), sku)
        index += 1
    return found


class Source:
    """Source messages numbered by offset, as a consumer would hand them over."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        self.offset = 0

    def message(self, topic: str, value: bytes | None, key: bytes | None = b"k", headers=None) -> SourceMessage:
        self.offset += 1
        return SourceMessage(topic, 0, self.offset, key, value, headers)

    def event(self, topic: str, event) -> SourceMessage:
        return self.message(topic, self.codec.encode(topic, event_to_record(event)[1]))

    def movements(self, events, headers=None) -> SourceMessage:
        value = self.codec.encode(STOCK_MOVEMENTS.name, {"movements": [event_to_record(e)[1] for e in events]})
        return self.message(STOCK_MOVEMENTS.name, value, headers=headers)


def ingest(codec: AvroCodec, messages, max_record_bytes: int | None = None) -> tuple[IngestedBatch, LedgerBatcher]:
    writer = LedgerWriter(codec, PARTITIONS, max_record_bytes)
    batcher = LedgerBatcher(codec.serde(LEDGER), max_entries=500)
    return ingest_micro_batch(messages, 1234, writer, batcher), batcher


def ledger_sequences(codec: AvroCodec, batch: IngestedBatch) -> dict[int, list[str]]:
    """Event ids per ledger partition, in send order."""
    sequences: dict[int, list[str]] = {partition: [] for partition in range(PARTITIONS)}
    for record in batch.records:
        if record.topic == LEDGER.name:
            for item in ledger_items(codec.decode(LEDGER.name, record.value).value):
                sequences[record.partition].append(item.record["event_id"])
    return sequences


def test_a_policy_change_keeps_its_place_in_every_ledger_partition(codec):
    skus = skus_by_partition()
    source = Source(codec)
    before = [source.event(STORE_TRANSACTIONS.name, sale(1, sku=skus[p], event_id=f"before-{p}"))
              for p in range(PARTITIONS)]
    change = source.event(POLICY_CHANGES.name, policy(2))
    after = [source.event(STORE_TRANSACTIONS.name, sale(1, sku=skus[p], event_id=f"after-{p}"))
             for p in (0, 2)]

    batch, batcher = ingest(codec, [*before, change, *after])

    assert ledger_sequences(codec, batch) == {
        0: ["before-0", "policy-2", "after-0"],
        1: ["before-1", "policy-2"],
        2: ["before-2", "policy-2", "after-2"],
        3: ["before-3", "policy-2"],
    }
    assert all(record.partition is not None for record in batch.records)  # the ledger is always addressed
    broadcasts = [r for r in batch.records if r.key == LEDGER_BROADCAST_KEY.encode()
                  and codec.decode(LEDGER.name, r.value).value["entry"][0] == f"{AVRO_NAMESPACE}.PolicyChange"]
    assert [r.partition for r in broadcasts] == list(range(PARTITIONS))
    assert batch.ingested == {(STORE_TRANSACTIONS.name, "StockMovement"): PARTITIONS + 2,
                              (POLICY_CHANGES.name, "PolicyChange"): 1}
    assert not batcher, "the batcher is flushed at the end of the micro-batch"
    assert batch.dead_letters == []


def test_entries_of_a_partition_without_a_policy_change_share_one_record_with_their_sources(codec):
    skus = skus_by_partition()
    source = Source(codec)
    messages = [source.event(STORE_TRANSACTIONS.name, sale(1, sku=skus[1], event_id=f"s{n}")) for n in range(3)]
    batch, _ = ingest(codec, messages)
    [record] = batch.records
    assert (record.topic, record.partition, record.key) == (LEDGER.name, 1, b"")
    items = ledger_items(codec.decode(LEDGER.name, record.value).value)
    assert [(i.record["event_id"], i.source_topic, i.source_offset, i.ingest_time) for i in items] == [
        (f"s{n}", STORE_TRANSACTIONS.name, n + 1, 1234) for n in range(3)]


def test_dead_letters_keep_the_original_record_and_say_why_and_where(codec):
    skus = skus_by_partition()
    source = Source(codec)
    garbage = source.message(STORE_TRANSACTIONS.name, b"not avro", key=b"store-7", headers=[("trace", b"t-1")])
    bulk = source.movements([receipt(5, sku=skus[0], event_id="good-0"), receipt(0, sku=skus[0], event_id="zero"),
                             receipt(2, sku=skus[3], event_id="good-1")], headers=[("trace", b"t-2")])

    batch, _ = ingest(codec, [garbage, bulk])

    letters = [record for record in batch.records if record.topic == DEAD_LETTERS.name]
    assert len(letters) == 2
    first, second = letters
    assert (first.key, first.value, first.partition) == (b"store-7", b"not avro", None)  # default partitioner
    headers = dict(first.headers)
    assert first.headers[0] == ("trace", b"t-1"), "the original headers come first"
    assert headers[DEAD_LETTER_REASON_HEADER] == reasons.UNDECODABLE_RECORD.encode()
    assert (headers[DEAD_LETTER_SOURCE_TOPIC_HEADER], headers[DEAD_LETTER_SOURCE_PARTITION_HEADER],
            headers[DEAD_LETTER_SOURCE_OFFSET_HEADER]) == (STORE_TRANSACTIONS.name.encode(), b"0", b"1")
    assert MOVEMENT_INDEX_HEADER not in headers
    # One bad movement of a batch: the whole record is dead-lettered with the movement's index, the rest ingested.
    assert second.value == bulk.value and dict(second.headers)[MOVEMENT_INDEX_HEADER] == b"1"
    assert ledger_sequences(codec, batch) == {0: ["good-0"], 1: [], 2: [], 3: ["good-1"]}
    assert [(d.source_topic, d.offset, d.movement_index) for d in batch.dead_letters] == [
        (STORE_TRANSACTIONS.name, 1, None), (STOCK_MOVEMENTS.name, 2, 1)]
    assert batch.dead_letters[0].log_line().startswith(
        f"dead-lettered {STORE_TRANSACTIONS.name}[0]@1: {reasons.UNDECODABLE_RECORD}: ")
    assert batch.dead_letters[1].log_line().endswith(" (movement 1)")


def test_an_oversized_record_is_dead_lettered_cut_to_fit_one_kafka_record(codec):
    source = Source(codec)
    huge = source.message(STORE_TRANSACTIONS.name, b"x" * (DEAD_LETTER_MAX_VALUE_BYTES + 10))
    batch, _ = ingest(codec, [huge], max_record_bytes=1024)
    [letter] = batch.records
    assert len(letter.value) == DEAD_LETTER_MAX_VALUE_BYTES
    headers = dict(letter.headers)
    assert headers[DEAD_LETTER_TRUNCATED_HEADER] == str(DEAD_LETTER_MAX_VALUE_BYTES + 10).encode()
    assert headers[DEAD_LETTER_REASON_HEADER] == reasons.RECORD_TOO_LARGE.encode()


def test_report_logs_each_dead_letter_and_counts_for_the_observer(codec, caplog):
    class Recorder:
        def __init__(self):
            self.calls = []

        def ingested(self, topic, event_type, count=1):
            self.calls.append(("ingested", topic, event_type, count))

        def dead_lettered(self, stage, topic, reason):
            self.calls.append(("dead", stage, topic, reason))

    source = Source(codec)
    batch, _ = ingest(codec, [source.message(STORE_TRANSACTIONS.name, None),
                              source.event(STORE_TRANSACTIONS.name, sale(1, sku="SKU1", event_id="ok")),
                              source.event(STORE_TRANSACTIONS.name, sale(1, sku="SKU2", event_id="ok2"))])
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="app.service.ingest"):
        report_ingested(batch, recorder)
    assert recorder.calls == [("ingested", STORE_TRANSACTIONS.name, "StockMovement", 2),
                              ("dead", "ingest", STORE_TRANSACTIONS.name, reasons.UNDECODABLE_RECORD)]
    assert [r.getMessage() for r in caplog.records] == [
        f"dead-lettered {STORE_TRANSACTIONS.name}[0]@1: {reasons.UNDECODABLE_RECORD}: record has no value"]


# ------------------------------------------------------------------------------------------------ stages setting
def test_stages_setting_accepts_all_and_availability_only(settings_factory, monkeypatch):
    assert settings_factory().stages == "all"
    assert settings_factory(stages="availability").stages == "availability"
    with pytest.raises(ValidationError):
        settings_factory(stages="ingest")
    from app.settings import Settings

    monkeypatch.setenv("AVAILABILITY_STAGES", "availability")
    assert Settings(_env_file=None).stages == "availability"


@pytest.mark.parametrize("stages", ["all", "availability"])
def test_the_faust_app_has_no_ingest_agent_in_either_topology_and_keeps_ticks(settings_factory, stages):
    """The ingest stage is a confluent-kafka consumer of its own (app.service.ingest_thread in `all`, the ingest
    process in `split`): the Faust app neither subscribes to a source topic nor runs an agent for one."""
    from app.service.app import build_service
    from app.wire.topics import SOURCE_TOPICS

    service = build_service(settings_factory(stages=stages, partitions=PARTITIONS), "127.0.0.1:9")
    agents = set(service.app.agents)
    assert agents == {"apply_ledger", "reconciliation-drift-counter"}, \
        "the availability agent and the count of reconciliation drifts run in both topologies"
    subscribed = {name for agent in service.app.agents.values() for name in agent.channel.topics}
    assert not subscribed & {spec.name for spec in SOURCE_TOPICS}, subscribed
    timers = [getattr(task, "__name__", None) for task in service.app._app_tasks]
    assert "append_clock_ticks" in timers, "the leader's clock ticks run in both topologies"


# ---------------------------------------------------------------------------------------------------- the command
def test_ingest_command_has_help_and_is_listed(capsys):
    from app.tools.cli import build_parser, main

    assert "ingest" in build_parser().format_help()
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "--help"])
    assert exit_info.value.code == 0
    assert "--metrics-port" in capsys.readouterr().out


def test_ingest_process_without_a_broker_says_so_in_one_line():
    from app.errors import EXIT_CONFIGURATION_ERROR
    from tests.tools.test_cli import run_cli

    result = run_cli("ingest", timeout=60)
    assert result.returncode == EXIT_CONFIGURATION_ERROR, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no Kafka broker configured" in lines[0] and "KAFKA_BOOTSTRAP_SERVERS" in lines[0]


def activities_of(codec: AvroCodec, batch: IngestedBatch) -> dict[int, list[tuple[str, tuple]]]:
    """Per ledger partition, the FeedActivity entries of the batch: (feed, ((location, latest time), ...))."""
    found: dict[int, list] = {}
    for record in batch.records:
        if record.topic != LEDGER.name:
            continue
        for item in ledger_items(codec.decode(LEDGER.name, record.value).value):
            if item.record_name.endswith("FeedActivity"):
                seen = tuple((s["location"], s["last_event_time"]) for s in item.record["seen"])
                found.setdefault(record.partition, []).append((item.record["feed"], seen))
    return found


def test_each_feed_s_activity_reaches_every_ledger_partition_a_location_once_per_step(codec):
    from app.service.ingest import FeedActivityReporter

    source, feeds = Source(codec), FeedActivityReporter()
    writer = LedgerWriter(codec, PARTITIONS)
    batcher = LedgerBatcher(codec.serde(LEDGER), max_entries=500)

    def run(messages):
        return activities_of(codec, ingest_micro_batch(messages, 10**13, writer, batcher, feeds))

    first = run([
        source.event(STORE_TRANSACTIONS.name, sale(1, "S1", time=1_000)),
        source.event(STORE_TRANSACTIONS.name, sale(1, "S1", time=5_000)),
        source.movements([receipt(1, "DC1", time=2_000), receipt(1, "S2", time=3_000)]),
        source.event(RESERVATION_COMMANDS.name, reserve("r1", 1, time=9_000)),  # an intent: no feed
    ])
    expected = [("POS", (("S1", 5_000),)), ("WMS", (("DC1", 2_000), ("S2", 3_000)))]
    assert first == {partition: expected for partition in range(PARTITIONS)}
    step = FeedActivityReporter.REPORT_STEP_MS
    assert run([source.event(STORE_TRANSACTIONS.name, sale(1, "S1", time=5_000 + step - 1))]) == {}  # within a step
    later = run([source.event(STORE_TRANSACTIONS.name, sale(1, "S1", time=5_000 + step))])
    assert later == {partition: [("POS", (("S1", 5_000 + step),))] for partition in range(PARTITIONS)}


def test_ledger_entries_carry_each_event_as_its_canonical_record(codec):
    """The ingest stage writes the decoded source record itself (no conversion back from the event): for every
    movement and command of the peak workload (every movement type, optional fields set and unset, batches), the
    ledger entry equals the record event_to_record gives for the event, so the ledger's bytes are unchanged. A
    single movement or command in the service's own schema is read straight into its event (no dict), and that
    event is the one event_from_record makes of the decoded record."""
    from app.engine import event_from_record
    from benchmarks.generator import Workload, WorkloadConfig

    workload = Workload(WorkloadConfig(partitions=PARTITIONS, skus=500), mix="mixed", prefix="canon")
    records = list(workload.records(5_000)) + list(workload.flush())
    writer = LedgerWriter(codec, PARTITIONS)
    checked = set()
    read_as_events = 0
    for offset, generated in enumerate(records):
        value = codec.encode(generated.topic, generated.value)
        result = writer.ingest(generated.topic.name, 0, offset, value,
                               WorkloadConfig().start_time_ms + 10**9)  # an ingest clock after every event
        assert not result.dead_letters
        for draft in result.entries:
            assert (draft.record_name, draft.record) == event_to_record(event_from_record(draft.record_name,
                                                                                          draft.record))
            if generated.topic.value_record == "StockMovementBatch":
                assert draft.decoded is not None and draft.body is None
            else:
                assert draft.decoded is None and draft.body == value[5:]
                assert draft.event == event_from_record(draft.record_name, codec.decode(generated.topic, value).value)
                read_as_events += 1
            checked.add(draft.record.get("type") or draft.record["command"])
    assert {"SALE", "RETURN", "RECEIPT", "TRANSFER_SHIPPED", "TRANSFER_RECEIVED", "CYCLE_COUNT", "ADJUSTMENT",
            "RESERVE", "RELEASE", "FULFIL"} <= checked
    assert read_as_events > 1_000


def test_a_source_record_in_the_service_s_own_schema_reaches_the_ledger_as_its_own_bytes(settings_factory):
    """A movement or command the source wrote with the schema the service registered for its topic (the ledger's
    schema of that record) goes to the ledger as its own bytes; one written with another schema version, and the
    movements of a bulk record, are encoded from their decoded form; either way the ledger holds the record as the
    service reads it."""
    import dataclasses
    import io
    import json

    import fastavro
    from confluent_kafka.schema_registry import Schema

    from app.wire.serialization import HEADER_SIZE, load_schema_library

    codec = AvroCodec(settings_factory(partitions=PARTITIONS, schema_registry_url="mock://ingest-source-bytes"))
    writer = LedgerWriter(codec, PARTITIONS)
    sold = event_to_record(sale(2, "S1", sku="SKU1", event_id="m1"))[1]
    reserved = event_to_record(reserve("r1", 1, sku="SKU1", event_id="c1"))[1]
    own_movement = codec.encode(STORE_TRANSACTIONS.name, sold)
    own_command = codec.encode(RESERVATION_COMMANDS.name, reserved)
    evolved = load_schema_library().expanded("StockMovement")
    evolved["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    evolved_id = codec.registry.register_schema(f"{STORE_TRANSACTIONS.name}-value", Schema(json.dumps(evolved), "AVRO"))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(evolved, named_schemas={}), {**sold, "note": "till 4"})
    evolved_movement = b"\x00" + evolved_id.to_bytes(4, "big") + body.getvalue()
    bulk = codec.encode(STOCK_MOVEMENTS.name, {"movements": [sold]})

    drafts = [writer.ingest(topic, 0, offset, value, 1234).entries[0] for offset, (topic, value) in enumerate(
        [(STORE_TRANSACTIONS.name, own_movement), (RESERVATION_COMMANDS.name, own_command),
         (STORE_TRANSACTIONS.name, evolved_movement), (STOCK_MOVEMENTS.name, bulk)])]
    assert [draft.body for draft in drafts] == [own_movement[HEADER_SIZE:], own_command[HEADER_SIZE:], None, None]
    assert [draft.decoded is None for draft in drafts] == [True, True, False, False]  # the own ones: events only
    assert [draft.record for draft in drafts] == [sold, reserved, sold, sold]

    messages = [SourceMessage(topic, 0, offset, b"k", value, None) for offset, (topic, value) in enumerate(
        [(STORE_TRANSACTIONS.name, own_movement), (RESERVATION_COMMANDS.name, own_command),
         (STORE_TRANSACTIONS.name, evolved_movement), (STOCK_MOVEMENTS.name, bulk)])]

    class WithoutSourceBytes(LedgerWriter):
        def ingest(self, *args):
            result = super().ingest(*args)
            result.entries = [dataclasses.replace(draft, body=None) for draft in result.entries]
            return result

    def ledger(writer: LedgerWriter) -> list:
        batch = ingest_micro_batch(messages, 1234, writer, LedgerBatcher(codec.serde(LEDGER), max_entries=500))
        return [(record.partition, record.value) for record in batch.records]

    written = ledger(LedgerWriter(codec, PARTITIONS))
    assert written == ledger(WithoutSourceBytes(codec, PARTITIONS))
    items = [item for _, value in written for item in ledger_items(codec.decode(LEDGER.name, value).value)]
    assert [item.record for item in items] == [sold, reserved, sold, sold]


def test_corrupted_own_schema_records_get_the_answer_of_the_dict_path(codec):
    """Bad input is not read more leniently for being read straight into its event: truncated, padded or corrupted
    records in the service's own schema give the same dead letters, and the same events when they still decode, as
    the path that decodes every record to a dict first (`source_bytes=False`)."""
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings
    from hypothesis import strategies as st

    sold = codec.encode(STORE_TRANSACTIONS.name, event_to_record(sale(2, "S1", sku="SKU1", event_id="m1"))[1])
    reserved = codec.encode(RESERVATION_COMMANDS.name, event_to_record(reserve("r1", 1, sku="SKU1", event_id="c1"))[1])
    direct, via_dicts = LedgerWriter(codec, PARTITIONS), LedgerWriter(codec, PARTITIONS, source_bytes=False)

    def answer(writer: LedgerWriter, topic: str, value: bytes):
        result = writer.ingest(topic, 0, 0, value, 10**13)
        return result.dead_letters, [draft.event for draft in result.entries]

    @given(data=st.data())
    @hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    def check(data):
        topic, encoded = data.draw(st.sampled_from([(STORE_TRANSACTIONS.name, sold),
                                                    (RESERVATION_COMMANDS.name, reserved)]))
        cut = data.draw(st.integers(0, len(encoded) - 1))
        position = data.draw(st.integers(5, len(encoded) - 1))
        corrupted = bytearray(encoded)
        corrupted[position] = data.draw(st.integers(0, 255))
        for bad in (encoded[:cut], encoded + b"\x00", bytes(corrupted)):
            assert answer(direct, topic, bad) == answer(via_dicts, topic, bad)

    check()
    assert answer(direct, STORE_TRANSACTIONS.name, sold)[1] == answer(via_dicts, STORE_TRANSACTIONS.name, sold)[1] != []
