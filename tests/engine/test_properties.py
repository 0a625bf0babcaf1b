"""Hypothesis properties over random policies and random event sequences."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.engine import (
    ChannelAvailability,
    ChannelGranularity,
    ClockTick,
    EncodingStore,
    ExceptionKind,
    InventoryException,
    LocationType,
    MovementType,
    PolicyChange,
    Rejection,
    ReservationAction,
    ReservationCommand,
    ReservationDecision,
    ReservationOutcome,
    ReturnDisposition,
    SafetyStockScope,
    StockBucket,
    StockMovement,
    decode_partition_state,
    decode_sku_state,
    encode_partition_state,
    encode_sku_state,
    reasons,
)
from app.engine.availability import location_quantity, network_quantity, status_of
from tests.engine.factories import CHANNELS, Ledger, channel, policy, safety

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STORES = ("S1", "S2", "S3")
LOCATIONS = STORES + ("DC1",)
SKUS = ("A", "B")
CHANNEL_NAMES = sorted(CHANNELS)

channel_rules = st.builds(
    lambda name, priority, location, types, explicit, share, protected, buffer, cap, transit, low: channel(
        name,
        priority,
        granularity=ChannelGranularity.LOCATION if location else ChannelGranularity.NETWORK,
        location_types=types,
        locations=explicit,
        share_bp=share,
        protected_quantity=protected,
        buffer=buffer,
        max_advertised=cap,
        include_in_transit=transit,
        low_stock_threshold=low,
    ),
    st.sampled_from(CHANNEL_NAMES),
    st.integers(0, 2),
    st.booleans(),
    st.sampled_from([(), (LocationType.STORE,), (LocationType.DISTRIBUTION_CENTRE,)] + [(LocationType.STORE, LocationType.DISTRIBUTION_CENTRE)] * 3),
    st.lists(st.sampled_from(LOCATIONS), max_size=2, unique=True).map(tuple),
    st.sampled_from([10_000, 10_000, 5_000, 3_333, 0]),
    st.integers(0, 4),
    st.integers(0, 2),
    st.one_of(st.none(), st.integers(0, 20)),
    st.booleans(),
    st.integers(0, 5),
)
safety_rules = st.one_of(
    st.builds(lambda q, t: safety(SafetyStockScope.LOCATION_TYPE, q, location_type=t), st.integers(0, 3), st.sampled_from(list(LocationType))),
    st.builds(lambda q, s: safety(SafetyStockScope.SKU, q, sku=s), st.integers(0, 3), st.sampled_from(SKUS)),
    st.builds(lambda q, s, l: safety(SafetyStockScope.SKU_LOCATION, q, sku=s, location=l), st.integers(0, 3), st.sampled_from(SKUS), st.sampled_from(LOCATIONS)),
)


def policies(version: int):
    return st.builds(
        lambda rules, ss: policy(version=version, stores=STORES, dcs=("DC1",), channels=tuple(rules), safety=tuple(ss)),
        st.lists(channel_rules, min_size=1, max_size=4, unique_by=lambda rule: rule.channel),
        st.lists(safety_rules, max_size=3),
    )


MOVEMENT_KINDS = list(MovementType)
op = st.tuples(
    st.integers(0, 99),  # kind roll
    st.sampled_from(SKUS),
    st.sampled_from(LOCATIONS),
    st.sampled_from(LOCATIONS),
    st.integers(1, 8),  # quantity
    st.integers(-30, 60),  # event-time step (negative: late arrival)
    st.integers(0, 5),  # reservation id / channel pick
    st.booleans(),
)


def build_events(first: PolicyChange, second: PolicyChange, ops) -> list:
    """Deterministic events from the drawn ops: movements, reservation commands, ticks and one policy change."""
    events: list = [first]
    events += [  # opening stock, so reservations have something to take
        StockMovement(f"open-{sku}-{location}", sku, location, 900, "prop", MovementType.RECEIPT, quantity=6)
        for sku in SKUS
        for location in LOCATIONS
    ]
    time = 1_000
    for index, (roll, sku, location, other, quantity, step, pick, flag) in enumerate(ops):
        time = max(0, time + step)
        event_id = f"e{index}"
        if index == len(ops) // 2:
            events.append(dataclasses.replace(second, event_time=time))
        if roll < 40:
            kind = MOVEMENT_KINDS[roll % len(MOVEMENT_KINDS)]
            fields: dict = {}
            if kind is MovementType.ADJUSTMENT:
                fields["delta"] = quantity if flag else -quantity
            else:
                fields["quantity"] = quantity if kind is not MovementType.CYCLE_COUNT else quantity * 2
            if kind is MovementType.RETURN:
                fields["disposition"] = ReturnDisposition.RESTOCK if flag else ReturnDisposition.QUARANTINE
            if kind in (MovementType.TRANSFER_SHIPPED, MovementType.TRANSFER_RECEIVED):
                fields["counterparty_location"] = other if other != location else "DC1" if location != "DC1" else "S1"
            if kind is MovementType.BUCKET_MOVE:
                buckets = list(StockBucket)
                fields["from_bucket"] = buckets[pick % 3]
                fields["to_bucket"] = buckets[(pick + 1 + flag) % 3]
            events.append(StockMovement(event_id, sku, location, time, "prop", kind, **fields))
        elif roll < 55:
            events.append(StockMovement(event_id, sku, location, time, "prop", MovementType.RECEIPT, quantity=quantity * 3))
        elif roll < 90:
            action = ReservationAction.RESERVE if roll < 75 else (ReservationAction.RELEASE if roll < 83 else ReservationAction.FULFIL)
            names = [rule.channel for rule in first.channels] + ["wholesale"]  # mostly channels of the policy
            channel_name = names[pick % len(names)]
            at = location if (flag and roll % 2) else None
            expires_at = time + 40 * pick if pick % 2 else None
            events.append(
                ReservationCommand(event_id, action, f"r{pick}{sku}", sku, channel_name, quantity, at, roll % 3 == 0,
                                   expires_at, time, "prop")
            )
        else:
            events.append(ClockTick(time + 20))
    return events


scenarios = st.builds(build_events, policies(1), policies(2), st.lists(op, min_size=1, max_size=70))


def run(events, store=None) -> tuple[Ledger, list]:
    ledger = Ledger(store=store)
    for event in events:
        ledger.apply(event)
    return ledger, ledger.outputs


@SETTINGS
@given(scenarios)
def test_same_sequence_gives_identical_outputs_also_through_the_codec(events):
    _, first = run(events)
    _, second = run(events)
    _, encoded = run(events, store=EncodingStore())
    assert first == second == encoded


@SETTINGS
@given(scenarios)
def test_versions_are_gapless_per_key(events):
    _, outputs = run(events)
    versions = defaultdict(list)
    for record in outputs:
        if isinstance(record, ChannelAvailability):
            versions[(record.channel, record.key)].append(record.version)
            assert record.quantity >= 0
    for key, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), key


@SETTINGS
@given(scenarios)
def test_every_reserve_gets_exactly_one_decision(events):
    ledger = Ledger()
    for event in events:
        out = ledger.apply(event)
        if isinstance(event, ReservationCommand):
            answers = [
                o
                for o in out
                if isinstance(o, ReservationDecision)
                and o.outcome is not ReservationOutcome.EXPIRED  # expiries this entry's clock caused
                and o.reservation_id == event.reservation_id
            ]
            assert len(answers) == 1


def _strip_position(outputs) -> list:
    stripped = []
    for record in outputs:
        if isinstance(record, (ChannelAvailability, ReservationDecision)):
            record = dataclasses.replace(record, ledger_position=0)
            if record.event_id.startswith("tick-"):
                record = dataclasses.replace(record, event_id="tick")
        else:
            record = dataclasses.replace(record, ledger_position=0)
        stripped.append(record)
    return stripped


@SETTINGS
@given(scenarios, st.lists(st.integers(0, 10_000), min_size=1, max_size=8))
def test_injected_duplicates_and_redeliveries_change_nothing(events, picks):
    _, clean = run(events)
    ids = {index for index, e in enumerate(events) if isinstance(e, (StockMovement, ReservationCommand))}
    duplicated_after = {sorted(ids)[pick % len(ids)] for pick in picks} if ids else set()
    ledger = Ledger()
    offsets: list[int] = []
    for index, event in enumerate(events):
        ledger.apply(event)
        offsets.append(ledger.position)
        if index in duplicated_after:
            assert _published(ledger.apply(event)) == []  # same event id, new offset
            assert _published(ledger.engine.apply(event, offsets[-1])) == []  # same offset again
        if index in duplicated_after and index > 0:
            previous = events[index - 1]
            assert _published(ledger.engine.apply(previous, offsets[-2])) == []  # an older offset redelivered
    assert _strip_position(_published(ledger.outputs)) == _strip_position(_published(clean))


def _published(outputs) -> list:
    """Outputs that change what anyone sees (a duplicate of an event rejected for a SKU never seen is rejected
    again, as nothing was stored for it)."""
    return [o for o in outputs if isinstance(o, (ChannelAvailability, ReservationDecision))]


REMEMBERED_REFUSALS = {reasons.INSUFFICIENT_STOCK, reasons.LOCATION_NOT_IN_CHANNEL, reasons.ALREADY_EXPIRED}


class OnHandModel:
    """Independent reference of on-hand accounting: buckets per (sku, location) from every well-formed movement (a
    fact is always applied, below zero if need be) and the reservation decisions the engine made; cycle counts via
    the full (unbounded) history of deltas."""

    def __init__(self) -> None:
        self.buckets = defaultdict(lambda: {"sellable": 0, "damaged": 0, "quarantine": 0, "in_transit": 0})
        self.count_time: dict = {}
        self.deltas = defaultdict(list)  # (sku, location) -> [(time, delta)]
        self.reservations: dict = {}
        self.decided: set = set()  # reservation ids ever answered: a repeated reserve is answered, not re-applied

    def _sellable(self, key, time, delta) -> None:
        if key in self.count_time and time <= self.count_time[key]:
            return
        self.buckets[key]["sellable"] += delta
        self.deltas[key].append((time, delta))

    def movement(self, event: StockMovement) -> None:
        key, q, t = (event.sku, event.location), event.quantity, event.event_time
        kind = event.type
        if kind is MovementType.RECEIPT or (kind is MovementType.RETURN and event.disposition is ReturnDisposition.RESTOCK):
            self._sellable(key, t, q)
        elif kind is MovementType.RETURN:
            self.buckets[key]["quarantine"] += q
        elif kind is MovementType.SALE:
            self._sellable(key, t, -q)
        elif kind is MovementType.ADJUSTMENT:
            self._sellable(key, t, event.delta)
        elif kind is MovementType.CYCLE_COUNT:
            if key in self.count_time and t < self.count_time[key]:
                return  # superseded by a later count
            later = sum(d for time, d in self.deltas[key] if time > t)
            self.buckets[key]["sellable"] = q + later  # may be below zero: facts are never refused
            self.count_time[key] = t
        elif kind is MovementType.TRANSFER_SHIPPED:
            self._sellable(key, t, -q)
            self.buckets[(event.sku, event.counterparty_location)]["in_transit"] += q
        elif kind is MovementType.TRANSFER_RECEIVED:
            self.buckets[key]["in_transit"] -= q
            self._sellable(key, t, q)
        elif kind is MovementType.BUCKET_MOVE:
            for bucket, sign in ((event.from_bucket, -1), (event.to_bucket, 1)):
                if bucket is StockBucket.SELLABLE:
                    self._sellable(key, t, sign * q)
                else:
                    self.buckets[key][bucket.value.lower()] += sign * q

    def decision(self, event, decision: ReservationDecision) -> None:
        rid = (decision.sku, decision.reservation_id)
        first_answer = rid not in self.decided
        is_reserve = isinstance(event, ReservationCommand) and event.command is ReservationAction.RESERVE
        if is_reserve and (decision.outcome is ReservationOutcome.ACCEPTED or decision.reason in REMEMBERED_REFUSALS):
            self.decided.add(rid)
        if decision.outcome is ReservationOutcome.ACCEPTED and first_answer:
            self.reservations[rid] = [(line.location, line.quantity) for line in decision.lines]
        elif decision.outcome in (ReservationOutcome.RELEASED, ReservationOutcome.EXPIRED):
            self.reservations.pop(rid, None)
        elif decision.outcome is ReservationOutcome.FULFILLED and rid in self.reservations:
            for location, units in self.reservations.pop(rid):
                self._sellable((decision.sku, location), event.event_time, -units)

    def reserved(self, sku, location) -> int:
        return sum(u for (s, _), lines in self.reservations.items() if s == sku for loc, u in lines if loc == location)


def expiry_frees_units_for_the_next_reserve() -> list:
    """Found by hypothesis: r1B takes all of DC1 and expires at 1040; the reserve at 1040 first expires it, the
    freed units are published, and only then is the new reserve decided."""
    dc_channels = tuple(channel(name, 0, location_types=(LocationType.DISTRIBUTION_CENTRE,)) for name in ("ecommerce", "marketplace"))
    first = policy(version=1, stores=STORES, dcs=("DC1",), channels=dc_channels)
    ops = [(40, "A", "S1", "S1", 1, 0, 0, False), (60, "B", "S1", "S1", 6, 0, 1, False), (60, "B", "S1", "S1", 1, 40, 0, False)]
    return build_events(first, dataclasses.replace(first, version=2), ops)


@SETTINGS
@given(scenarios)
@example(expiry_frees_units_for_the_next_reserve())
def test_no_oversell_and_reference_on_hand_agrees(events):
    ledger = Ledger()
    model = OnHandModel()
    for event in events:
        shown_before, known_before = {}, False
        if isinstance(event, ReservationCommand) and event.command is ReservationAction.RESERVE:
            shown_before = {loc: ledger.shown(event.channel, event.sku, loc) for loc in (None,) + LOCATIONS}
            state = ledger.store.get_sku_state(event.sku)
            known_before = state is not None and (
                event.reservation_id in state.reservations
                or ledger.store.get_finished(event.sku, event.reservation_id) is not None
            )
        out = ledger.apply(event)
        rejected = [o for o in out if isinstance(o, Rejection)]
        if isinstance(event, StockMovement) and not rejected:
            model.movement(event)
        for record in out:
            if isinstance(record, InventoryException) and record.kind is ExceptionKind.INEXACT_COUNT:
                # a count older than the location's journal: the engine knows only the later deltas it kept, the
                # model knows them all; the model takes the engine's figure from here (the exception says so)
                key = (record.sku, record.location)
                model.buckets[key]["sellable"] = record.position[0]
            elif isinstance(record, InventoryException) and record.kind is ExceptionKind.NEGATIVE_STOCK:
                assert record.quantity < 0
        assert not rejected or not isinstance(event, StockMovement) or all(
            r.reason in (reasons.INVALID_QUANTITY, reasons.INVALID_DELTA, reasons.INVALID_COUNTERPARTY,
                         reasons.INVALID_BUCKETS, reasons.MISSING_DISPOSITION) for r in rejected
        ), rejected  # facts are refused only when malformed
        for record in out:
            if isinstance(record, ChannelAvailability) and shown_before and (record.channel, record.sku) == (
                event.channel,
                event.sku,
            ):
                # The same entry can first expire other reservations and publish the freed units: what the
                # channel showed just before the decision includes them.
                shown_before[record.location] = record.quantity
            if not isinstance(record, ReservationDecision):
                continue
            model.decision(event, record)
            fresh_acceptance = (
                shown_before
                and not known_before
                and record.reservation_id == event.reservation_id
                and record.outcome is ReservationOutcome.ACCEPTED
            )
            if fresh_acceptance:
                _assert_fits_what_was_shown(ledger, record, shown_before)
        for sku in SKUS:
            state = ledger.store.get_sku_state(sku)
            if state is None:
                continue
            for location, position in state.positions.items():
                assert position.reserved >= 0 and position.atp >= 0 and position.atp_with_transit >= 0
                expected = model.buckets[(sku, location)]
                assert (position.sellable, position.damaged, position.quarantine, position.in_transit) == (
                    expected["sellable"], expected["damaged"], expected["quarantine"], expected["in_transit"]
                ), (sku, location, event)
                assert position.reserved == model.reserved(sku, location)


def _assert_fits_what_was_shown(ledger: Ledger, decision: ReservationDecision, shown_before: dict) -> None:
    """No oversell: an accepted reservation fits what its channel showed just before its decision, and after it the reserved
    units at each location it took from are still covered by stock (on hand, plus in transit if the channel counts
    it) above safety stock."""
    plan = ledger.engine.policy_at(ledger.position).channel_by_name[decision.channel]
    if plan.is_network:
        assert decision.reserved_quantity <= shown_before[None]
    else:
        for line in decision.lines:
            assert line.quantity <= shown_before[line.location]
    state = ledger.store.get_sku_state(decision.sku)
    for line in decision.lines:
        position = state.positions[line.location]
        # in transit below zero (received before its shipment was on the ledger) supplies nothing, and takes nothing
        supply = position.sellable + (max(0, position.in_transit) if plan.include_in_transit else 0)
        assert position.reserved <= supply - position.safety


@SETTINGS
@given(scenarios)
def test_channel_values_match_a_full_recomputation(events):
    """The incremental NETWORK aggregates equal a from-scratch sum after every event, and each published status is
    status_of() its quantity."""
    ledger = Ledger()
    for event in events:
        ledger.apply(event)
        policy_now = ledger.engine.policy_at(ledger.position)
        if policy_now is None:
            continue
        for sku in SKUS:
            state = ledger.store.get_sku_state(sku)
            if state is None or state.policy is not policy_now:
                continue
            fresh = decode_sku_state(encode_sku_state(state))
            ledger.engine._use_policy(fresh, policy_now)
            for plan in policy_now.network_channels:
                assert network_quantity(state, plan) == network_quantity(fresh, plan)
                assert ledger.shown(plan.name, sku) == network_quantity(state, plan)
            for plan in policy_now.location_channels:
                for location in state.positions:
                    if location in plan.feeds:
                        assert ledger.shown(plan.name, sku, location) == location_quantity(state, plan, location)
            for (name, location), published in state.published.items():
                plan = policy_now.channel_by_name.get(name)
                if plan is not None and published.version:
                    assert published.status == status_of(plan, published.quantity)


@SETTINGS
@given(scenarios)
def test_state_encoding_round_trips(events):
    ledger, _ = run(events)
    for sku in ledger.store.skus():
        value = encode_sku_state(ledger.store.get_sku_state(sku))
        assert encode_sku_state(decode_sku_state(value)) == value
    partition_value = encode_partition_state(ledger.engine.state)
    assert encode_partition_state(decode_partition_state(partition_value)) == partition_value


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["x", "", "S1", "bad id", "A"]), st.integers(-5, 5)), max_size=30))
def test_engine_never_raises_on_malformed_input(garbage):
    ledger = Ledger()
    ledger.apply(policy())
    for kind, text, number in garbage:
        if kind == 0:
            event = StockMovement(text, text, text, number, "g", MovementType.SALE, quantity=number)
        elif kind == 1:
            event = ReservationCommand(text, ReservationAction.RESERVE, text, text, text, number, None, False, number, number, "g")
        elif kind == 2:
            event = ClockTick(number)
        else:
            event = {"not": "an event"}
        for record in ledger.apply(event):
            if isinstance(record, Rejection):
                assert record.reason in vars(reasons).values()
            elif isinstance(record, InventoryException):
                assert record.kind in ExceptionKind
