"""Quantities have an upper bound: a huge one is a stateless rejection, not an overflow on the way out."""

from __future__ import annotations

import pytest

from app.engine import ChannelAvailability, reasons, validate
from app.engine.events import MAX_QUANTITY
from tests.engine.factories import Ledger, adjustment, count, policy, receipt, reserve, sale


@pytest.mark.parametrize(
    "event, reason",
    [
        (receipt(MAX_QUANTITY + 1), reasons.INVALID_QUANTITY),
        (sale(2**62), reasons.INVALID_QUANTITY),
        (count(2**63 - 1), reasons.INVALID_QUANTITY),
        (adjustment(-(MAX_QUANTITY + 1)), reasons.INVALID_DELTA),
        (reserve("r1", 2**62), reasons.INVALID_QUANTITY),
    ],
)
def test_quantities_above_the_bound_are_invalid(event, reason):
    assert validate(event) == reason


def test_the_bound_itself_is_valid_and_two_huge_receipts_cannot_overflow_availability():
    assert validate(receipt(MAX_QUANTITY)) is None and validate(adjustment(-MAX_QUANTITY)) is None
    ledger = Ledger(channels=frozenset({"ecommerce"}))
    ledger.feed(policy(1, stores=("S1", "S2"), dcs=()))
    outputs = ledger.feed(receipt(2**62, "S1", event_id="huge-1"), receipt(2**62, "S2", event_id="huge-2"))
    assert [o.reason for o in outputs] == [reasons.INVALID_QUANTITY] * 2
    assert not any(isinstance(o, ChannelAvailability) for o in outputs)


def test_times_beyond_a_64_bit_long_are_invalid():
    from app.engine.events import MAX_LONG

    assert validate(receipt(1, time=MAX_LONG)) is None
    assert validate(receipt(1, time=MAX_LONG + 1)) == reasons.INVALID_EVENT_TIME
    assert validate(reserve("r1", 1, expires_at=MAX_LONG + 1)) == reasons.INVALID_EXPIRY
