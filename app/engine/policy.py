"""A PolicyChange compiled for fast lookups: location types, safety stock, and one plan per channel.

A policy is data. Compiling it once per version precomputes what every event needs (which channels a location
feeds, each channel's waterfall deduction and sourcing order), so applying an event never scans the policy.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.engine.events import ChannelGranularity, FallbackKind, FeedRule, LocationType, PolicyChange, SafetyStockScope

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

    def __init__(self, rank: int, rule, location_types: dict[str, LocationType], protected_above: int,
                 excluded: frozenset[str] = frozenset()) -> None:
        self.rank = rank
        self.name = rule.channel
        self.priority = rule.priority
        self.is_network = rule.granularity is ChannelGranularity.NETWORK
        selected_types = frozenset(rule.location_types)
        feeds = {location for location, kind in location_types.items() if kind in selected_types}
        feeds.update(rule.locations)
        if self.is_network:
            feeds -= excluded  # a fallback (stale feed) takes the location out of NETWORK channels
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
    """A compiled policy version, in force from ledger position `effective_position` (the PolicyChange's own),
    under the fallbacks of the feeds found silent (`degraded`: location -> the feed rules whose feed is silent there;
    docs/RULES.md, section 12). Without silent feeds a policy is exactly its change."""

    __slots__ = (
        "degraded",
        "held_percent",
        "fallback_labels",
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
        "_held_units",
        "_safety_by_sku_location",
        "_safety_by_sku",
        "_safety_by_type",
    )

    def __init__(self, change: PolicyChange, effective_position: int,
                 degraded: Mapping[str, tuple[FeedRule, ...]] | None = None) -> None:
        degraded = dict(degraded or {})
        self.degraded = degraded
        self.change = change
        self.version = change.version
        self.event_id = change.event_id
        self.event_time = change.event_time
        self.effective_position = effective_position
        self.location_types = {item.location: item.location_type for item in change.locations}

        # keyed as the rules name their targets: a valid policy's rules name every target their scope needs
        self._safety_by_sku_location: dict[tuple[str | None, str | None], int] = {}
        self._safety_by_sku: dict[str | None, int] = {}
        self._safety_by_type: dict[LocationType | None, int] = {}
        for safety_rule in change.safety_stock:  # a later rule with the same scope and target replaces an earlier one
            if safety_rule.scope is SafetyStockScope.SKU_LOCATION:
                self._safety_by_sku_location[(safety_rule.sku, safety_rule.location)] = safety_rule.quantity
            elif safety_rule.scope is SafetyStockScope.SKU:
                self._safety_by_sku[safety_rule.sku] = safety_rule.quantity
            else:
                self._safety_by_type[safety_rule.location_type] = safety_rule.quantity

        held_units: dict[str, int] = {}
        self.held_percent: dict[str, int] = {}  # location -> percent of its sellable units held back
        excluded = set()
        for location, rules in degraded.items():
            for feed_rule in rules:
                if feed_rule.fallback is FallbackKind.BUFFER_UNITS:
                    held_units[location] = held_units.get(location, 0) + feed_rule.amount
                elif feed_rule.fallback is FallbackKind.BUFFER_PERCENT:
                    self.held_percent[location] = min(100, self.held_percent.get(location, 0) + feed_rule.amount)
                else:
                    excluded.add(location)
        self._held_units = held_units
        # `<location>:<feed>` labels of the silent feeds, for the records they shape (ChannelAvailability.fallbacks)
        labels = {location: tuple(sorted(f"{location}:{rule.feed.value}" for rule in rules))
                  for location, rules in degraded.items()}

        channels: list[ChannelPlan] = []
        protected_above = 0
        for rank, channel_rule in enumerate(sorted(change.channels, key=lambda rule: (rule.priority, rule.channel))):
            channels.append(ChannelPlan(rank, channel_rule, self.location_types, protected_above, frozenset(excluded)))
            protected_above += channel_rule.protected_quantity
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
        # published key (channel, location or None) -> the labels of the silent feeds behind its value
        fallback_labels: dict[tuple[str, str | None], tuple[str, ...]] = {}
        for plan in channels:
            if plan.is_network:
                drawn = sorted(label for location, names in labels.items() for label in names
                               if location in plan.feeds or location in excluded and self._would_feed(plan, location))
                if drawn:
                    fallback_labels[plan.network_key] = tuple(drawn)
            else:
                for location, names in labels.items():
                    if location in plan.feeds:
                        fallback_labels[(plan.name, location)] = names
        self.fallback_labels = fallback_labels

    def _would_feed(self, plan: ChannelPlan, location: str) -> bool:
        """Whether the channel's rule selects `location` (before a fallback excluded it)."""
        rule = next(rule for rule in self.change.channels if rule.channel == plan.name)
        return self.location_types.get(location) in rule.location_types or location in rule.locations

    def safety_stock(self, sku: str, location: str) -> int:
        """Units of `sku` held back at `location`: the most specific rule wins (SKU_LOCATION, then SKU, then the
        location's LOCATION_TYPE), else 0 (specificity, not size: a SKU rule of 0 overrides a type rule of 5); plus
        the units a silent feed's BUFFER_UNITS fallback holds back there."""
        held = self._held_units.get(location, 0) if self._held_units else 0
        return self._base_safety_stock(sku, location) + held

    def _base_safety_stock(self, sku: str, location: str) -> int:
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


def degraded_locations(policy: Policy, silent) -> dict[str, tuple[FeedRule, ...]]:
    """Location -> the feed rules of `policy` whose feed is silent there (`silent`: (feed, location) pairs)."""
    rules = {rule.feed.value: rule for rule in policy.change.feeds}
    degraded: dict[str, list[FeedRule]] = {}
    for feed, location in sorted(silent):
        rule = rules.get(feed)
        if rule is not None:
            degraded.setdefault(location, []).append(rule)
    return {location: tuple(found) for location, found in degraded.items()}
