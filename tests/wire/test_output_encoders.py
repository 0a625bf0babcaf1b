"""Availability records encoded from the output objects (app/wire/output_encoders.py) are the bytes of the
record's dict encoded (`serde.encode(output.to_record())`), whatever the output, including the ones the compiled
code does not take."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.engine import AvailabilityStatus, ChannelAvailability
from app.engine.positions import ledger_position
from app.settings import Settings
from app.wire.avro_encoder import UnsupportedSchema, compile_object_encoder
from app.wire.output_encoders import SOURCES, availability_encoder
from app.wire.serialization import AvroCodec, UnencodableRecordError, load_schema_library
from app.wire.topics import availability_topic

CODEC = AvroCodec(Settings(_env_file=None, channels=["ecommerce"]))
SERDE = CODEC.serde(availability_topic("ecommerce"))
ENCODE = availability_encoder(SERDE)
IDS = st.text(alphabet="abcXYZ019-/é", min_size=1, max_size=12)
LONGS = st.integers(0, (1 << 63) - 1)

outputs = st.builds(
    ChannelAvailability,
    channel=IDS, sku=IDS, location=st.none() | IDS, quantity=st.integers(0, 10**12),
    status=st.sampled_from(list(AvailabilityStatus)), version=st.integers(1, 1 << 40), event_id=IDS,
    ledger_partition=st.integers(0, 1000),
    ledger_position=st.builds(ledger_position, st.integers(0, 1 << 40), st.integers(0, 10_000)),
    policy_version=st.integers(0, 1 << 20), event_time=LONGS, snapshot=st.booleans(),
    fallbacks=st.lists(IDS, max_size=3).map(tuple),
)


@given(outputs)
def test_the_bytes_are_those_of_the_record_encoded(output: ChannelAvailability) -> None:
    assert ENCODE(output) == SERDE.encode(output.to_record())


def test_every_field_of_the_schema_has_a_source() -> None:
    fields = [field["name"] for field in load_schema_library().expanded("ChannelAvailability")["fields"]]
    assert sorted(SOURCES) == sorted(fields) == sorted(ChannelAvailability(
        "c", "s", None, 1, AvailabilityStatus.IN_STOCK, 1, "e", 0, 0, 0, 0).to_record())


def test_what_the_compiled_code_refuses_goes_the_dicts_way_errors_included() -> None:
    beyond_a_long = ChannelAvailability("c", "s", None, 1 << 63, AvailabilityStatus.IN_STOCK, 1, "e", 0, 0, 0, 0)
    with pytest.raises(UnencodableRecordError):
        ENCODE(beyond_a_long)
    with pytest.raises(UnencodableRecordError):
        SERDE.encode(beyond_a_long.to_record())
    negative = ChannelAvailability("c", "s", "l", -5, AvailabilityStatus.LOW_STOCK, 2, "e", 1, 7, 0, 3)
    assert ENCODE(negative) == SERDE.encode(negative.to_record())  # written by the slower path of a long


def test_a_source_must_be_given_for_every_field_and_only_for_fields() -> None:
    import fastavro

    schema = fastavro.parse_schema(load_schema_library().expanded("ChannelAvailability"), named_schemas={})
    with pytest.raises(UnsupportedSchema, match="no source for \\['fallbacks'\\]"):
        compile_object_encoder(schema, {name: source for name, source in SOURCES.items() if name != "fallbacks"})
    with pytest.raises(UnsupportedSchema, match="no field for \\['colour'\\]"):
        compile_object_encoder(schema, {**SOURCES, "colour": "value.colour"})
