"""Stock movements: how each MovementType changes the buckets of one or two locations of a SKU.

A movement reports what has physically happened, so it is always applied (docs/RULES.md, section 2): a sale that
arrives before the receipt or return it needs drives sellable below zero instead of being refused, and the shelf
and the service agree again once the other fact arrives. What needs an operator's look comes back as problems, which
the engine publishes as InventoryException records: a bucket driven below zero, a location the policy does not
list, a count too late for its location's journal. The one thing that changes nothing is a sellable change already
inside a later cycle count (docs/RULES.md, "Cycle counts"), or a count older than the location's last count.
"""

from __future__ import annotations

from array import array

from app.engine import reasons
from app.engine.availability import refresh_position
from app.engine.events import MovementType, ReturnDisposition, StockBucket, StockMovement
from app.engine.outputs import ExceptionKind, PositionBucket
from app.engine.policy import Policy
from app.engine.state import JOURNAL_LIMIT, Position, SkuState

JOURNAL_LIMIT_ITEMS = 2 * JOURNAL_LIMIT  # the journal is flat: (time, delta) pairs

_BUCKET_FIELD = {
    StockBucket.SELLABLE: "sellable",
    StockBucket.DAMAGED: "damaged",
    StockBucket.QUARANTINE: "quarantine",
}
_POSITION_BUCKET = {
    StockBucket.SELLABLE: PositionBucket.SELLABLE,
    StockBucket.DAMAGED: PositionBucket.DAMAGED,
    StockBucket.QUARANTINE: PositionBucket.QUARANTINE,
}

Problem = tuple[ExceptionKind, str, PositionBucket | None, int, str]
"""(kind, location, bucket, quantity, detail): what the engine turns into an InventoryException."""

NO_PROBLEMS: tuple[Problem, ...] = ()

SALE = MovementType.SALE
RECEIPT = MovementType.RECEIPT
RETURN = MovementType.RETURN
ADJUSTMENT = MovementType.ADJUSTMENT
CYCLE_COUNT = MovementType.CYCLE_COUNT
RESTOCK = ReturnDisposition.RESTOCK
SELLABLE = PositionBucket.SELLABLE
NEGATIVE_STOCK = ExceptionKind.NEGATIVE_STOCK


def position_for(state: SkuState, policy: Policy | None, location: str) -> Position:
    """The location's position, created (empty, with its safety stock) if the SKU never had stock there."""
    position = state.positions.get(location)
    if position is None:
        position = Position()
        position.safety = 0 if policy is None else policy.safety_stock(state.sku, location)
        state.positions[location] = position
    return position


def apply_movement(
    state: SkuState, policy: Policy | None, event: StockMovement
) -> tuple[str | None, tuple[str, ...], tuple[Problem, ...] | list[Problem]]:
    """Apply `event`; returns (outcome, touched locations, problems). The outcome is None when the movement changed
    the position, or the acknowledgement that it changed nothing: COVERED_BY_CYCLE_COUNT (the whole movement is
    inside a later count) or SUPERSEDED_COUNT (a count older than the location's last one). Before any policy
    (`policy` None) the buckets change and nothing is published: the first policy publishes them."""
    location = event.location
    kind = event.type
    quantity = event.quantity
    time = event.event_time
    here = state.positions.get(location)
    counted = here is not None and here.last_count_time is not None and time <= here.last_count_time
    problems: list[Problem] | tuple[Problem, ...] = NO_PROBLEMS
    if policy is not None and location not in policy.location_types:
        problems = [_unknown(location)]

    if kind is SALE:  # the most frequent movements first
        return _sellable_delta(state, policy, location, time, -quantity, counted, problems)
    if kind is RECEIPT or (kind is RETURN and event.disposition is RESTOCK):
        return _sellable_delta(state, policy, location, time, quantity, counted, problems)
    if kind is CYCLE_COUNT:
        return _cycle_count(state, policy, location, time, quantity, problems)
    if kind is ADJUSTMENT:
        return _sellable_delta(state, policy, location, time, event.delta, counted, problems)
    if kind is MovementType.RETURN:  # into quarantine: awaiting inspection, not sellable
        position = position_for(state, policy, location)
        position.quarantine += quantity
        return None, (location,), problems

    if kind is MovementType.TRANSFER_SHIPPED:
        destination = event.counterparty_location
        if policy is not None and destination not in policy.location_types:
            problems = [*problems, _unknown(destination)]
        if not counted:
            origin = position_for(state, policy, location)
            origin.sellable -= quantity
            origin.record_delta(time, -quantity)
            _refresh(state, policy, location, origin)
            if origin.sellable < 0:
                problems = [*problems, _negative(location, SELLABLE, origin.sellable, "a shipment beyond the sellable units known")]
        target = position_for(state, policy, destination)
        target.in_transit += quantity
        _refresh(state, policy, destination, target)
        return None, ((destination,) if counted else (location, destination)), problems

    if kind is MovementType.TRANSFER_RECEIVED:
        origin_location = event.counterparty_location
        if policy is not None and origin_location not in policy.location_types:
            problems = [*problems, _unknown(origin_location)]
        position = position_for(state, policy, location)
        position.in_transit -= quantity
        if position.in_transit < 0:
            problems = [*problems, (ExceptionKind.NEGATIVE_IN_TRANSIT, location, PositionBucket.IN_TRANSIT,
                                    position.in_transit, "received before its shipment reached the ledger")]
        if not counted:
            position.sellable += quantity
            position.record_delta(time, quantity)
        _refresh(state, policy, location, position)
        return None, (location,), problems

    if kind is MovementType.BUCKET_MOVE:
        return _bucket_move(state, policy, location, time, quantity, event.from_bucket, event.to_bucket, counted,
                            problems)
    return reasons.UNSUPPORTED_EVENT, (), problems


def _unknown(location: str) -> Problem:
    return (ExceptionKind.UNKNOWN_LOCATION, location, None, 0,
            "a fact at a location the policy in force does not list: applied, published by no channel")


def _negative(location: str, bucket: PositionBucket, value: int, what: str) -> Problem:
    return (NEGATIVE_STOCK, location, bucket, value,
            f"{what}: applied; {bucket.value.lower()} is {value} until the facts that explain it arrive")


def _refresh(state: SkuState, policy: Policy | None, location: str, position: Position) -> None:
    if policy is not None:
        refresh_position(state, policy, location, position)


def _sellable_delta(
    state: SkuState, policy: Policy | None, location: str, time: int, delta: int, counted: bool, problems
) -> tuple[str | None, tuple[str, ...], tuple[Problem, ...] | list[Problem]]:
    if counted:
        return reasons.COVERED_BY_CYCLE_COUNT, (), problems
    position = state.positions.get(location)
    if position is None:
        position = position_for(state, policy, location)
    sellable = position.sellable = position.sellable + delta
    position.record_delta(time, delta)
    if policy is not None:
        refresh_position(state, policy, location, position)
    if sellable < 0 and delta < 0:
        problems = [*problems, _negative(location, SELLABLE, sellable, "a sale or removal beyond the sellable units known")]
    return None, (location,), problems


def _bucket_move(
    state: SkuState,
    policy: Policy | None,
    location: str,
    time: int,
    quantity: int,
    from_bucket: StockBucket,
    to_bucket: StockBucket,
    counted: bool,
    problems,
) -> tuple[str | None, tuple[str, ...], tuple[Problem, ...] | list[Problem]]:
    skip_from = counted and from_bucket is StockBucket.SELLABLE
    skip_to = counted and to_bucket is StockBucket.SELLABLE
    position = position_for(state, policy, location)
    if not skip_from:
        from_field = _BUCKET_FIELD[from_bucket]
        left = getattr(position, from_field) - quantity
        setattr(position, from_field, left)
        if from_bucket is StockBucket.SELLABLE:
            position.record_delta(time, -quantity)
        if left < 0:
            problems = [*problems, _negative(location, _POSITION_BUCKET[from_bucket], left, "a move out beyond the units known")]
    if not skip_to:
        to_field = _BUCKET_FIELD[to_bucket]
        setattr(position, to_field, getattr(position, to_field) + quantity)
        if to_bucket is StockBucket.SELLABLE:
            position.record_delta(time, quantity)
    _refresh(state, policy, location, position)
    return None, (location,), problems


def _cycle_count(
    state: SkuState, policy: Policy | None, location: str, time: int, counted_quantity: int, problems
) -> tuple[str | None, tuple[str, ...], tuple[Problem, ...] | list[Problem]]:
    """Sellable becomes the counted quantity plus every remembered delta that happened after the count."""
    here = state.positions.get(location)
    if here is not None and here.last_count_time is not None and time < here.last_count_time:
        return reasons.SUPERSEDED_COUNT, (), problems
    position = position_for(state, policy, location)
    if time < position.journal_floor:
        problems = [*problems, (
            ExceptionKind.INEXACT_COUNT, location, SELLABLE, counted_quantity,
            f"counted at {time}, before the oldest sellable change the location still remembers "
            f"({position.journal_floor}): applied with the later changes known; ones in between may be missing",
        )]
    journal = position.journal
    later = 0
    kept = array("q")
    for index in range(0, len(journal), 2):
        if journal[index] > time:
            later += journal[index + 1]
            kept.append(journal[index])
            kept.append(journal[index + 1])
    sellable = position.sellable = counted_quantity + later
    position.journal = kept
    position.last_count_time = time
    _refresh(state, policy, location, position)
    if sellable < 0:
        problems = [*problems, _negative(location, SELLABLE, sellable, "a count below the sales recorded after it")]
    return None, (location,), problems
