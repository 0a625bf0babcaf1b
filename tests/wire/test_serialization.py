"""Confluent wire format, decode errors, registry ids, and interoperability with confluent-kafka's Avro serdes."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import given
from hypothesis import strategies as st

from app.wire.serialization import (
    AvroCodec,
    NotConfluentFramedError,
    SchemaMismatchError,
    SerializationError,
    UndecodableBodyError,
    UnencodableRecordError,
    UnknownSchemaIdError,
    UnknownTopicError,
    full_name,
    load_schema_library,
)
from app.wire.topics import (
    DEAD_LETTERS,
    IDENTIFIER_PATTERN,
    LEDGER,
    STORE_TRANSACTIONS,
    all_topics,
    availability_key,
    ledger_key,
    ledger_partition,
    murmur2,
    parse_availability_key,
)
from tests.wire.test_schemas import CHANNEL_AVAILABILITY, RESERVATION_DECISION, SAMPLES, STOCK_MOVEMENT_SALE

CHANNELS = ("ecommerce", "marketplace", "store-pickup")
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(settings_factory):
    return settings_factory(channels=CHANNELS, schema_registry_url="mock://availability-test")


@pytest.fixture
def codec(settings):
    return AvroCodec(settings)


def test_wire_format_is_magic_byte_schema_id_then_schemaless_body(codec):
    data = codec.encode(STORE_TRANSACTIONS, STOCK_MOVEMENT_SALE)
    schema_id = codec.serde(STORE_TRANSACTIONS).schema_id
    body = io.BytesIO()
    fastavro.schemaless_writer(body, load_schema_library().parsed("StockMovement"), STOCK_MOVEMENT_SALE)
    assert data[0] == 0
    assert data[1:5] == schema_id.to_bytes(4, "big")
    assert data[5:] == body.getvalue()


def test_subjects_are_registered_in_declared_order_from_id_1(codec, settings):
    expected = [topic.value_subject for topic in all_topics(settings) if topic.value_record]
    assert list(codec.schema_ids) == expected
    assert list(codec.schema_ids.values()) == list(range(1, len(expected) + 1))
    assert "availability.store-pickup-value" in codec.schema_ids
    assert DEAD_LETTERS.value_subject is None


def test_mock_clients_with_the_same_url_share_nothing():
    """Why ids rely on registration order: every mock client, even for the same url, has its own store."""
    first = SchemaRegistryClient.new_client({"url": "mock://shared-name"})
    second = SchemaRegistryClient.new_client({"url": "mock://shared-name"})
    schema = Schema(load_schema_library().expanded_json("ClockTick"), "AVRO")
    assert first.register_schema("a-value", schema) == 1
    assert first.register_schema("a-value", schema) == 1  # same subject and schema: same id
    assert first.register_schema("b-value", schema) == 2  # same schema, new subject: new id (a real registry reuses)
    assert second.register_schema("b-value", schema) == 1
    with pytest.raises(Exception):
        second.get_schema(2)


@pytest.mark.parametrize("topic", ["source.stock-movements", "ledger", "availability.marketplace"])
def test_two_codecs_in_one_process_agree_on_ids_and_read_each_other(settings, topic):
    writer, reader = AvroCodec(settings), AvroCodec(settings)
    assert writer.registry is not reader.registry
    assert writer.schema_ids == reader.schema_ids
    record = SAMPLES[writer.serde(topic).topic.value_record][0]
    assert reader.decode(topic, writer.encode(topic, record)).value == record


def test_a_codec_in_another_process_gets_the_same_ids(codec):
    program = (
        "import json, types\n"
        "from app.wire.serialization import AvroCodec\n"
        f"settings = types.SimpleNamespace(channels={CHANNELS!r}, schema_registry_url='mock://availability-test')\n"
        "print(json.dumps(AvroCodec(settings).schema_ids))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(result.stdout) == codec.schema_ids


def test_ledger_entries_decode_with_their_branch_name(codec):
    for entry in SAMPLES["LedgerEntry"]:
        decoded = codec.decode(LEDGER, codec.encode(LEDGER, entry))
        assert decoded.record_name == full_name("LedgerEntry")
        assert decoded.value == entry
        assert decoded.schema_id == codec.serde(LEDGER).schema_id


def test_decode_many(codec):
    datas = [codec.encode(LEDGER, entry) for entry in SAMPLES["LedgerEntry"]]
    assert [decoded.value for decoded in codec.decode_many(LEDGER, datas)] == SAMPLES["LedgerEntry"]


def _framed(schema_id, body=b""):
    return b"\x00" + schema_id.to_bytes(4, "big") + body


@pytest.mark.parametrize(
    "data, error",
    [
        (b"", NotConfluentFramedError),
        (b"\x00\x00\x00", NotConfluentFramedError),
        (b'{"sku": "SKU-1"}', NotConfluentFramedError),
        (b"\x01" + (1).to_bytes(4, "big") + b"\x02", NotConfluentFramedError),
        (_framed(999_999, b"\x02"), UnknownSchemaIdError),
        (_framed(1), UndecodableBodyError),  # header only
        (_framed(1, b"\x7f\x7f\x7f"), UndecodableBodyError),  # garbage
    ],
)
def test_bad_bytes_raise_the_matching_error(codec, data, error):
    with pytest.raises(error) as raised:
        codec.decode(STORE_TRANSACTIONS, data)
    assert isinstance(raised.value, SerializationError)


def test_truncated_and_padded_bodies_are_undecodable(codec):
    data = codec.encode(STORE_TRANSACTIONS, STOCK_MOVEMENT_SALE)
    for broken in (data[:-1], data[: len(data) // 2], data + b"\x00"):
        with pytest.raises(UndecodableBodyError):
            codec.decode(STORE_TRANSACTIONS, broken)


def test_the_error_of_undecodable_bytes_is_the_same_each_time_they_are_read(codec):
    """Some of fastavro's messages name its reader object (`<_io.BytesIO object at 0x...>`); the error, which a dead
    letter carries, leaves the address out, so a record read again (a crash re-ingests it) says the same."""
    from app.engine import event_to_record
    from app.wire.topics import RESERVATION_COMMANDS
    from tests.engine.factories import reserve

    data = codec.encode(RESERVATION_COMMANDS, event_to_record(reserve("r1", 1, sku="SKU1", event_id="c1"))[1])
    truncated = data[:29]  # ends where a boolean is due: fastavro names its reader in the message
    errors = []
    for _ in range(2):
        with pytest.raises(UndecodableBodyError) as raised:
            codec.decode(RESERVATION_COMMANDS, truncated)
        errors.append(str(raised.value))
    assert errors[0] == errors[1]
    assert "cannot read boolean" in errors[0] and "0x" not in errors[0]


def test_a_record_of_another_type_is_a_schema_mismatch(codec):
    data = codec.encode("availability.ecommerce", CHANNEL_AVAILABILITY)
    with pytest.raises(SchemaMismatchError):
        codec.decode(STORE_TRANSACTIONS, data)


def test_the_same_record_type_from_a_sibling_topic_decodes(codec):
    data = codec.encode("availability.ecommerce", CHANNEL_AVAILABILITY)
    assert codec.decode("availability.marketplace", data).value == CHANNEL_AVAILABILITY


def test_error_reasons_are_distinct_codes():
    errors = SerializationError.__subclasses__()
    assert len({error.reason for error in errors}) == len(errors)


@pytest.mark.parametrize(
    "record",
    [
        {key: value for key, value in STOCK_MOVEMENT_SALE.items() if key != "sku"},
        {**STOCK_MOVEMENT_SALE, "quantity": "two"},
        {**STOCK_MOVEMENT_SALE, "type": "THEFT"},
        {**STOCK_MOVEMENT_SALE, "qty": 2},
    ],
    ids=["missing field", "wrong type", "unknown enum symbol", "extra field"],
)
def test_records_that_do_not_fit_the_schema_are_not_encoded(codec, record):
    with pytest.raises(UnencodableRecordError):
        codec.encode(STORE_TRANSACTIONS, record)


@pytest.mark.parametrize("topic", [DEAD_LETTERS.name, "availability.unknown-channel", "no-such-topic"])
def test_topics_without_an_avro_value_are_rejected(codec, topic):
    with pytest.raises(UnknownTopicError):
        codec.serde(topic)


def test_confluent_avro_deserializer_reads_our_records(codec):
    cases = (("availability.store-pickup", CHANNEL_AVAILABILITY), ("reservation-decisions", RESERVATION_DECISION))
    for topic, record in cases:
        deserialize = AvroDeserializer(codec.registry)
        context = SerializationContext(topic, MessageField.VALUE)
        assert deserialize(codec.encode(topic, record), context) == record


def test_confluent_avro_serializer_writes_records_we_read(codec):
    topic = "source.reservation-commands"
    serialize = AvroSerializer(
        codec.registry,
        load_schema_library().expanded_json("ReservationCommand"),
        conf={"auto.register.schemas": False, "use.latest.version": True},
    )
    record = SAMPLES["ReservationCommand"][0]
    data = serialize(record, SerializationContext(topic, MessageField.VALUE))
    assert codec.decode(topic, data).value == record


def test_an_evolved_writer_schema_is_resolved_with_one_registry_lookup(codec):
    topic = "availability.ecommerce"
    evolved = load_schema_library().expanded("ChannelAvailability")
    evolved["fields"].append({"name": "region", "type": ["null", "string"], "default": None, "doc": "new"})
    evolved_id = codec.registry.register_schema(f"{topic}-value", Schema(json.dumps(evolved), "AVRO"))
    body = io.BytesIO()
    evolved_parsed = fastavro.parse_schema(evolved, named_schemas={})
    fastavro.schemaless_writer(body, evolved_parsed, {**CHANNEL_AVAILABILITY, "region": "eu"})
    data = _framed(evolved_id, body.getvalue())

    lookups = []
    get_schema = codec.registry.get_schema
    codec.registry.get_schema = lambda *args, **kwargs: lookups.append(args) or get_schema(*args, **kwargs)
    decoded = [codec.decode(topic, data) for _ in range(3)]
    assert [record.value for record in decoded] == [CHANNEL_AVAILABILITY] * 3
    assert decoded[0].schema_id == evolved_id
    assert len(lookups) == 1


def test_keys_are_sku_or_sku_slash_location():
    assert ledger_key("SKU-1001") == "SKU-1001"
    assert availability_key("SKU-1001") == "SKU-1001"
    assert availability_key("SKU-1001", "store-042") == "SKU-1001/store-042"
    assert parse_availability_key("SKU-1001/store-042") == ("SKU-1001", "store-042")
    assert parse_availability_key("SKU-1001") == ("SKU-1001", None)


@pytest.mark.parametrize("bad", ["", "-leading-dash", "has/slash", "x" * 65, "trailing-newline\n", "spa ce"])
def test_keys_refuse_ids_outside_the_pattern(bad):
    with pytest.raises(ValueError):
        ledger_key(bad)
    with pytest.raises(ValueError):
        availability_key("SKU-1001", bad)
    assert IDENTIFIER_PATTERN.fullmatch("x" * 64)


@pytest.mark.parametrize(
    "data, expected",  # vectors from Kafka's own UtilsTest
    [(b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536), (b"abc", 479470107)],
)
def test_murmur2_matches_the_java_client(data, expected):
    assert murmur2(data) == expected


@given(st.binary(max_size=80))
def test_murmur2_matches_aiokafka_on_any_bytes(data):
    """Every length modulo 4 (the tail bytes) and the empty key, against aiokafka's port of the Java client (which
    answers the same 32 bits unsigned)."""
    from aiokafka.partitioner import murmur2 as aiokafka_murmur2

    assert murmur2(data) & 0xFFFFFFFF == aiokafka_murmur2(data)
    assert -(1 << 31) <= murmur2(data) < 1 << 31


def test_ledger_partition_agrees_with_aiokafka_default_partitioner():
    from aiokafka.partitioner import DefaultPartitioner

    partitions = list(range(8))
    for index in range(200):
        sku = f"SKU-{index:04d}"
        assert ledger_partition(sku, 8) == DefaultPartitioner()(sku.encode(), partitions, partitions)


# ------------------------------------------------------------------ every topic against confluent-kafka's Avro serdes
def _avro_topics(settings):
    return [topic for topic in all_topics(settings) if topic.value_record is not None]


def _every_topic_and_sample():
    settings = type("ChannelsOnly", (), {"channels": CHANNELS})()
    return [
        pytest.param(topic.name, index, id=f"{topic.name}[{index}]")
        for topic in _avro_topics(settings)
        for index in range(len(SAMPLES[topic.value_record]))
    ]


@pytest.mark.parametrize("topic, sample", _every_topic_and_sample())
def test_every_topic_interoperates_with_confluent_avro_serdes_on_one_registry(codec, topic, sample):
    """Our bytes are read by confluent-kafka's AvroDeserializer, and its AvroSerializer (registering by itself, with
    its default TopicNameStrategy) writes the same schema id and the same bytes we do."""
    record = SAMPLES[codec.serde(topic).topic.value_record][sample]
    context = SerializationContext(topic, MessageField.VALUE)
    ours = codec.encode(topic, record)

    deserialize = AvroDeserializer(codec.registry)  # plain dicts: union branches without their names
    assert deserialize(ours, context) == _without_branch_names(codec.decode(topic, ours).value)

    serialize = AvroSerializer(codec.registry, codec.schemas.expanded_json(codec.serde(topic).topic.value_record))
    theirs = serialize(record, context)
    assert theirs[:5] == ours[:5]  # magic byte and the schema id: the subject is `<topic>-value`, already registered
    assert theirs == ours
    assert codec.decode(topic, theirs).value == record


def _without_branch_names(value):
    """Our decoded form with each `(full name, record)` union branch replaced by the record, as confluent-kafka's
    deserializer returns it by default. (Which branch was written is checked by the serializer's identical bytes.)"""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], dict):
        return _without_branch_names(value[1])
    if isinstance(value, dict):
        return {key: _without_branch_names(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_branch_names(item) for item in value]
    return value


class _RecordingRegistry:
    """A mock registry client that records the calls the codec makes (the mock itself ignores set_config)."""

    def __init__(self):
        self._client = SchemaRegistryClient.new_client({"url": "mock://recording"})
        self.calls = []

    def set_config(self, subject_name=None, config=None):
        self.calls.append(("set_config", subject_name, config.to_dict()))
        return self._client.set_config(subject_name, config)

    def register_schema(self, subject_name, schema, normalize_schemas=False):
        self.calls.append(("register_schema", subject_name, None))
        return self._client.register_schema(subject_name, schema, normalize_schemas)

    def __getattr__(self, name):
        return getattr(self._client, name)


def test_each_subject_is_set_to_backward_before_its_schema_is_registered(settings):
    registry = _RecordingRegistry()
    codec = AvroCodec(settings, registry=registry)
    expected = []
    for topic in _avro_topics(settings):
        expected += [
            ("set_config", topic.value_subject, {"compatibility": "BACKWARD"}),
            ("register_schema", topic.value_subject, None),
        ]
    assert registry.calls == expected
    assert all(subject.endswith("-value") for subject in codec.schema_ids)  # no key subjects: keys are plain UTF-8


def test_a_registry_that_refuses_the_compatibility_level_stops_the_codec(settings):
    from app.wire.serialization import SchemaRegistrationError

    class RefusingRegistry(_RecordingRegistry):
        def set_config(self, subject_name=None, config=None):
            raise RuntimeError("403 Forbidden")

    with pytest.raises(SchemaRegistrationError, match="compatibility BACKWARD"):
        AvroCodec(settings, registry=RefusingRegistry())


def test_the_codec_is_the_only_place_that_speaks_avro_or_to_the_registry():
    """Every producer and consumer (worker stages, CLI, connector, replay and snapshot tools) goes through AvroCodec,
    so a configured registry URL reaches all of them; no module encodes Avro or builds a registry client itself."""
    offenders = []
    for path in sorted((REPO_ROOT / "app").rglob("*.py")) + sorted((REPO_ROOT / "tables").rglob("*.py")):
        if path.relative_to(REPO_ROOT).as_posix() in (
                "app/wire/serialization.py", "app/wire/avro_encoder.py", "app/wire/avro_decoder.py"):
            continue  # the codec, and the encoders and decoders it compiles
        source = path.read_text(encoding="utf-8")
        for word in ("fastavro", "confluent_kafka.schema_registry", "SchemaRegistryClient", "AvroSerializer",
                     "AvroDeserializer"):
            if word in source:
                offenders.append(f"{path.relative_to(REPO_ROOT)}: {word}")
    assert not offenders, offenders
