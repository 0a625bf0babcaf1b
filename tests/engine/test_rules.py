"""Example tests: one per rule of docs/RULES.md, with the numbers of its worked examples."""

from __future__ import annotations

from app.engine import (
    AvailabilityStatus,
    ChannelAvailability,
    ChannelGranularity,
    ExceptionKind,
    LocationType,
    PositionBucket,
    ReservationOutcome,
    ReturnDisposition,
    SafetyStockScope,
    StockBucket,
    reasons,
)
from app.engine.policy import Policy
from app.engine.positions import ledger_position
from tests.engine.factories import (
    Ledger,
    adjustment,
    availability,
    bucket_move,
    channel,
    count,
    decisions,
    exceptions,
    fulfil,
    policy,
    receipt,
    received,
    rejections,
    release,
    reserve,
    returned,
    safety,
    sale,
    shipped,
    tick,
)

STORE, DC = LocationType.STORE, LocationType.DISTRIBUTION_CENTRE
LOCATION = ChannelGranularity.LOCATION

WORKED_SAFETY = (
    safety(SafetyStockScope.LOCATION_TYPE, 2, location_type=STORE),
    safety(SafetyStockScope.SKU_LOCATION, 0, sku="SKU1", location="S2"),
    safety(SafetyStockScope.SKU, 1, sku="SKU2"),
)
WORKED_CHANNELS = (
    channel("ecommerce", 0, protected_quantity=3, low_stock_threshold=5),
    channel("marketplace", 1, location_types=(DC,), share_bp=5000, buffer=3, max_advertised=12, low_stock_threshold=5),
    channel("wholesale", 1, location_types=(DC,), include_in_transit=True),
    channel("store-pickup", 2, granularity=LOCATION, location_types=(STORE,), buffer=1, low_stock_threshold=2),
)


def worked_ledger() -> Ledger:
    ledger = Ledger()
    ledger.feed(
        policy(safety=WORKED_SAFETY, channels=WORKED_CHANNELS),
        receipt(10, "S1"),
        receipt(5, "S2"),
        receipt(40, "DC1"),
        receipt(6, "S1"),
        shipped(6, "S1", "DC1"),
    )
    return ledger


def current(ledger: Ledger) -> dict:
    """(channel, location) -> (quantity, status) of the last record of each key."""
    values = {}
    for record in availability(ledger.outputs):
        values[(record.channel, record.location)] = (record.quantity, record.status)
    return values


def test_safety_stock_most_specific_rule_wins():
    compiled = Policy(policy(safety=WORKED_SAFETY, channels=WORKED_CHANNELS), 0)
    assert compiled.safety_stock("SKU1", "S1") == 2  # LOCATION_TYPE STORE
    assert compiled.safety_stock("SKU1", "S2") == 0  # SKU_LOCATION beats LOCATION_TYPE, even when smaller
    assert compiled.safety_stock("SKU1", "DC1") == 0  # no rule
    assert compiled.safety_stock("SKU2", "S1") == 1  # SKU beats LOCATION_TYPE


def test_worked_example_channel_availability():
    ledger = worked_ledger()
    position = ledger.sku().positions
    assert (position["S1"].sellable, position["S2"].sellable, position["DC1"].sellable) == (10, 5, 40)
    assert position["DC1"].in_transit == 6
    assert (position["S1"].atp, position["S2"].atp, position["DC1"].atp) == (8, 5, 40)
    IN, LOW, OUT = AvailabilityStatus.IN_STOCK, AvailabilityStatus.LOW_STOCK, AvailabilityStatus.OUT_OF_STOCK
    assert current(ledger) == {
        ("ecommerce", None): (53, IN),  # 8 + 5 + 40
        ("marketplace", None): (12, IN),  # 40 - 3 = 37; 50% -> 18; - buffer 3 = 15; cap 12
        ("wholesale", None): (43, IN),  # 40 + 6 in transit - 3 protected
        ("store-pickup", "S1"): (4, IN),  # 8 - 3 = 5; - buffer 1
        ("store-pickup", "S2"): (1, LOW),  # 5 - 3 = 2; - buffer 1; <= 2
    }
    assert OUT  # status vocabulary


def test_worked_example_reservation_counts_against_own_share():
    ledger = worked_ledger()
    out = ledger.feed(reserve("r1", 10, channel_name="marketplace"))
    decision = decisions(out)[0]
    assert decision.outcome is ReservationOutcome.ACCEPTED
    assert [(line.location, line.quantity) for line in decision.lines] == [("DC1", 10)]
    values = current(ledger)
    # pool 30, own 10: 30 + 10 - 3 = 37; 50% -> 18; - own 10 = 8; - buffer 3 = 5 -> LOW_STOCK
    assert values[("marketplace", None)] == (5, AvailabilityStatus.LOW_STOCK)
    assert values[("ecommerce", None)] == (43, AvailabilityStatus.IN_STOCK)
    assert values[("wholesale", None)] == (33, AvailabilityStatus.IN_STOCK)


def test_worked_example_sourcing_order_dc_first_then_stores_by_id():
    ledger = worked_ledger()
    ledger.feed(reserve("r1", 10, channel_name="marketplace"))
    decision = decisions(ledger.feed(reserve("r2", 35)))[0]
    assert [(line.location, line.quantity) for line in decision.lines] == [("DC1", 30), ("S1", 5)]
    assert ledger.shown("ecommerce") == 8  # 0 + 3 + 5


def test_reserve_is_all_or_nothing_unless_partial():
    ledger = worked_ledger()
    refused = decisions(ledger.feed(reserve("r1", 54)))[0]
    assert (refused.outcome, refused.reason, refused.reserved_quantity) == (
        ReservationOutcome.REJECTED,
        reasons.INSUFFICIENT_STOCK,
        0,
    )
    partial = decisions(ledger.feed(reserve("r2", 54, allow_partial=True)))[0]
    assert (partial.outcome, partial.reserved_quantity) == (ReservationOutcome.ACCEPTED, 53)


def test_reserve_at_location_must_be_fed_by_channel_and_fit_there():
    ledger = worked_ledger()
    out = ledger.feed(reserve("r1", 1, channel_name="marketplace", location="S1"))
    assert decisions(out)[0].reason == reasons.LOCATION_NOT_IN_CHANNEL
    out = ledger.feed(reserve("r2", 5, channel_name="store-pickup", location="S1"))
    assert decisions(out)[0].reason == reasons.INSUFFICIENT_STOCK  # store-pickup shows 4 at S1
    out = ledger.feed(reserve("r3", 4, channel_name="store-pickup", location="S1"))
    assert decisions(out)[0].outcome is ReservationOutcome.ACCEPTED
    assert ledger.shown("store-pickup", location="S1") == 0


def test_reserve_repeat_returns_same_decision_and_reserves_nothing_more():
    ledger = worked_ledger()
    first = decisions(ledger.feed(reserve("r1", 3)))[0]
    again = decisions(ledger.feed(reserve("r1", 3)))[0]
    assert (again.outcome, again.lines, again.reserved_quantity) == (first.outcome, first.lines, 3)
    assert sum(p.reserved for p in ledger.sku().positions.values()) == 3


def test_release_returns_quantity_and_fulfil_is_a_sale():
    ledger = worked_ledger()
    ledger.feed(reserve("r1", 3), reserve("r2", 2))
    assert ledger.shown("ecommerce") == 48
    assert decisions(ledger.feed(release("r1")))[0].outcome is ReservationOutcome.RELEASED
    assert ledger.shown("ecommerce") == 51
    assert decisions(ledger.feed(fulfil("r2")))[0].outcome is ReservationOutcome.FULFILLED
    state = ledger.sku()
    assert state.positions["DC1"].sellable == 38 and state.positions["DC1"].reserved == 0
    assert ledger.shown("ecommerce") == 51
    out = ledger.feed(fulfil("r9"))
    assert decisions(out)[0].reason == reasons.UNKNOWN_RESERVATION
    assert rejections(out)[0].reason == reasons.UNKNOWN_RESERVATION


def test_expiry_when_partition_clock_reaches_expires_at():
    ledger = worked_ledger()
    ledger.feed(reserve("r1", 2, expires_at=1000, time=500))
    assert decisions(ledger.feed(tick(999))) == []
    out = ledger.feed(tick(1000))
    expired = decisions(out)[0]
    assert (expired.outcome, expired.reserved_quantity, expired.event_id) == (ReservationOutcome.EXPIRED, 2, "tick-0-8")
    assert ledger.shown("ecommerce") == 53
    out = ledger.feed(release("r1"))
    assert decisions(out)[0].reason == reasons.RESERVATION_NOT_ACTIVE
    assert rejections(out)[0].detail == "RELEASE: it ended EXPIRED"  # the dead letter says how it ended


def test_a_command_for_a_refused_reservation_says_it_was_refused():
    ledger = worked_ledger()
    assert decisions(ledger.feed(reserve("r1", 10_000)))[0].outcome is ReservationOutcome.REJECTED
    out = ledger.feed(fulfil("r1"))
    assert decisions(out)[0].reason == reasons.RESERVATION_NOT_ACTIVE
    assert rejections(out)[0].detail == "FULFIL: its RESERVE was refused (INSUFFICIENT_STOCK)"


def test_expiry_caused_by_any_entry_that_moves_the_clock():
    ledger = worked_ledger()
    ledger.feed(reserve("r1", 2, expires_at=1000, time=500))
    out = ledger.feed(receipt(1, "S2", time=1500))
    assert decisions(out)[0].outcome is ReservationOutcome.EXPIRED
    assert out.index(decisions(out)[0]) == 0  # the expiry comes first, then the receipt's own changes


def test_expiry_freed_by_a_reserve_is_published_before_its_decision():
    """A reserve whose event time passes another reservation's expiry first expires it and publishes the freed
    units, then decides: the acceptance fits what the channel showed just before it."""
    ledger = worked_ledger()
    shown = ledger.shown("ecommerce")
    ledger.feed(reserve("r1", shown, expires_at=1000, time=500))
    assert ledger.shown("ecommerce") == 0
    out = ledger.feed(reserve("r2", 1, time=1000))
    expired, accepted = decisions(out)
    assert (expired.reservation_id, expired.outcome) == ("r1", ReservationOutcome.EXPIRED)
    assert (accepted.reservation_id, accepted.outcome) == ("r2", ReservationOutcome.ACCEPTED)
    freed = [o for o in out[: out.index(accepted)] if isinstance(o, ChannelAvailability) and o.channel == "ecommerce"]
    assert [o.quantity for o in freed] == [shown]
    assert ledger.shown("ecommerce") == shown - 1


def test_reserve_already_expired_is_refused():
    ledger = worked_ledger()
    ledger.feed(tick(2000))
    assert decisions(ledger.feed(reserve("r1", 1, expires_at=1500)))[0].reason == reasons.ALREADY_EXPIRED


def test_cycle_count_worked_example():
    ledger = Ledger()
    ledger.feed(policy(), receipt(10, "S1", time=100), sale(3, "S1", time=300))
    assert ledger.sku().positions["S1"].sellable == 7
    ledger.feed(count(8, "S1", time=200))
    assert ledger.sku().positions["S1"].sellable == 5  # 8 counted + (-3 sold after the count)
    out = ledger.feed(sale(1, "S1", time=150))
    assert out == [] and ledger.sku().history[-1][4] == reasons.COVERED_BY_CYCLE_COUNT  # inside the count already
    assert ledger.sku().positions["S1"].sellable == 5
    ledger.feed(receipt(4, "S1", time=250))
    assert ledger.sku().positions["S1"].sellable == 9
    out = ledger.feed(count(8, "S1", time=180))
    assert out == [] and ledger.sku().history[-1][4] == reasons.SUPERSEDED_COUNT  # older than the last count
    assert ledger.sku().positions["S1"].sellable == 9


def test_a_count_older_than_the_journal_is_applied_with_an_exception():
    ledger = Ledger()
    ledger.feed(policy(), *(receipt(1, "S1", time=100 + i) for i in range(20)))
    out = ledger.feed(count(0, "S1", time=101))  # deltas at 100..103 were dropped from the 16-entry journal
    [exception] = exceptions(out)
    assert (exception.kind, exception.location, exception.quantity) == (ExceptionKind.INEXACT_COUNT, "S1", 0)
    assert ledger.sku().positions["S1"].sellable == 16  # 0 counted + the 16 later receipts still known
    ledger.feed(count(0, "S1", time=103))
    assert ledger.sku().positions["S1"].sellable == 16


def test_a_sale_before_the_return_it_needs_drives_stock_below_zero_until_the_return_arrives():
    """The worked example of facts never refused (docs/RULES.md, section 2): 1 unit on the shelf; a customer
    returns one (POS, store-transactions) and another buys two (POS); the return's record is late. The sale is
    applied at once: sellable -1, every channel 0, a NEGATIVE_STOCK exception; the return brings it back to 0."""
    ledger = Ledger()
    ledger.feed(policy(), receipt(1, "S1", time=100))
    out = ledger.feed(sale(2, "S1", time=300, event_id="pos-sale"))
    [exception] = exceptions(out)
    assert (exception.kind, exception.sku, exception.location, exception.bucket, exception.quantity) == (
        ExceptionKind.NEGATIVE_STOCK, "SKU1", "S1", PositionBucket.SELLABLE, -1)
    assert exception.position == (-1, 0, 0, 0, 0) and exception.event_id == "pos-sale"
    assert ledger.shown("ecommerce") == 0 and not rejections(out)
    out = ledger.feed(returned(1, ReturnDisposition.RESTOCK, "S1", time=200))
    assert ledger.sku().positions["S1"].sellable == 0 and exceptions(out) == []
    ledger.feed(receipt(5, "S1", time=400))
    assert ledger.shown("ecommerce") == 5  # the shelf and the service agree again


def test_facts_at_unknown_locations_and_receipts_before_their_shipment_are_applied():
    ledger = Ledger()
    ledger.feed(policy(), receipt(5, "S1"))
    out = ledger.feed(receipt(3, "NOWHERE"))
    assert [(e.kind, e.location) for e in exceptions(out)] == [(ExceptionKind.UNKNOWN_LOCATION, "NOWHERE")]
    assert ledger.sku().positions["NOWHERE"].sellable == 3 and availability(out) == []  # no channel draws on it
    out = ledger.feed(received(2, "S2", "S1"))  # the ship notice has not arrived yet
    assert [(e.kind, e.quantity) for e in exceptions(out)] == [(ExceptionKind.NEGATIVE_IN_TRANSIT, -2)]
    s2 = ledger.sku().positions["S2"]
    assert (s2.sellable, s2.in_transit) == (2, -2)
    ledger.feed(shipped(2, "S1", "S2"))
    assert (s2.in_transit, ledger.sku().positions["S1"].sellable) == (0, 3)


def test_a_fact_before_any_policy_is_kept_and_published_by_the_first_policy():
    ledger = Ledger()
    assert ledger.feed(receipt(4, "S1")) == []
    out = ledger.feed(policy())
    assert [(a.channel, a.quantity) for a in availability(out)] == [("ecommerce", 4)]


def test_movements_change_buckets():
    ledger = Ledger()
    ledger.feed(
        policy(),
        receipt(10, "S1"),
        returned(2, ReturnDisposition.QUARANTINE),
        returned(1, ReturnDisposition.RESTOCK),
        adjustment(-4),
        bucket_move(3, StockBucket.SELLABLE, StockBucket.DAMAGED),
        bucket_move(1, StockBucket.QUARANTINE, StockBucket.SELLABLE),
        shipped(2, "S1", "S2"),
        received(2, "S2", "S1"),
    )
    s1, s2 = ledger.sku().positions["S1"], ledger.sku().positions["S2"]
    assert (s1.sellable, s1.damaged, s1.quarantine) == (3, 3, 1)
    assert (s2.sellable, s2.in_transit) == (2, 0)


def test_bad_events_are_rejected_and_change_nothing():
    """Malformed facts and intents that do not fit are refused; a well-formed fact never is (above)."""
    ledger = Ledger()
    ledger.feed(policy(), receipt(5, "S1"))
    before = ledger.sku().positions["S1"].sellable
    for event, reason in (
        (receipt(0, "S1"), reasons.INVALID_QUANTITY),
        (adjustment(0), reasons.INVALID_DELTA),
        (receipt(1, "S 1"), reasons.INVALID_ID),
        (reserve("r1", 1, location="NOWHERE"), reasons.UNKNOWN_LOCATION),
    ):
        out = ledger.feed(event)
        assert [r.reason for r in rejections(out)] == [reason], event
        assert availability(out) == []
    assert ledger.sku().positions["S1"].sellable == before
    assert [r.reason for r in rejections(ledger.feed(reserve("r1", 1, channel_name="nope")))] == [
        reasons.UNKNOWN_CHANNEL
    ]


def test_policy_rejections():
    ledger = Ledger(channels=frozenset({"ecommerce"}))
    out = ledger.feed(policy(version=2, channels=(channel("ecommerce"), channel("tv-shopping"))))
    assert [r.reason for r in rejections(out)] == [reasons.UNKNOWN_CHANNEL]
    ledger.feed(policy(version=2))
    assert ledger.feed(policy(version=2)) == []  # the same policy again: duplicate
    stale = policy(version=1)
    assert [r.reason for r in rejections(ledger.feed(stale))] == [reasons.STALE_POLICY_VERSION]


def test_duplicates_and_redeliveries_change_nothing():
    ledger = Ledger()
    ledger.feed(policy())
    event = receipt(5, "S1")
    assert len(ledger.feed(event)) == 1
    assert ledger.feed(event) == []  # same event id at a new offset
    assert ledger.apply(receipt(7, "S1"), offset=1) == []  # an offset the SKU already applied
    assert ledger.sku().positions["S1"].sellable == 5


def test_versions_start_at_one_and_increase_by_one():
    ledger = Ledger()
    ledger.feed(policy(), receipt(5, "S1"), receipt(1, "S1"), sale(6, "S1"), receipt(2, "S2"))
    assert [(r.quantity, r.status.value, r.version) for r in availability(ledger.outputs)] == [
        (5, "IN_STOCK", 1),
        (6, "IN_STOCK", 2),
        (0, "OUT_OF_STOCK", 3),
        (2, "IN_STOCK", 4),
    ]
    record = availability(ledger.outputs)[0]
    assert (record.event_id, record.to_record()["ledger_offset"], record.policy_version, record.key) == (
        ledger.outputs[0].event_id,
        1,
        1,
        "SKU1",
    )


def test_policy_change_reevaluates_every_sku_in_order():
    ledger = Ledger()
    ledger.feed(policy(), receipt(5, "S1", sku="B"), receipt(5, "S1", sku="A"))
    out = ledger.feed(
        policy(version=2, channels=(channel("ecommerce", max_advertised=3), channel("store-pickup", 1, granularity=LOCATION)))
    )
    assert [(r.sku, r.channel, r.location, r.quantity, r.policy_version) for r in out] == [
        ("A", "ecommerce", None, 3, 2),
        ("A", "store-pickup", "S1", 5, 2),
        ("B", "ecommerce", None, 3, 2),
        ("B", "store-pickup", "S1", 5, 2),
    ]
    out = ledger.feed(policy(version=3, channels=(channel("ecommerce", max_advertised=3),)))
    assert [(r.sku, r.channel, r.location, r.quantity) for r in out] == [
        ("A", "store-pickup", "S1", 0),  # the channel left the policy: its keys drop to 0 once
        ("B", "store-pickup", "S1", 0),
    ]


def test_redelivered_entry_uses_policy_in_force_at_its_offset():
    ledger = Ledger()
    ledger.feed(policy(channels=(channel("ecommerce", max_advertised=100),)), receipt(5, "S1"))
    ledger.apply(policy(version=2, channels=(channel("ecommerce", max_advertised=2),)), offset=10)
    assert ledger.engine.policy_at(ledger_position(5)).version == 1
    assert ledger.engine.policy_at(ledger_position(10)).version == 2
