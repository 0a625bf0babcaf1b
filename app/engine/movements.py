"""Stock movements: how each MovementType changes the buckets of one or two locations of a SKU.

Every movement is checked completely before anything changes, so a rejected movement leaves the state untouched.
A change of the SELLABLE bucket at a location whose last cycle count is at or after the movement's event time is
already inside that count: that part is skipped (docs/RULES.md, "Cycle counts").
"""

from __future__ import annotations

from app.engine import reasons
from app.engine.availability import refresh_position
from app.engine.events import MovementType, ReturnDisposition, StockBucket, StockMovement
from app.engine.policy import Policy
from app.engine.state import JOURNAL_LIMIT, Position, SkuState

JOURNAL_LIMIT_ITEMS = 2 * JOURNAL_LIMIT  # the journal is flat: (time, delta) pairs

_BUCKET_FIELD = {
    StockBucket.SELLABLE: "sellable",
    StockBucket.DAMAGED: "damaged",
    StockBucket.QUARANTINE: "quarantine",
}


def position_for(state: SkuState, policy: Policy, location: str) -> Position:
    """The location's position, created (empty, with its safety stock) if the SKU never had stock there."""
    position = state.positions.get(location)
    if position is None:
        position = Position()
        position.safety = policy.safety_stock(state.sku, location)
        state.positions[location] = position
    return position


def _peek(state: SkuState, location: str) -> Position:
    """Read-only view used by the checks: an absent position reads as empty and is not created."""
    return state.positions.get(location) or _EMPTY


_EMPTY = Position()

SALE = MovementType.SALE
RECEIPT = MovementType.RECEIPT
RETURN = MovementType.RETURN
ADJUSTMENT = MovementType.ADJUSTMENT
CYCLE_COUNT = MovementType.CYCLE_COUNT
RESTOCK = ReturnDisposition.RESTOCK


def apply_movement(state: SkuState, policy: Policy, event: StockMovement) -> tuple[str | None, tuple[str, ...]]:
    """Apply `event`; returns (reason, touched locations). A reason means nothing changed: a rejection, or
    COVERED_BY_CYCLE_COUNT when the whole movement is already inside a cycle count."""
    location = event.location
    location_types = policy.location_types
    if location not in location_types:
        return reasons.UNKNOWN_LOCATION, ()
    kind = event.type
    quantity = event.quantity
    time = event.event_time
    here = state.positions.get(location) or _EMPTY  # _peek(), inlined
    counted = here.last_count_time is not None and time <= here.last_count_time  # here.is_counted(time)

    if kind is SALE:  # the most frequent movements first
        return _sellable_delta(state, policy, location, time, -quantity, counted)
    if kind is RECEIPT or (kind is RETURN and event.disposition is RESTOCK):
        return _sellable_delta(state, policy, location, time, quantity, counted)
    if kind is CYCLE_COUNT:
        return _cycle_count(state, policy, location, time, quantity)
    if kind is ADJUSTMENT:
        return _sellable_delta(state, policy, location, time, event.delta, counted)
    if kind is MovementType.RETURN:  # into quarantine: awaiting inspection, not sellable
        position = position_for(state, policy, location)
        position.quarantine += quantity
        return None, (location,)

    if kind is MovementType.TRANSFER_SHIPPED:
        destination = event.counterparty_location
        if destination not in location_types:
            return reasons.UNKNOWN_LOCATION, ()
        if not counted and here.sellable < quantity:
            return reasons.INSUFFICIENT_STOCK, ()
        if not counted:
            origin = position_for(state, policy, location)
            origin.sellable -= quantity
            origin.record_delta(time, -quantity)
            refresh_position(state, policy, location, origin)
        target = position_for(state, policy, destination)
        target.in_transit += quantity
        refresh_position(state, policy, destination, target)
        return None, ((destination,) if counted else (location, destination))

    if kind is MovementType.TRANSFER_RECEIVED:
        if event.counterparty_location not in location_types:
            return reasons.UNKNOWN_LOCATION, ()
        if here.in_transit < quantity:
            return reasons.INSUFFICIENT_IN_TRANSIT, ()
        position = position_for(state, policy, location)
        position.in_transit -= quantity
        if not counted:
            position.sellable += quantity
            position.record_delta(time, quantity)
        refresh_position(state, policy, location, position)
        return None, (location,)

    if kind is MovementType.BUCKET_MOVE:
        return _bucket_move(state, policy, location, time, quantity, event.from_bucket, event.to_bucket, counted)
    return reasons.UNSUPPORTED_EVENT, ()


def _sellable_delta(
    state: SkuState, policy: Policy, location: str, time: int, delta: int, counted: bool
) -> tuple[str | None, tuple[str, ...]]:
    if counted:
        return reasons.COVERED_BY_CYCLE_COUNT, ()
    position = state.positions.get(location)
    if delta < 0 and (position is None or position.sellable + delta < 0):
        return reasons.INSUFFICIENT_STOCK, ()
    if position is None:
        position = position_for(state, policy, location)
    position.sellable += delta
    journal = position.journal  # Position.record_delta(), inlined
    journal.append(time)
    journal.append(delta)
    if len(journal) > JOURNAL_LIMIT_ITEMS:
        position.record_delta_overflow()
    refresh_position(state, policy, location, position)
    return None, (location,)


def _bucket_move(
    state: SkuState,
    policy: Policy,
    location: str,
    time: int,
    quantity: int,
    from_bucket: StockBucket,
    to_bucket: StockBucket,
    counted: bool,
) -> tuple[str | None, tuple[str, ...]]:
    skip_from = counted and from_bucket is StockBucket.SELLABLE
    skip_to = counted and to_bucket is StockBucket.SELLABLE
    from_field = _BUCKET_FIELD[from_bucket]
    if not skip_from and getattr(_peek(state, location), from_field) < quantity:
        return reasons.INSUFFICIENT_STOCK, ()
    position = position_for(state, policy, location)
    if not skip_from:
        setattr(position, from_field, getattr(position, from_field) - quantity)
        if from_bucket is StockBucket.SELLABLE:
            position.record_delta(time, -quantity)
    if not skip_to:
        to_field = _BUCKET_FIELD[to_bucket]
        setattr(position, to_field, getattr(position, to_field) + quantity)
        if to_bucket is StockBucket.SELLABLE:
            position.record_delta(time, quantity)
    refresh_position(state, policy, location, position)
    return None, (location,)


def _cycle_count(
    state: SkuState, policy: Policy, location: str, time: int, counted_quantity: int
) -> tuple[str | None, tuple[str, ...]]:
    """Sellable becomes the counted quantity plus every remembered delta that happened after the count."""
    here = _peek(state, location)
    if here.last_count_time is not None and time < here.last_count_time:
        return reasons.STALE_CYCLE_COUNT, ()
    if time < here.journal_floor:
        return reasons.COUNT_BEYOND_JOURNAL, ()
    position = position_for(state, policy, location)
    journal = position.journal
    later = 0
    kept: list[int] = []
    for index in range(0, len(journal), 2):
        if journal[index] > time:
            later += journal[index + 1]
            kept.append(journal[index])
            kept.append(journal[index + 1])
    sellable = counted_quantity + later
    position.sellable = sellable if sellable > 0 else 0
    position.journal = kept
    position.last_count_time = time
    refresh_position(state, policy, location, position)
    return None, (location,)
