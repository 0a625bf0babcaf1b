"""How each channel's number for one SKU was reached: a pure function over the engine's own state and rules.

    explain_sku(state, partition_state, channel=None, location=None) -> dict (JSON-ready) or None

The numbers come from the same code that decided what was published: `rebuild_derived` (safety stock, per-location
ATP, NETWORK pools, own reservations, under the compiled policy in force) and `channel_quantity` / `status_of`. The
step-by-step breakdown (docs/RULES.md, section 5) is shown beside them and ends, by construction and by test, at
the same quantity. Each key also shows its last published record and whether the two agree (`matches_published`):
they always should, and an operator who sees `false` has found a bug, not a rounding difference.

The SKU's last ledger entries come from `SkuState.history` (bounded, HISTORY_LIMIT). The state passed in is never
changed: the function works on a decoded copy.
"""

from __future__ import annotations

from typing import Any

from app.engine.availability import channel_quantity, rebuild_derived, status_of
from app.engine.codec import decode_sku_state, encode_sku_state
from app.engine.outputs import AvailabilityStatus
from app.engine.policy import BASIS_POINTS, ChannelPlan, Policy, degraded_locations
from app.engine.positions import split_position
from app.engine.state import PartitionState, SkuState


def policy_for(state: SkuState, partition_state: PartitionState | None) -> Policy | None:
    """The compiled policy the SKU's current numbers were computed under: the one in force at its last applied
    entry (a later policy would have re-evaluated the SKU and moved that offset)."""
    if partition_state is None:
        return None
    found = partition_state.policy_change_at(state.last_position)
    if found is None:
        return None
    effective_position, change = found
    policy = Policy(change, effective_position)
    degraded = degraded_locations(policy, partition_state.silent) if partition_state.silent else None
    return Policy(change, effective_position, degraded) if degraded else policy


def explain_sku(
    state: SkuState,
    partition_state: PartitionState | None,
    *,
    channel: str | None = None,
    location: str | None = None,
) -> dict[str, Any] | None:
    """The explanation document, or None when `location` names a location the SKU has no stock position at.

    `channel` keeps only that channel (an empty list if the policy has no such channel). `location` keeps only
    that location's stock and LOCATION-channel keys; NETWORK channels are still shown whole, since their pool is
    the sum over every location they draw from."""
    if location is not None and location not in state.positions:
        return None
    state = decode_sku_state(encode_sku_state(state))  # a private copy: derived fields are rebuilt on it
    policy = policy_for(state, partition_state)
    if policy is not None:
        rebuild_derived(state, policy)
    partition = partition_state.partition if partition_state is not None else None
    return {
        "sku": state.sku,
        "ledger_partition": partition,
        "last_ledger_offset": split_position(state.last_position)[0],
        "last_ledger_index": split_position(state.last_position)[1],
        "policy": None
        if policy is None
        else {
            "version": policy.version,
            "event_id": policy.event_id,
            "effective_offset": split_position(policy.effective_position)[0],  # a policy is a record of its own
        },
        "locations": [
            _location(state, policy, name)
            for name in sorted(state.positions)
            if location is None or name == location
        ],
        "channels": []
        if policy is None
        else [
            _channel(state, plan, location)
            for plan in policy.channels
            if channel is None or plan.name == channel
        ],
        "reservations": [
            {
                "reservation_id": reservation.reservation_id,
                "channel": reservation.channel,
                "requested_quantity": reservation.requested,
                "reserved_quantity": reservation.quantity,
                "lines": [{"location": at, "quantity": units} for at, units in reservation.lines],
                "expires_at": reservation.expires_at,
            }
            for reservation in state.reservations.values()
            if (channel is None or reservation.channel == channel)
            and (location is None or any(at == location for at, _ in reservation.lines))
        ],
        "recent_entries": [
            {
                "event_id": event_id,
                "kind": kind,
                "ledger_partition": entry_partition,
                "ledger_offset": split_position(position)[0],
                "ledger_index": split_position(position)[1],
                "result": result,
                "reservation_id": reservation_id,
            }
            for event_id, kind, entry_partition, position, result, reservation_id in reversed(state.history)
        ],
    }


def _location(state: SkuState, policy: Policy | None, name: str) -> dict[str, Any]:
    position = state.positions[name]
    if policy is None:
        safety: dict[str, Any] = {"quantity": 0, "rule": None}
        location_type = None
        atp = atp_with_transit = None
        feeds: list[str] = []
        fallbacks: list[dict] = []
    else:
        quantity, scope = policy.safety_stock_rule(state.sku, name)
        safety = {"quantity": quantity, "rule": None if scope is None else scope.value}
        kind = policy.location_types.get(name)
        location_type = None if kind is None else kind.value
        atp, atp_with_transit = position.atp, position.atp_with_transit
        feeds = [plan.name for plan in policy.channels if name in plan.feeds]
        fallbacks = [{"feed": rule.feed.value, "fallback": rule.fallback.value, "amount": rule.amount}
                     for rule in policy.degraded.get(name, ())]
    return {
        "location": name,
        "location_type": location_type,
        "sellable": position.sellable,
        "reserved": position.reserved,
        "safety_stock": safety,
        "in_transit": position.in_transit,
        "damaged": position.damaged,
        "quarantine": position.quarantine,
        "atp": atp,
        "atp_with_transit": atp_with_transit,
        "channels": feeds,
        "fallbacks": fallbacks,
    }


def _channel(state: SkuState, plan: ChannelPlan, location: str | None) -> dict[str, Any]:
    if plan.is_network:
        contributions = [
            {"location": name, "units": _pool_of(state, plan, name)}
            for name in plan.sourcing_order
            if name in state.positions
        ]
        keys = [
            _key(
                state,
                plan,
                None,
                state.network_pools.get(plan.name, 0),
                state.network_own_reserved.get(plan.name, 0),
                contributions,
            )
        ]
    else:
        keys = [
            _key(
                state,
                plan,
                name,
                _pool_of(state, plan, name),
                state.location_own_reserved.get((plan.name, name), 0),
                [{"location": name, "units": _pool_of(state, plan, name)}],
            )
            for name in plan.sourcing_order
            if name in state.positions and (location is None or name == location)
        ]
    return {
        "channel": plan.name,
        "granularity": "NETWORK" if plan.is_network else "LOCATION",
        "priority": plan.priority,
        "waterfall_rank": plan.rank,
        "rule": {
            "share_bp": plan.share_bp,
            "protected_quantity": plan.protected_quantity,
            "protected_above": plan.protected_above,
            "buffer": plan.buffer,
            "max_advertised": plan.max_advertised,
            "include_in_transit": plan.include_in_transit,
            "low_stock_threshold": plan.low_stock_threshold,
            "locations": list(plan.sourcing_order),
        },
        "keys": keys,
    }


def _pool_of(state: SkuState, plan: ChannelPlan, name: str) -> int:
    position = state.positions[name]
    return position.atp_with_transit if plan.include_in_transit else position.atp


def quantity_steps(plan: ChannelPlan, pool: int, own_reserved: int) -> dict[str, int | None]:
    """The order of operations of docs/RULES.md section 5, one named value per step. `quantity` equals
    channel_quantity(plan, pool, own_reserved) (tested); a step after one that reached 0 is None."""
    steps: dict[str, int | None] = {
        "pool": pool,
        "own_reserved": own_reserved,
        "gross": pool + own_reserved,
        "after_waterfall": pool + own_reserved - plan.protected_above,
        "share": None,
        "free": None,
        "after_buffer": None,
        "quantity": 0,
    }
    after_waterfall = steps["after_waterfall"]
    if after_waterfall <= 0:
        return steps
    share = after_waterfall * plan.share_bp // BASIS_POINTS
    free = min(share - own_reserved, pool)
    after_buffer = free - plan.buffer
    steps.update(share=share, free=free, after_buffer=after_buffer)
    if after_buffer > 0:
        cap = plan.max_advertised
        steps["quantity"] = after_buffer if cap is None else min(after_buffer, cap)
    return steps


def _key(state: SkuState, plan: ChannelPlan, location: str | None, pool: int, own: int, contributions) -> dict:
    quantity = channel_quantity(plan, pool, own)  # what the engine publishes
    status = status_of(plan, quantity)
    published = state.published.get((plan.name, location))
    if published is None:  # never published reads as 0 / OUT_OF_STOCK (docs/RULES.md, section 8)
        shown = None
        matches = quantity == 0 and status is AvailabilityStatus.OUT_OF_STOCK
    else:
        published_status = getattr(published.status, "value", published.status)
        shown = {"quantity": published.quantity, "status": published_status, "version": published.version}
        matches = published.quantity == quantity and published_status == status.value
    return {
        "key": state.sku if location is None else f"{state.sku}/{location}",
        "location": location,
        "pool_locations": contributions,
        "steps": quantity_steps(plan, pool, own),
        "quantity": quantity,
        "status": status.value,
        "published": shown,
        "matches_published": matches,
    }
