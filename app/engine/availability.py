"""Available-to-promise and channel availability, kept incrementally.

Per location: ATP = max(0, sellable - reserved - safety), and the in-transit variant
max(0, sellable + in_transit - reserved - safety). Each NETWORK channel keeps the sum of its locations' ATP
(`network_pools`), updated by the difference whenever one location changes, so an event costs the same with 5 or
500 locations. The order of operations from pool to advertised quantity is in channel_quantity() and docs/RULES.md.
"""

from __future__ import annotations

from app.engine.outputs import AvailabilityStatus, new_channel_availability
from app.engine.policy import BASIS_POINTS, ChannelPlan, Policy
from app.engine.state import Position, Published, SkuState

IN_STOCK = AvailabilityStatus.IN_STOCK
LOW_STOCK = AvailabilityStatus.LOW_STOCK
OUT_OF_STOCK = AvailabilityStatus.OUT_OF_STOCK


class Cause:
    """The ledger entry an output is attributed to."""

    __slots__ = ("event_id", "partition", "position", "event_time", "policy_version", "record")

    def __init__(self, event_id: str, partition: int, position: int, event_time: int, policy_version: int,
                 record: dict | None = None) -> None:
        self.event_id = event_id
        self.partition = partition
        self.position = position  # ledger position (app.engine.positions)
        self.event_time = event_time
        self.policy_version = policy_version
        # the availability changes of the ledger record being applied, one per key (None: each change is published)
        self.record = record


def refresh_position(state: SkuState, policy: Policy, location: str, position: Position) -> None:
    """Recompute one location's ATP after its position changed and move the difference into the NETWORK pools."""
    base = position.sellable - position.reserved - position.safety
    held_percent = policy.held_percent
    if held_percent and location in held_percent and position.sellable > 0:  # a silent feed's BUFFER_PERCENT
        base -= -(-position.sellable * held_percent[location] // 100)  # rounded up
    atp = base if base > 0 else 0
    in_transit = position.in_transit
    with_transit = base + in_transit if in_transit > 0 else base  # received before shipped: counts as none in transit
    if with_transit < 0:
        with_transit = 0
    change = atp - position.atp
    change_with_transit = with_transit - position.atp_with_transit
    if change or change_with_transit:
        position.atp = atp
        position.atp_with_transit = with_transit
        plans = policy.network_channels_by_location.get(location)
        if plans:
            pools = state.network_pools
            for plan in plans:
                pools[plan.name] += change_with_transit if plan.include_in_transit else change


def rebuild_derived(state: SkuState, policy: Policy) -> None:
    """Recompute every derived field of `state` under `policy` (after decoding, or when the policy changed)."""
    sku = state.sku
    state.policy = policy
    state.network_pools = {plan.name: 0 for plan in policy.network_channels}
    for location, position in state.positions.items():
        position.safety = policy.safety_stock(sku, location)
        position.atp = position.atp_with_transit = 0
        refresh_position(state, policy, location, position)  # adds the location's full ATP to the pools
    state.network_own_reserved = {}
    state.location_own_reserved = {}
    state.sourcing_cache = {}
    for reservation in state.reservations.values():
        add_own_reserved(state, policy, reservation.channel, reservation.lines, 1)
    state.rebuild_expiries()


def add_own_reserved(state: SkuState, policy: Policy, channel: str, lines, sign: int) -> None:
    """Count (sign=1) or uncount (sign=-1) a reservation's units as the channel's own, where the channel draws."""
    plan = policy.channel_by_name.get(channel)
    if plan is None:
        return
    for location, units in lines:
        if location not in plan.feeds:
            continue
        if plan.is_network:
            own = state.network_own_reserved
            own[channel] = own.get(channel, 0) + sign * units
        else:
            own_at = state.location_own_reserved
            key = (channel, location)
            own_at[key] = own_at.get(key, 0) + sign * units


def channel_quantity(plan: ChannelPlan, pool: int, own_reserved: int) -> int:
    """Advertised units from a pool (the summed ATP for NETWORK, one location's ATP for LOCATION) and the units this
    channel already holds in reservations drawn from that pool. Order of operations (docs/RULES.md):
    gross = pool + own; waterfall: gross - protected quantities of higher channels; share (floor);
    minus own reservations; at most the pool; minus buffer; cap; never below 0."""
    after_waterfall = pool + own_reserved - plan.protected_above
    if after_waterfall <= 0:
        return 0
    quantity = after_waterfall * plan.share_bp // BASIS_POINTS - own_reserved
    if quantity > pool:
        quantity = pool
    quantity -= plan.buffer
    if quantity <= 0:
        return 0
    cap = plan.max_advertised
    if cap is not None and quantity > cap:
        return cap
    return quantity


def status_of(plan: ChannelPlan, quantity: int) -> AvailabilityStatus:
    if quantity <= 0:
        return OUT_OF_STOCK
    if quantity <= plan.low_stock_threshold:
        return LOW_STOCK
    return IN_STOCK


def network_quantity(state: SkuState, plan: ChannelPlan) -> int:
    return channel_quantity(
        plan, state.network_pools.get(plan.name, 0), state.network_own_reserved.get(plan.name, 0)
    )


def location_quantity(state: SkuState, plan: ChannelPlan, location: str) -> int:
    """What a channel can take at one location: a LOCATION channel's advertised value, or, for a NETWORK channel,
    that location's ATP (the channel-level limit is checked separately)."""
    position = state.positions.get(location)
    if position is None:
        return 0
    pool = position.atp_with_transit if plan.include_in_transit else position.atp
    if plan.is_network:
        return pool
    return channel_quantity(plan, pool, state.location_own_reserved.get((plan.name, location), 0))


def _publish(state: SkuState, channel: str, location, quantity: int, status, cause: Cause, out: list) -> None:
    _publish_key(state, (channel, location), quantity, status, cause, out)


def _publish_key(state: SkuState, key: tuple, quantity: int, status, cause: Cause, out: list) -> None:
    """Publish the key if its quantity or status changed since its last record."""
    last = state.published.get(key)
    if last is not None and last.quantity == quantity and last.status == status:  # str enum: equals its decoded string
        return
    _emit(state, key, last, quantity, status, cause, out)


def _emit(state: SkuState, key, last: Published | None, quantity: int, status, cause: Cause, out: list) -> None:
    """Publish a changed key (`last` is its Published record, None if never published). Inside a ledger record
    (`cause.record`), a key's later change in the same record replaces its earlier one and keeps its version: the
    record publishes each key it changed once, with its last value (docs/CONTRACT.md, "Ordering guarantee")."""
    if last is None:
        if quantity == 0 and status is OUT_OF_STOCK:
            return  # a key never published reads as 0 / OUT_OF_STOCK already
        state.published[key] = last = Published(0, 0, OUT_OF_STOCK)
    record = cause.record
    if record is None:
        version = last.version = last.version + 1
    else:
        record_key = (state.sku, key)
        if record.pop(record_key, None) is None:
            version = last.version = last.version + 1
        else:
            version = last.version  # changed again within the record: the same published record
    last.quantity = quantity
    last.status = status
    policy = state.policy  # the one publish_changes evaluates under
    labels = policy.fallback_labels if policy is not None else None  # silent feeds shaping this key (usually none)
    output = new_channel_availability(
        key[0],
        state.sku,
        key[1],
        quantity,
        status,
        version,
        cause.event_id,
        cause.partition,
        cause.position,
        cause.policy_version,
        cause.event_time,
        False,
        labels.get(key, ()) if labels else (),
    )
    if record is None:
        out.append(output)
    else:
        record[record_key] = output  # the dict's order: each key's last change, so ledger order


def publish_changes(state: SkuState, policy: Policy, locations, cause: Cause, out: list) -> None:
    """Append a ChannelAvailability for every key whose quantity or status changed: every NETWORK channel, and each
    LOCATION channel at the given (touched) locations. Channels in waterfall order, locations in the given order."""
    for plan in policy.channels:
        if plan.is_network:
            quantity = network_quantity(state, plan)
            _publish_key(state, plan.network_key, quantity, status_of(plan, quantity), cause, out)
        else:
            feeds = plan.feeds
            positions = state.positions
            for location in locations:
                if location in feeds and location in positions:
                    quantity = location_quantity(state, plan, location)
                    _publish_key(state, (plan.name, location), quantity, status_of(plan, quantity), cause, out)


def publish_all(state: SkuState, policy: Policy, cause: Cause, out: list) -> None:
    """Re-evaluate every key of the SKU (after a policy change). Keys the policy no longer covers (channel removed,
    location no longer feeding it) are published once as 0 / OUT_OF_STOCK so nobody keeps advertising them."""
    publish_changes(state, policy, sorted(state.positions), cause, out)
    for key in sorted(state.published, key=lambda key: (key[0], key[1] or "")):
        channel, location = key
        plan = policy.channel_by_name.get(channel)
        covered = plan is not None and (
            plan.is_network if location is None else (not plan.is_network and location in plan.feeds)
        )
        if not covered:
            _publish(state, channel, location, 0, OUT_OF_STOCK, cause, out)
