"""Crash recovery: the SKU-state and partition-state table values are written separately; a crash between the two
writes must not lose an expiry, and a replay from old states re-emits identical records."""

from __future__ import annotations

import copy

from app.engine import EncodingStore, PartitionEngine, ReservationOutcome
from app.engine.positions import ledger_position
from tests.engine.factories import CHANNELS, policy, receipt, reserve, tick


def entries():
    return [policy(), receipt(10, "DC1"), reserve("r1", 4, expires_at=1000, time=10), receipt(1, "S1"), tick(1000)]


def run(store, events, first_offset=0):
    engine = PartitionEngine(0, store, CHANNELS)
    out = []
    for offset, event in enumerate(events, start=first_offset):
        out.extend(engine.apply(event, ledger_position(offset)))
    return out


def expired(outputs):
    return [o for o in outputs if getattr(o, "outcome", None) is ReservationOutcome.EXPIRED]


def test_replay_from_old_states_reemits_identical_records():
    events = entries()
    store = EncodingStore()
    run(store, events[:2])
    saved = copy.deepcopy(store)
    first = run(store, events[2:], first_offset=2)
    replay = run(saved, events[2:], first_offset=2)
    assert [(type(o), o.to_record()) for o in replay] == [(type(o), o.to_record()) for o in first]


def test_sku_states_newer_than_partition_state_keeps_the_expiry():
    """SKU states written, crash before the partition state: the reserve is redelivered (the SKU already applied
    it) and re-registers the expiry, so the tick still expires the reservation, once."""
    events = entries()
    store = EncodingStore()
    run(store, events[:2])
    old_partition = store.partition_value
    run(store, events[2:4], first_offset=2)  # the reserve is applied and its SKU state written...
    store.partition_value = old_partition  # ...but the partition state (with the expiry index) was not
    replay = run(store, events[2:], first_offset=2)
    assert [d.reservation_id for d in expired(replay)] == ["r1"]
    assert expired(replay)[0].to_record()["ledger_offset"] == 4


def test_partition_state_newer_than_sku_states_keeps_the_expiry():
    """Partition state written (expiry already popped from the index), crash before the SKU states: the SKU still
    holds the reservation; it expires when the SKU is next touched, not never."""
    events = entries()
    store = EncodingStore()
    run(store, events[:4])
    old_sku = dict(store.sku_values)
    run(store, events[4:], first_offset=4)
    store.sku_values = old_sku
    replay = run(store, events[4:] + [receipt(1, "S2", time=1001)], first_offset=4)
    assert [(d.reservation_id, d.to_record()["ledger_offset"]) for d in expired(replay)] == [("r1", 5)]
