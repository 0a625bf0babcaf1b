"""The ingest stage's positional constructors (app.engine.constructors) build exactly what the frozen dataclasses'
own __init__ builds."""

from __future__ import annotations

import dataclasses

import pytest

from app.engine.constructors import trusted_constructor
from app.service.ingest import LedgerEntryDraft, SourceMessage, new_source_message


@pytest.mark.parametrize(
    "cls,arguments",
    [
        (SourceMessage, ("source.pos", 3, 41, b"SKU1", b"\x00value", [("h", b"1")])),
        (SourceMessage, ("source.pos", 3, 41, None, None)),  # headers left to its default
        (LedgerEntryDraft, (5, "SKU1", "StockMovement", {"sku": "SKU1"}, 2)),
    ],
)
def test_it_builds_what_the_dataclass_builds(cls, arguments):
    built = trusted_constructor(cls)(*arguments)
    expected = cls(*arguments)
    assert type(built) is cls
    assert built == expected
    assert dataclasses.astuple(built) == dataclasses.astuple(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.partition = 0


def test_the_ingest_consumers_constructor_is_the_source_messages():
    assert new_source_message("t", 0, 1, b"k", b"v") == SourceMessage("t", 0, 1, b"k", b"v", None)


def test_a_class_whose_slots_are_not_its_fields_is_refused():
    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    with pytest.raises((TypeError, AttributeError)):
        trusted_constructor(NoSlots)
