"""The compiled Avro encoders write exactly fastavro's bytes, for every schema the codec compiles."""

from __future__ import annotations

import io

import fastavro
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.wire.avro_encoder import EncodedRecord, UnsupportedSchema, compile_encoder
from app.wire.serialization import full_name, load_schema_library

LONGS = st.integers(-(1 << 63), (1 << 63) - 1)
INTS = st.integers(-(1 << 31), (1 << 31) - 1)


def values_for(schema, named: dict | None = None) -> st.SearchStrategy:
    """Records a schema accepts (fastavro-parsed, self-contained form: a named type is referenced after its first
    definition, `named` remembers them)."""
    named = {} if named is None else named
    if isinstance(schema, str):
        primitives = {"long": LONGS, "int": INTS, "string": st.text(max_size=20), "boolean": st.booleans(),
                      "null": st.none()}
        return primitives[schema] if schema in primitives else named[schema]
    if isinstance(schema, list):
        if len(schema) == 2 and schema[0] == "null":
            return st.one_of(st.none(), values_for(schema[1], named))
        branches = [values_for(branch, named) for branch in schema]  # records: tuple notation
        names = [branch if isinstance(branch, str) else branch["name"] for branch in schema]
        return st.one_of(*(branch.map(lambda record, name=name: (name, record))
                           for name, branch in zip(names, branches)))
    kind = schema["type"]
    if kind == "record":
        strategy = st.fixed_dictionaries({field["name"]: values_for(field["type"], named)
                                          for field in schema["fields"]})
    elif kind == "enum":
        strategy = st.sampled_from(schema["symbols"])
    elif kind == "array":
        return st.lists(values_for(schema["items"], named), max_size=3)
    else:
        return values_for(kind, named)
    named[schema["name"]] = strategy
    return strategy


def fastavro_bytes(schema, value) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, value)
    return buffer.getvalue()


LIBRARY = load_schema_library()
SCHEMAS = {name: fastavro.parse_schema(LIBRARY.expanded(name), named_schemas={}) for name in LIBRARY.names}
COMPILED = []
for name in LIBRARY.names:
    try:
        COMPILED.append((name, compile_encoder(SCHEMAS[name])))
    except UnsupportedSchema:
        pass


def test_the_output_records_compile():
    names = {name.rsplit(".", 1)[-1] for name, _ in COMPILED}
    assert set(name.rsplit(".", 1)[-1] for name in LIBRARY.names) == names


@pytest.mark.parametrize("name,encoder", COMPILED, ids=[name for name, _ in COMPILED])
@hypothesis_settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_compiled_encoder_writes_fastavros_bytes(name, encoder, data):
    schema = SCHEMAS[name]
    value = data.draw(values_for(schema))
    out = bytearray()
    encoder(value, out)
    assert bytes(out) == fastavro_bytes(schema, value)


@hypothesis_settings(max_examples=20, deadline=None)
@given(good=values_for(SCHEMAS[full_name("ChannelAvailability")]))
def test_a_record_the_schema_refuses_raises(good):
    encoder = dict(COMPILED)[full_name("ChannelAvailability")]
    for bad in ({**good, "status": "SOLD_OUT"}, {**good, "quantity": "7"}, {**good, "version": 1 << 64},
                {key: value for key, value in good.items() if key != "sku"}):
        with pytest.raises((ValueError, TypeError, KeyError, AttributeError)):
            encoder(bad, bytearray())


def test_longs_around_the_looked_up_range_are_fastavros_bytes():
    encoder = compile_encoder("long")
    edges = [0, 1, 63, 64, 127, 128, 8191, 8192, 8193, (1 << 63) - 1, -(1 << 63)]
    for value in [*range(-300, 300), *range(8000, 8400), *edges, *(-edge for edge in edges[1:-1])]:
        out = bytearray()
        encoder(value, out)
        assert bytes(out) == fastavro_bytes("long", value), value
    for refused in (True, 1.0, "1", None):
        with pytest.raises(TypeError):
            encoder(refused, bytearray())
    for too_large in (1 << 63, -(1 << 63) - 1):
        with pytest.raises(ValueError):
            encoder(too_large, bytearray())


def test_longs_written_in_line_by_a_record_are_fastavros_bytes():
    schema = fastavro.parse_schema({"type": "record", "name": "Times", "fields": [
        {"name": "at", "type": "long"}, {"name": "until", "type": ["null", "long"]}, {"name": "count", "type": "int"},
    ]}, named_schemas={})
    encoder = compile_encoder(schema)
    edges = [0, 1, 8191, 8192, 1_800_000_000_000, (1 << 62), (1 << 63) - 1, -1, -8192, -(1 << 63)]
    for value in edges:
        record = {"at": value, "until": value, "count": max(-(1 << 31), min(value, (1 << 31) - 1))}
        out = bytearray()
        encoder(record, out)
        assert bytes(out) == fastavro_bytes(schema, record), value
    for refused in ({"at": True, "until": None, "count": 0}, {"at": 1 << 63, "until": None, "count": 0},
                    {"at": 0, "until": None, "count": 1 << 31}):
        with pytest.raises((TypeError, ValueError)):
            encoder(refused, bytearray())


@given(data=st.data())
@hypothesis_settings(max_examples=60, deadline=None)
def test_a_record_given_as_its_encoded_body_is_written_as_those_bytes(data):
    """A union of records writes an EncodedRecord as its branch index and the body, in line in a record's encoder
    and on its own: what it writes for the record the body encodes."""
    ledger = SCHEMAS[full_name("LedgerEntry")]
    entry_union = next(field["type"] for field in ledger["fields"] if field["name"] == "entry")
    value = data.draw(values_for(ledger))
    name, record = value["entry"]
    entry = bytearray()
    compile_encoder(entry_union, {})((name, record), entry)  # a branch index below 64 is one byte
    body = EncodedRecord(bytes(entry[1:]))
    in_line, alone = bytearray(), bytearray()
    compile_encoder(ledger)({**value, "entry": (name, body)}, in_line)
    compile_encoder(entry_union, {})((name, body), alone)
    assert bytes(in_line) == fastavro_bytes(ledger, value)
    assert bytes(alone) == bytes(entry)
