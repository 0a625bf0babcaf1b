"""The compiled Avro decoders (app/wire/avro_decoder.py) return exactly what fastavro returns, for the value schema of
every topic the codec registers; on bad or unusual bytes the codec answers as its fastavro path does."""

from __future__ import annotations

import io
import random
from datetime import datetime

import fastavro
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.settings import Settings
from app.wire import serialization
from app.wire.avro_decoder import RecordObject, UnsupportedSchema, compile_decoder
from app.wire.serialization import AvroCodec, RecordSerde, SerializationError, UndecodableBodyError
from app.wire.topics import LEDGER
from tests.benchmarks.test_ledger_projection import ledger_values
from tests.wire.test_avro_encoder import values_for

SETTINGS = Settings(_env_file=None)
CODEC = AvroCodec(SETTINGS)
REFERENCE = AvroCodec(SETTINGS)  # the same serdes with the compiled decoders off: the fastavro path alone
for _serde in REFERENCE._serdes.values():
    _serde._decoder = None
TOPICS = sorted(CODEC._serdes)
RECORDS = {topic: values_for(fastavro.parse_schema(CODEC.schemas.expanded(CODEC.serde(topic).topic.value_record),
                                                   named_schemas={})) for topic in TOPICS}


def fastavro_read(schema, data: bytes, pos: int = 0):
    buffer = io.BytesIO(data)
    buffer.seek(pos)
    value = fastavro.schemaless_reader(buffer, schema, None, return_record_name=True, return_record_name_override=True)
    return value, buffer.tell()


def outcome(serde: RecordSerde, data: bytes):
    """The decoded value, or the class of the codec error."""
    try:
        return serde.decode(data).value
    except SerializationError as error:
        return type(error)


def test_every_topic_value_schema_compiles():
    assert TOPICS and all(CODEC.serde(topic)._decoder is not None for topic in TOPICS)


@pytest.mark.parametrize("topic", TOPICS)
@hypothesis_settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_compiled_decoder_returns_what_fastavro_returns(topic, data):
    serde = CODEC.serde(topic)
    value = data.draw(RECORDS[topic])
    encoded = serde.encode(value)
    expected = fastavro_read(CODEC.schemas.parsed(serde.topic.value_record), encoded, 5)
    assert serde._decoder(encoded, 5) == expected == (expected[0], len(encoded))
    assert serde.decode(encoded).value == REFERENCE.serde(topic).decode(encoded).value == expected[0]


@pytest.mark.parametrize("topic", TOPICS)
@hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_bad_bytes_get_the_answer_of_the_fastavro_path(topic, data):
    """Truncated, padded or corrupted: the same error class (or, where fastavro reads the bytes, the same value)."""
    serde, reference = CODEC.serde(topic), REFERENCE.serde(topic)
    encoded = serde.encode(data.draw(RECORDS[topic]))
    cut = data.draw(st.integers(5, len(encoded) - 1))
    position = data.draw(st.integers(5, len(encoded) - 1))
    corrupted = bytearray(encoded)
    corrupted[position] = data.draw(st.integers(0, 255))
    for bad in (encoded[:cut], encoded + b"\x00", bytes(corrupted)):
        assert outcome(serde, bad) == outcome(reference, bad)
    assert outcome(serde, encoded[:cut]) is UndecodableBodyError


def test_long_strings_and_arrays_of_the_ledger():
    """Batches of up to 300 entries (two-byte counts), 64+ byte ids (two-byte lengths), large offsets and times."""
    serde = CODEC.serde(LEDGER)
    for value in ledger_values(serde, 3_000, seed=7):
        assert serde._decoder(value, 5) == fastavro_read(CODEC.schemas.parsed(serde.topic.value_record), value, 5)


def test_valid_records_do_not_reach_fastavro(monkeypatch):
    serde = CODEC.serde(LEDGER)
    values = ledger_values(serde, 300, seed=2)
    expected = [REFERENCE.serde(LEDGER).decode(value).value for value in values]

    def refuse(*args, **kwargs):
        raise AssertionError("fastavro was called")

    monkeypatch.setattr(serialization.fastavro, "schemaless_reader", refuse)
    assert [serde.decode(value).value for value in values] == expected
    with pytest.raises(UndecodableBodyError, match="fastavro was called"):  # bad bytes do reach it
        serde.decode(values[0][:-1])


UNUSUAL = {  # (schema, body): bytes the compiled decoder refuses and fastavro reads
    "non-canonical union index": (["null", "long"], b"\x82\x00\x04"),
    "negative union index": (["null", "string", "long"], b"\x05"),  # -3: fastavro indexes the list from the end
    "negative enum index": ({"type": "enum", "name": "toy.E", "symbols": ["A", "B", "C"]}, b"\x01"),
    "varint of eleven bytes": ("long", b"\xff" * 10 + b"\x01"),  # fastavro wraps it around 64 bits
    "ten-byte varint beyond 64 bits": ("long", b"\xff" * 9 + b"\x7f"),
    "length of eleven bytes": ("string", b"\x80" * 10 + b"\x00"),
}


@pytest.mark.parametrize("name", UNUSUAL)
def test_unusual_bytes_fall_back_to_fastavro(name):
    schema, body = UNUSUAL[name]
    parsed = fastavro.parse_schema(schema, named_schemas={})
    decoder = compile_decoder(parsed)
    with pytest.raises((ValueError, IndexError)):
        decoder(body, 0)
    # through a serde: fastavro's value
    serde = RecordSerde(CODEC.serde(LEDGER).topic, 999, parsed, CODEC)
    assert serde._decoder is not None
    data = bytes([0]) + (999).to_bytes(4, "big") + body
    assert serde.decode(data).value == fastavro_read(parsed, body)[0]


def test_a_schema_the_compiler_refuses_is_read_by_fastavro():
    parsed = fastavro.parse_schema({"type": "record", "name": "toy.Stamped", "fields": [
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}, named_schemas={})
    with pytest.raises(UnsupportedSchema):
        compile_decoder(parsed)
    serde = RecordSerde(CODEC.serde(LEDGER).topic, 999, parsed, CODEC)
    assert serde._decoder is None
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, {"at": 1_700_000_000_000})
    value = serde.decode(bytes([0]) + (999).to_bytes(4, "big") + buffer.getvalue()).value
    assert isinstance(value["at"], datetime)


TOY = {"type": "record", "name": "toy.Outer", "fields": [
    {"name": "scores", "type": {"type": "map", "values": {"type": "array", "items": "double"}}},
    {"name": "inner", "type": ["null", {"type": "record", "name": "toy.Inner", "fields": [
        {"name": "flag", "type": "boolean"},
        {"name": "color", "type": {"type": "enum", "name": "toy.Color", "symbols": ["RED", "BLUE"]}},
        {"name": "blob", "type": {"type": "fixed", "name": "toy.Blob", "size": 3}},
        {"name": "raw", "type": "bytes"},
        {"name": "ratio", "type": "float"},
        {"name": "count", "type": "int"},
    ]}]},
    {"name": "inner_or_color", "type": ["toy.Inner", "toy.Color"]},  # two name references: both named
    {"name": "inner_or_enum", "type": ["toy.Inner", {"type": "enum", "name": "toy.Size", "symbols": ["S", "M"]}]},
    {"name": "color_or_size", "type": ["null", "toy.Color", "toy.Size", "string"]},
    {"name": "chain", "type": ["null", {"type": "record", "name": "toy.Link", "fields": [
        {"name": "label", "type": "string"}, {"name": "next", "type": ["null", "toy.Link"]}]}]},
]}


def toy_value(rng: random.Random) -> dict:
    def inner():
        return {"flag": rng.random() < 0.5, "color": rng.choice(("RED", "BLUE")), "ratio": 0.25,
                "blob": bytes(rng.randrange(256) for _ in range(3)), "raw": bytes(rng.randrange(200)),
                "count": rng.randint(-2**31, 2**31 - 1)}

    def chain(length):
        return None if length == 0 else {"label": "é" * rng.randrange(40), "next": chain(length - 1)}

    return {"scores": {f"k{n}": [rng.random()] * rng.randrange(70) for n in range(rng.randrange(4))},
            "inner": rng.choice((None, inner())),
            "inner_or_color": rng.choice((("toy.Inner", inner()), ("toy.Color", "BLUE"))),
            "inner_or_enum": rng.choice((inner(), "M")),
            "color_or_size": rng.choice((None, ("toy.Color", "RED"), ("toy.Size", "S"), "text")),
            "chain": chain(rng.randrange(5))}


def test_other_types_and_fastavros_naming_of_union_branches():
    """Maps, fixed, bytes, float, double, enums in unions (named when spelled as a reference among several named
    types), a union with one record (never named) and a recursive record."""
    parsed = fastavro.parse_schema(TOY, named_schemas={})
    decoder = compile_decoder(parsed)
    rng = random.Random(3)
    seen = set()
    for _ in range(300):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, toy_value(rng))
        data = b"pad" + buffer.getvalue()
        value, end = decoder(data, 3)
        assert (value, end) == fastavro_read(parsed, data, 3) and end == len(data)
        seen.add(repr(value["inner_or_color"])[:12])
    assert seen == {"('toy.Inner'", "('toy.Color'"}


INNER_FIELDS = ("flag", "color", "blob", "raw", "ratio", "count")


def built_inner(*values):
    return ("built", values)


def as_built(value: dict) -> dict:
    """fastavro's value of TOY with each toy.Inner as `built_inner` makes it, its colour lower-case (colours outside an
    Inner stay as they are)."""
    def inner(record):
        return built_inner(*(record[name].lower() if name == "color" else record[name] for name in INNER_FIELDS))

    named = value["inner_or_color"]
    return {**value,
            "inner": None if value["inner"] is None else inner(value["inner"]),
            "inner_or_color": (named[0], inner(named[1])) if named[0] == "toy.Inner" else named,
            "inner_or_enum": inner(value["inner_or_enum"]) if isinstance(value["inner_or_enum"], dict)
            else value["inner_or_enum"]}


def test_chosen_records_are_built_as_objects_with_their_enums_as_given():
    parsed = fastavro.parse_schema(TOY, named_schemas={})
    decoder = compile_decoder(parsed, objects={"toy.Inner": RecordObject(INNER_FIELDS, built_inner)},
                              enums={"toy.Color": str.lower})
    rng = random.Random(5)
    built = 0
    for _ in range(300):
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, parsed, toy_value(rng))
        data = buffer.getvalue()
        expected, end = fastavro_read(parsed, data)
        assert decoder(data, 0) == (as_built(expected), end)
        built += expected["inner"] is not None
    assert built > 100


@pytest.mark.parametrize("objects, enums", [
    ({"toy.Inner": RecordObject(INNER_FIELDS[::-1], built_inner)}, {}),  # fields in another order than the writer's
    ({"toy.Inner": RecordObject(INNER_FIELDS[:-1], built_inner)}, {}),  # a field fewer
    ({"toy.Inner": RecordObject(INNER_FIELDS, built_inner)}, {"toy.Color": {"RED": 1}.__getitem__}),  # no BLUE
])
def test_objects_that_do_not_fit_the_writer_schema_are_refused(objects, enums):
    """The caller then reads dicts (RecordSerde.object_decoder answers None for every record)."""
    parsed = fastavro.parse_schema(TOY, named_schemas={})
    with pytest.raises(UnsupportedSchema):
        compile_decoder(parsed, objects=objects, enums=enums)
    serde = RecordSerde(CODEC.serde(LEDGER).topic, 999, parsed, CODEC)
    assert serde.object_decoder(objects, enums)(bytes([0]) + (999).to_bytes(4, "big") + b"\x00") is None


def test_an_object_decoder_reads_only_its_own_schema_id_and_well_formed_bytes():
    serde = CODEC.serde(LEDGER)
    decode = serde.object_decoder({}, {})  # no objects: the dicts of `decode`
    value = serde.encode({"entry": ("inventory.availability.ClockTick", {"event_time": 5}), "source_topic": None,
                          "source_partition": None, "source_offset": None, "ingest_time": 7, "source_index": None})
    assert decode(value) == serde.decode(value).value
    other_id = value[:1] + (serde.schema_id + 1).to_bytes(4, "big") + value[5:]
    assert [decode(other_id), decode(value[:-1]), decode(value + b"\x00"), decode(bytearray(value))] == [None] * 4
