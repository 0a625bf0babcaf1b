"""Events built from decoded records by the hot path's positional constructors are the dataclasses' own values."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine import EventDecodeError, event_from_record, event_to_record, reasons
from app.engine.events import (
    MovementType,
    ReservationAction,
    ReservationCommand,
    ReturnDisposition,
    StockBucket,
    StockMovement,
)

text = st.text(max_size=8)
maybe_int = st.none() | st.integers(-10**12, 10**12)
movements = st.builds(
    StockMovement, event_id=text, sku=text, location=text, event_time=st.integers(0, 2**53), source=text,
    type=st.sampled_from(MovementType), quantity=maybe_int, delta=maybe_int, reason=st.none() | text,
    disposition=st.none() | st.sampled_from(ReturnDisposition), counterparty_location=st.none() | text,
    from_bucket=st.none() | st.sampled_from(StockBucket), to_bucket=st.none() | st.sampled_from(StockBucket),
)
commands = st.builds(
    ReservationCommand, event_id=text, command=st.sampled_from(ReservationAction), reservation_id=text, sku=text,
    channel=text, quantity=st.integers(-5, 10**9), location=st.none() | text, allow_partial=st.booleans(),
    expires_at=maybe_int, event_time=st.integers(0, 2**53), source=text,
)


@settings(max_examples=300)
@given(event=movements | commands)
def test_an_event_read_from_its_record_equals_the_one_the_dataclass_builds(event):
    read = event_from_record(*event_to_record(event))
    assert type(read) is type(event) and read == event and hash(read) == hash(event)
    assert [getattr(read, field.name) for field in dataclasses.fields(read)] == [
        getattr(event, field.name) for field in dataclasses.fields(event)
    ]
    for field in dataclasses.fields(read):  # enum fields hold the members, not their strings
        assert type(getattr(read, field.name)) is type(getattr(event, field.name))
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.sku = "changed"


@pytest.mark.parametrize("name, field, value", [
    ("StockMovement", "type", "THEFT"),
    ("StockMovement", "type", ["SALE"]),  # not hashable: the enum says what is wrong
    ("ReservationCommand", "command", "HOLD"),
])
def test_an_unknown_symbol_is_an_undecodable_record_naming_it(name, field, value):
    event = StockMovement("e1", "A", "S1", 1, "pos", MovementType.SALE, 1) if name == "StockMovement" else \
        ReservationCommand("e1", ReservationAction.RESERVE, "r1", "A", "web", 1)
    _, record = event_to_record(event)
    record[field] = value
    with pytest.raises(EventDecodeError) as raised:
        event_from_record(name, record)
    assert raised.value.reason == reasons.UNDECODABLE_RECORD and repr(value) in str(raised.value)


def test_a_record_without_a_required_field_is_undecodable():
    _, record = event_to_record(StockMovement("e1", "A", "S1", 1, "pos", MovementType.SALE, 1))
    del record["location"]
    with pytest.raises(EventDecodeError) as raised:
        event_from_record("StockMovement", record)
    assert raised.value.reason == reasons.UNDECODABLE_RECORD and "location" in str(raised.value)
