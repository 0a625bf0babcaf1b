"""Crash recovery: the SKU-state and partition-state table values are written separately; a crash between the two
writes must not lose an expiry, and a replay from old states re-emits identical records."""

from __future__ import annotations

import copy

from hypothesis import example, given
from hypothesis import strategies as st

from app.engine import EncodingStore, PartitionEngine, ReservationOutcome
from app.engine.positions import ledger_position
from app.engine.state import Reservation, SkuState
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


# -- the SKU's own expiry heap (SkuState.pop_overdue): what the safety net above expires, without a walk over every
# active reservation

_steps = st.lists(st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 6), st.one_of(st.none(), st.integers(0, 100))),
    st.tuples(st.just("end"), st.integers(0, 6), st.none()),
    st.tuples(st.just("overdue"), st.integers(0, 100), st.none()),
    st.tuples(st.just("rebuild"), st.none(), st.none()),
), max_size=120)


@given(_steps)
@example([("reserve", 1, 5), ("end", 1, None), ("reserve", 1, 50), ("overdue", 10, None)])  # a stale entry's id again
def test_pop_overdue_gives_what_a_walk_over_the_active_reservations_gives(steps):
    """Reservations start (some with an expiry), end another way, are reserved again under the same id, and the
    clock moves: each call gives the overdue ones in (expires_at, id) order and the earliest expiry left, as the
    walk over every active reservation it replaces did."""
    state = SkuState("SKU")
    clock = 0
    for action, number, expires_at in steps:
        reservation_id = f"r{number}" if number is not None else None
        if action == "reserve" and reservation_id not in state.reservations:
            state.reservations[reservation_id] = Reservation(reservation_id, "web", 1, (("S1", 1),), expires_at)
            if expires_at is not None:
                state.add_expiry(expires_at, reservation_id)
        elif action == "end":
            state.reservations.pop(reservation_id, None)  # released or fulfilled: its heap entry goes stale
        elif action == "rebuild":
            state.rebuild_expiries()  # as after decoding
        elif action == "overdue":
            clock = max(clock, number)
            walk = sorted((r.expires_at, rid) for rid, r in state.reservations.items()
                          if r.expires_at is not None and r.expires_at <= clock)
            overdue = state.pop_overdue(clock)
            assert overdue == [rid for _, rid in walk]
            for rid in overdue:
                del state.reservations[rid]  # expired
            left = [r.expires_at for r in state.reservations.values() if r.expires_at is not None]
            assert state.next_expiry == (min(left) if left else None)


def test_the_expiry_heap_drops_the_entries_of_ended_reservations_once_they_are_most_of_it():
    state = SkuState("SKU")
    state.reservations["kept"] = Reservation("kept", "web", 1, (("S1", 1),), 10**9)
    state.add_expiry(10**9, "kept")
    for number in range(1_000):  # reserved and released before it expires, a thousand times
        rid = f"r{number}"
        state.reservations[rid] = Reservation(rid, "web", 1, (("S1", 1),), 5_000 + number)
        state.add_expiry(5_000 + number, rid)
        del state.reservations[rid]
        assert len(state.expiry_heap) <= 66
    assert state.pop_overdue(10**6) == [] and state.next_expiry == 10**9 and state.expiry_heap == [(10**9, "kept")]
