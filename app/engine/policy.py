"""A PolicyChange compiled for fast lookups: location types, safety stock, and one plan per channel.

A policy is data. Compiling it once per version precomputes what every event needs (which channels a location
feeds, each channel's waterfall deduction and sourcing order), so applying an event never scans the policy.
"""

from __future__ import annotations

from app.engine.events import ChannelGranularity, LocationType, PolicyChange, SafetyStockScope

BASIS_POINTS = 10_000

SOURCING_TYPE_RANK = {
    LocationType.DISTRIBUTION_CENTRE: 0,
    LocationType.DARK_STORE: 1,
    LocationType.STORE: 2,
}
"""Order in which a reservation without a location takes stock: distribution centres first (they exist to ship),
then dark stores, then stores (whose stock also serves walk-in customers); by location id within a type."""


class ChannelPlan:
    """One channel's rule, ready to evaluate. `rank` is the position in waterfall order (priority, then name)."""

    __slots__ = (
        "rank",
        "name",
        "priority",
        "is_network",
        "feeds",
        "sourcing_order",
        "share_bp",
        "protected_quantity",
        "protected_above",
        "buffer",
        "max_advertised",
        "include_in_transit",
        "low_stock_threshold",
        "network_key",
    )

    def __init__(self, rank: int, rule, location_types: dict[str, LocationType], protected_above: int) -> None:
        self.rank = rank
        self.name = rule.channel
        self.priority = rule.priority
        self.is_network = rule.granularity is ChannelGranularity.NETWORK
        selected_types = frozenset(rule.location_types)
        feeds = {location for location, kind in location_types.items() if kind in selected_types}
        feeds.update(rule.locations)
        self.feeds = frozenset(feeds)
        self.sourcing_order = tuple(
            sorted(feeds, key=lambda location: (SOURCING_TYPE_RANK.get(location_types[location], 9), location))
        )
        self.share_bp = rule.share_bp
        self.protected_quantity = rule.protected_quantity
        self.protected_above = protected_above
        self.buffer = rule.buffer
        self.max_advertised = rule.max_advertised
        self.include_in_transit = rule.include_in_transit
        self.low_stock_threshold = rule.low_stock_threshold
        self.network_key = (self.name, None)  # the channel's key in SkuState.published when it is NETWORK


class Policy:
    """A compiled policy version, in force from ledger position `effective_position` (the PolicyChange's own)."""

    __slots__ = (
        "change",
        "version",
        "event_id",
        "event_time",
        "effective_position",
        "location_types",
        "channels",
        "channel_by_name",
        "network_channels",
        "location_channels",
        "network_channels_by_location",
        "location_channels_by_location",
        "_safety_by_sku_location",
        "_safety_by_sku",
        "_safety_by_type",
    )

    def __init__(self, change: PolicyChange, effective_position: int) -> None:
        self.change = change
        self.version = change.version
        self.event_id = change.event_id
        self.event_time = change.event_time
        self.effective_position = effective_position
        self.location_types = {item.location: item.location_type for item in change.locations}

        self._safety_by_sku_location: dict[tuple[str, str], int] = {}
        self._safety_by_sku: dict[str, int] = {}
        self._safety_by_type: dict[LocationType, int] = {}
        for rule in change.safety_stock:  # a later rule with the same scope and target replaces an earlier one
            if rule.scope is SafetyStockScope.SKU_LOCATION:
                self._safety_by_sku_location[(rule.sku, rule.location)] = rule.quantity
            elif rule.scope is SafetyStockScope.SKU:
                self._safety_by_sku[rule.sku] = rule.quantity
            else:
                self._safety_by_type[rule.location_type] = rule.quantity

        channels: list[ChannelPlan] = []
        protected_above = 0
        for rank, rule in enumerate(sorted(change.channels, key=lambda rule: (rule.priority, rule.channel))):
            channels.append(ChannelPlan(rank, rule, self.location_types, protected_above))
            protected_above += rule.protected_quantity
        self.channels = tuple(channels)
        self.channel_by_name = {plan.name: plan for plan in channels}
        self.network_channels = tuple(plan for plan in channels if plan.is_network)
        self.location_channels = tuple(plan for plan in channels if not plan.is_network)
        network_by_location: dict[str, list[ChannelPlan]] = {}
        location_by_location: dict[str, list[ChannelPlan]] = {}
        for plan in channels:
            target = network_by_location if plan.is_network else location_by_location
            for location in plan.feeds:
                target.setdefault(location, []).append(plan)
        self.network_channels_by_location = {key: tuple(value) for key, value in network_by_location.items()}
        self.location_channels_by_location = {key: tuple(value) for key, value in location_by_location.items()}

    def safety_stock(self, sku: str, location: str) -> int:
        """Units of `sku` held back at `location`: the most specific rule wins (SKU_LOCATION, then SKU, then the
        location's LOCATION_TYPE), else 0. Specificity, not size: a SKU rule of 0 overrides a type rule of 5."""
        quantity = self._safety_by_sku_location.get((sku, location))
        if quantity is not None:
            return quantity
        quantity = self._safety_by_sku.get(sku)
        if quantity is not None:
            return quantity
        location_type = self.location_types.get(location)
        if location_type is None:
            return 0
        return self._safety_by_type.get(location_type, 0)

    def safety_stock_rule(self, sku: str, location: str) -> tuple[int, SafetyStockScope | None]:
        """safety_stock() and the scope of the rule that set it (None: no rule applies, 0). Same precedence; used
        to explain a number, so it is kept beside safety_stock() and tested to agree with it."""
        quantity = self._safety_by_sku_location.get((sku, location))
        if quantity is not None:
            return quantity, SafetyStockScope.SKU_LOCATION
        quantity = self._safety_by_sku.get(sku)
        if quantity is not None:
            return quantity, SafetyStockScope.SKU
        location_type = self.location_types.get(location)
        if location_type is not None and location_type in self._safety_by_type:
            return self._safety_by_type[location_type], SafetyStockScope.LOCATION_TYPE
        return 0, None

    def channel_names(self) -> frozenset[str]:
        return frozenset(self.channel_by_name)
