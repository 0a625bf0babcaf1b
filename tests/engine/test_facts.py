"""Facts are never refused (docs/RULES.md, section 2): whatever order the source topics interleave in, the final
position is the sum of the facts, no channel ever shows less than 0, and every time a fact drives a bucket below
zero an exception says so."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import ChannelAvailability, ExceptionKind, InventoryException, Rejection, ReturnDisposition
from tests.engine.factories import Ledger, adjustment, count, policy, receipt, returned, sale, shipped

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# one source's facts, in that source's order: (kind, location, quantity)
pos_facts = st.lists(st.tuples(st.sampled_from(["sale", "return"]), st.sampled_from(["S1", "S2"]),
                               st.integers(1, 5)), max_size=25)
wms_facts = st.lists(st.tuples(st.sampled_from(["receipt", "adjust", "ship"]), st.sampled_from(["S1", "S2", "DC1"]),
                               st.integers(-4, 8).filter(bool)), max_size=25)


def _events(source: str, facts: list, start: int) -> list:
    events = []
    for n, (kind, location, quantity) in enumerate(facts):
        at, event_id = start + n, f"{source}-{n}"
        if kind == "sale":
            events.append(sale(quantity, location, time=at, event_id=event_id))
        elif kind == "return":
            events.append(returned(quantity, ReturnDisposition.RESTOCK, location, time=at, event_id=event_id))
        elif kind == "receipt":
            events.append(receipt(abs(quantity), location, time=at, event_id=event_id))
        elif kind == "adjust":
            events.append(adjustment(quantity, location, time=at, event_id=event_id))
        else:
            other = "S2" if location != "S2" else "S1"
            events.append(shipped(abs(quantity), location, other, time=at, event_id=event_id))
    return events


def _sum_of_facts(events: list) -> dict[str, int]:
    sellable: dict[str, int] = {}
    for event in events:
        kind = event.type.value
        delta = {"SALE": -1, "RETURN": 1, "RECEIPT": 1, "TRANSFER_SHIPPED": -1}.get(kind)
        change = event.delta if kind == "ADJUSTMENT" else delta * event.quantity
        sellable[event.location] = sellable.get(event.location, 0) + change
    return sellable


@PROPERTY
@given(pos=pos_facts, wms=wms_facts, interleaving=st.randoms(use_true_random=False))
def test_the_final_position_is_the_sum_of_the_facts_whatever_the_interleaving(pos, wms, interleaving):
    pos_events, wms_events = _events("pos", pos, 1_000), _events("wms", wms, 2_000)
    merged, a, b = [], list(pos_events), list(wms_events)
    while a or b:  # each source in its own order, the two interleaved at random: as two topics are ingested
        source = a if (a and (not b or interleaving.random() < 0.5)) else b
        merged.append(source.pop(0))
    ledger = Ledger()
    ledger.apply(policy(stores=("S1", "S2"), dcs=("DC1",)))
    sellable = {}
    for event in merged:
        out = ledger.apply(event)
        assert not any(isinstance(o, Rejection) for o in out), out  # a well-formed fact is never refused
        location = event.location
        before = sellable.get(location, 0)
        position = ledger.sku().positions[location]
        after = sellable[location] = position.sellable
        negative = [o for o in out if isinstance(o, InventoryException) and o.kind is ExceptionKind.NEGATIVE_STOCK
                    and o.location == location]
        assert bool(negative) == (after < 0 and after < before), (event, before, after)
        assert all(o.quantity >= 0 for o in out if isinstance(o, ChannelAvailability))
    expected = _sum_of_facts(pos_events + wms_events)
    positions = ledger.sku().positions if ledger.sku() else {}
    assert {location: p.sellable for location, p in positions.items() if location in expected} == expected


@PROPERTY
@given(before=st.lists(st.integers(-3, 6).filter(bool), max_size=6),
       after=st.lists(st.integers(-3, 6).filter(bool), max_size=6),
       counted=st.integers(0, 20), interleaving=st.randoms(use_true_random=False))
def test_a_count_plus_the_changes_after_it_whatever_the_order_they_arrive_in(before, after, counted, interleaving):
    """A count at t and the sellable changes around it (within the journal) end at count + the changes after t,
    whichever arrives first."""
    changes = [adjustment(d, "S1", time=100 + n, event_id=f"b{n}") for n, d in enumerate(before)]
    changes += [adjustment(d, "S1", time=300 + n, event_id=f"a{n}") for n, d in enumerate(after)]
    the_count = count(counted, "S1", time=200, event_id="count")
    events = changes + [the_count]
    interleaving.shuffle(events)
    ledger = Ledger()
    ledger.apply(policy())
    for event in events:
        out = ledger.apply(event)
        assert not any(isinstance(o, Rejection) for o in out)
    assert ledger.sku().positions["S1"].sellable == counted + sum(after)
