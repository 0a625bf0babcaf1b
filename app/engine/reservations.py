"""Reservation commands (reserve, release, fulfil) and expiry.

Every command with a usable reservation id is answered by exactly one ReservationDecision. Commands that are
malformed or name something unknown (channel, location, reservation) also produce a Rejection for operators;
business refusals (not enough stock, ...) are only a REJECTED decision.
"""

from __future__ import annotations

from typing import Protocol

from app.engine import reasons
from app.engine.availability import Cause, add_own_reserved, location_quantity, network_quantity, refresh_position
from app.engine.events import IDENTIFIER, ReservationAction, ReservationCommand
from app.engine.outputs import (
    Rejection,
    ReservationDecision,
    ReservationOutcome,
    new_reservation_decision,
    new_reservation_line,
)
from app.engine.policy import SOURCING_TYPE_RANK, ChannelPlan, Policy
from app.engine.state import FinishedReservation, PartitionState, Reservation, SkuState

ACCEPTED = ReservationOutcome.ACCEPTED
REJECTED = ReservationOutcome.REJECTED
RELEASED = ReservationOutcome.RELEASED
FULFILLED = ReservationOutcome.FULFILLED
EXPIRED = ReservationOutcome.EXPIRED

_FINAL_OUTCOME_OF = {ReservationAction.RELEASE: RELEASED, ReservationAction.FULFIL: FULFILLED}
_BAD_EVENT_REASONS = frozenset(
    {
        reasons.NO_POLICY,
        reasons.UNKNOWN_CHANNEL,
        reasons.UNKNOWN_LOCATION,
        reasons.UNKNOWN_RESERVATION,
        reasons.CHANNEL_MISMATCH,
        reasons.RESERVATION_NOT_ACTIVE,
    }
)
NO_LOCATIONS: tuple[str, ...] = ()
EXPIRY_ENTRY = "EXPIRY"  # SkuState.history kind of a reservation's expiry


class FinishedRecords(Protocol):
    """The finished reservations the engine still answers from (PartitionEngine: visibility and retention)."""

    def get(self, sku: str, reservation_id: str) -> FinishedReservation | None: ...

    def remember(self, sku: str, finished: FinishedReservation) -> None:
        """Keep `finished` as the entry being applied left it (the engine stamps its position and clock)."""
        ...


def _decision(
    sku: str,
    reservation_id: str,
    channel: str,
    outcome: ReservationOutcome,
    reason: str | None,
    requested: int,
    lines: tuple[tuple[str, int], ...],
    cause: Cause,
) -> ReservationDecision:
    reserved = 0
    decision_lines = []
    for location, units in lines:
        reserved += units
        decision_lines.append(new_reservation_line(location, units))
    return new_reservation_decision(
        reservation_id,
        channel,
        sku,
        outcome,
        reason,
        requested,
        reserved,
        tuple(decision_lines),
        cause.event_id,
        cause.partition,
        cause.position,
        cause.event_time,
    )


def _refuse(
    state: SkuState, command: ReservationCommand, reason: str, cause: Cause, out: list, detail: str = ""
) -> None:
    """A REJECTED decision, and for a command that does not fit the state a Rejection (a dead letter) whose error
    text is the action, then `detail` if any."""
    out.append(
        _decision(state.sku, command.reservation_id, command.channel, REJECTED, reason, command.quantity, (), cause)
    )
    if reason in _BAD_EVENT_REASONS:
        error = f"{command.command.value}: {detail}" if detail else command.command.value
        out.append(Rejection(reason, error, command.event_id, state.sku, cause.partition, cause.position))


def _how_it_ended(finished: FinishedReservation) -> str:
    """Why a finished reservation is not active, in words without ids (dead letters are tallied by this text)."""
    if finished.final_outcome is None:
        return f"its RESERVE was refused ({finished.reserve_reason})"
    return f"it ended {finished.final_outcome}"


def apply_command(
    state: SkuState,
    policy: Policy | None,
    partition: PartitionState,
    finished_records: FinishedRecords,
    command: ReservationCommand,
    cause: Cause,
    out: list,
) -> tuple[str, ...]:
    """Apply one command; appends its decision (and any Rejection) to `out`; returns the locations it changed."""
    if command.command is ReservationAction.RESERVE:
        return _reserve(state, policy, partition, finished_records, command, cause, out)
    return _finish(state, policy, partition, finished_records, command, cause, out)


def answerable(command: ReservationCommand) -> bool:
    """Whether a command, however malformed otherwise, names a reservation, SKU and channel that a decision can be
    keyed and routed by: such a command is decided (REJECTED, with its reason) rather than only dead-lettered."""
    return all(
        type(value) is str and IDENTIFIER.fullmatch(value) is not None
        for value in (command.reservation_id, command.sku, command.channel)
    )


def refuse_malformed(command: ReservationCommand, reason: str, cause: Cause, out: list) -> None:
    """The REJECTED decision of a command that failed validation but names a usable reservation, SKU and channel,
    so order management gets its answer (docs/RULES.md, section 6); the caller adds the Rejection."""
    quantity = command.quantity
    requested = quantity if type(quantity) is int and 0 <= quantity <= MAX_ECHOED_QUANTITY else 0
    out.append(_decision(command.sku, command.reservation_id, command.channel, REJECTED, reason, requested, (), cause))


MAX_ECHOED_QUANTITY = 2**62  # a malformed command's quantity is echoed only if it fits the decision's Avro long


def _reserve(
    state: SkuState,
    policy: Policy | None,
    partition: PartitionState,
    finished_records: FinishedRecords,
    command: ReservationCommand,
    cause: Cause,
    out: list,
) -> tuple[str, ...]:
    reservation_id = command.reservation_id
    active = state.reservations.get(reservation_id)
    if active is not None:  # repeated reserve: the same answer, nothing more reserved
        out.append(
            _decision(state.sku, reservation_id, active.channel, ACCEPTED, None, active.requested, active.lines, cause)
        )
        return NO_LOCATIONS
    finished = finished_records.get(state.sku, reservation_id)
    if finished is not None:
        outcome = ACCEPTED if finished.reserve_reason is None else REJECTED
        out.append(
            _decision(
                state.sku,
                reservation_id,
                finished.channel,
                outcome,
                finished.reserve_reason,
                finished.requested,
                finished.lines,
                cause,
            )
        )
        return NO_LOCATIONS

    if policy is None:
        reason = reasons.NO_POLICY
    else:
        plan = policy.channel_by_name.get(command.channel)
        location = command.location
        if plan is None:
            reason = reasons.UNKNOWN_CHANNEL
        elif location is not None and location not in policy.location_types:
            reason = reasons.UNKNOWN_LOCATION
        elif location is not None and location not in plan.feeds:
            reason = reasons.LOCATION_NOT_IN_CHANNEL
        elif command.expires_at is not None and command.expires_at <= partition.clock:
            reason = reasons.ALREADY_EXPIRED
        else:
            lines = _source(state, plan, command)
            reason = None if lines else reasons.INSUFFICIENT_STOCK
    if reason is not None:
        _refuse(state, command, reason, cause, out)
        if reason not in _BAD_EVENT_REASONS:  # a valid request refused: remember the answer for repeats
            finished_records.remember(
                state.sku, FinishedReservation(reservation_id, command.channel, command.quantity, (), reason, None)
            )
        return NO_LOCATIONS

    reservation = Reservation(reservation_id, command.channel, command.quantity, lines, command.expires_at)
    state.reservations[reservation_id] = reservation
    positions = state.positions
    for location, units in lines:
        position = positions[location]
        position.reserved += units
        refresh_position(state, policy, location, position)
    add_own_reserved(state, policy, command.channel, lines, 1)
    expires_at = command.expires_at
    if expires_at is not None:
        partition.register_expiry(state.sku, reservation_id, expires_at)
        state.add_expiry(expires_at, reservation_id)
    out.append(_decision(state.sku, reservation_id, command.channel, ACCEPTED, None, command.quantity, lines, cause))
    return tuple(location for location, _ in lines)


def _candidates(state: SkuState, plan: ChannelPlan, policy_types) -> tuple[str, ...] | list[str]:
    """The channel's locations in sourcing order, restricted cheaply to those where the SKU has a position.

    The restricted order is cached per channel on the state (derived, valid for its policy): positions are only
    ever added, so the cached order stays right while the number of positions is unchanged."""
    positions = state.positions
    order = plan.sourcing_order
    if len(order) <= len(positions):
        return order
    cache = state.sourcing_cache
    cached = cache.get(plan.name)
    if cached is not None and cached[0] == len(positions):
        return cached[1]
    feeds = plan.feeds
    restricted = sorted(
        (location for location in positions if location in feeds),
        key=lambda location: (SOURCING_TYPE_RANK.get(policy_types[location], 9), location),
    )
    cache[plan.name] = (len(positions), restricted)
    return restricted


def _source(state: SkuState, plan: ChannelPlan, command: ReservationCommand) -> tuple[tuple[str, int], ...]:
    """Lines satisfying the request within the channel's availability right now; () if it cannot be satisfied."""
    wanted = command.quantity
    location = command.location
    if plan.is_network:
        limit = network_quantity(state, plan)
        if location is not None:
            at_location = location_quantity(state, plan, location)
            limit = limit if limit < at_location else at_location
    elif location is not None:
        limit = location_quantity(state, plan, location)
    else:
        limit = wanted  # LOCATION channel, any location: each location's own advertised value is its limit
    if limit < wanted:
        if not command.allow_partial or limit <= 0:
            return ()
        wanted = limit
    if location is not None:
        return ((location, wanted),)

    lines: list[tuple[str, int]] = []
    remaining = wanted
    policy_types = state.policy.location_types
    for candidate in _candidates(state, plan, policy_types):
        available = location_quantity(state, plan, candidate)
        if available <= 0:
            continue
        take = remaining if remaining < available else available
        lines.append((candidate, take))
        remaining -= take
        if remaining == 0:
            break
    if remaining and not command.allow_partial:
        return ()
    return tuple(lines)


def _finish(
    state: SkuState,
    policy: Policy | None,
    partition: PartitionState,
    finished_records: FinishedRecords,
    command: ReservationCommand,
    cause: Cause,
    out: list,
) -> tuple[str, ...]:
    """RELEASE or FULFIL a whole reservation."""
    reservation_id = command.reservation_id
    outcome = _FINAL_OUTCOME_OF[command.command]
    reservation = state.reservations.get(reservation_id)
    if reservation is None:
        finished = finished_records.get(state.sku, reservation_id)
        if finished is not None and finished.final_outcome == outcome.value and finished.channel == command.channel:
            out.append(
                _decision(
                    state.sku, reservation_id, finished.channel, outcome, None, command.quantity, finished.lines, cause
                )
            )  # repeated release/fulfil: the same answer
            return NO_LOCATIONS
        if finished is None:
            _refuse(state, command, reasons.UNKNOWN_RESERVATION, cause, out)
        else:
            _refuse(state, command, reasons.RESERVATION_NOT_ACTIVE, cause, out, _how_it_ended(finished))
        return NO_LOCATIONS
    if reservation.channel != command.channel:
        _refuse(state, command, reasons.CHANNEL_MISMATCH, cause, out)
        return NO_LOCATIONS

    positions = state.positions
    time = command.event_time
    if outcome is FULFILLED:
        for location, units in reservation.lines:
            position = positions[location]
            if not position.is_counted(time) and position.sellable < units:
                _refuse(state, command, reasons.INSUFFICIENT_ON_HAND, cause, out)
                return NO_LOCATIONS
    _end(state, policy, partition, finished_records, reservation, outcome)
    if outcome is FULFILLED:  # the reserved units leave as a sale
        for location, units in reservation.lines:
            position = positions[location]
            if not position.is_counted(time):
                position.sellable -= units
                position.record_delta(time, -units)
                refresh_position(state, policy, location, position)
    out.append(
        _decision(state.sku, reservation_id, reservation.channel, outcome, None, command.quantity, reservation.lines, cause)
    )
    return tuple(location for location, _ in reservation.lines)


def _end(
    state: SkuState,
    policy: Policy | None,
    partition: PartitionState,
    finished_records: FinishedRecords,
    reservation: Reservation,
    outcome: ReservationOutcome,
) -> None:
    """Return a reservation's units to the pool and remember how it ended."""
    del state.reservations[reservation.reservation_id]
    positions = state.positions
    for location, units in reservation.lines:
        position = positions[location]
        position.reserved -= units
        if policy is not None:
            refresh_position(state, policy, location, position)
    if policy is not None:
        add_own_reserved(state, policy, reservation.channel, reservation.lines, -1)
    if reservation.expires_at is not None:
        partition.forget_expiry(state.sku, reservation.reservation_id)
    finished_records.remember(
        state.sku,
        FinishedReservation(
            reservation.reservation_id, reservation.channel, reservation.requested, reservation.lines, None, outcome.value
        ),
    )


def expire(
    state: SkuState,
    policy: Policy | None,
    partition: PartitionState,
    finished_records: FinishedRecords,
    reservation_id: str,
    cause: Cause,
    out: list,
) -> tuple[str, ...]:
    """Expire an active reservation (its expiry has been reached on the partition clock)."""
    reservation = state.reservations[reservation_id]
    _end(state, policy, partition, finished_records, reservation, EXPIRED)
    state.remember_entry(cause.event_id, EXPIRY_ENTRY, cause.partition, cause.position, EXPIRED.value, reservation_id)
    out.append(
        _decision(
            state.sku, reservation_id, reservation.channel, EXPIRED, None, reservation.requested, reservation.lines, cause
        )
    )
    return tuple(location for location, _ in reservation.lines)
