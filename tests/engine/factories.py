"""Small factories for engine tests: policies, events and a driver that numbers ledger offsets."""

from __future__ import annotations

import itertools

from app.engine import (
    ChannelAvailability,
    ChannelGranularity,
    ChannelRule,
    ClockTick,
    InventoryException,
    LocationType,
    MemoryStore,
    MovementType,
    PartitionEngine,
    PolicyChange,
    PolicyLocation,
    Rejection,
    ReservationAction,
    ReservationCommand,
    ReservationDecision,
    ReturnDisposition,
    SafetyStockRule,
    SafetyStockScope,
    StockBucket,
    StockMovement,
)
from app.engine.positions import NO_ORIGIN, EntryOrigin, ledger_position

CHANNELS = frozenset({"ecommerce", "marketplace", "store-pickup", "wholesale"})
_ids = itertools.count(1)


def next_id(prefix: str = "e") -> str:
    return f"{prefix}{next(_ids)}"


def channel(name: str, priority: int = 0, **overrides) -> ChannelRule:
    values = dict(
        channel=name,
        priority=priority,
        granularity=ChannelGranularity.NETWORK,
        share_bp=10_000,
        protected_quantity=0,
        buffer=0,
        location_types=(LocationType.STORE, LocationType.DISTRIBUTION_CENTRE),
        locations=(),
        max_advertised=None,
        include_in_transit=False,
        low_stock_threshold=0,
    )
    values.update(overrides)
    return ChannelRule(**values)


def policy(
    version: int = 1,
    stores: tuple[str, ...] = ("S1", "S2"),
    dcs: tuple[str, ...] = ("DC1",),
    channels: tuple[ChannelRule, ...] | None = None,
    safety: tuple[SafetyStockRule, ...] = (),
    event_time: int = 0,
) -> PolicyChange:
    locations = tuple(PolicyLocation(s, LocationType.STORE) for s in stores) + tuple(
        PolicyLocation(d, LocationType.DISTRIBUTION_CENTRE) for d in dcs
    )
    return PolicyChange(
        event_id=f"policy-{version}",
        version=version,
        event_time=event_time,
        source="test",
        locations=locations,
        safety_stock=safety,
        channels=(channel("ecommerce"),) if channels is None else channels,
    )


def safety(scope: SafetyStockScope, quantity: int, sku=None, location=None, location_type=None) -> SafetyStockRule:
    return SafetyStockRule(scope=scope, quantity=quantity, sku=sku, location=location, location_type=location_type)


def movement(kind: MovementType, location: str = "S1", sku: str = "SKU1", time: int = 1, **fields) -> StockMovement:
    return StockMovement(
        event_id=fields.pop("event_id", None) or next_id(),
        sku=sku,
        location=location,
        event_time=time,
        source="test",
        type=kind,
        **fields,
    )


def receipt(quantity: int, location: str = "S1", **kw) -> StockMovement:
    return movement(MovementType.RECEIPT, location, quantity=quantity, **kw)


def sale(quantity: int, location: str = "S1", **kw) -> StockMovement:
    return movement(MovementType.SALE, location, quantity=quantity, **kw)


def count(quantity: int, location: str = "S1", **kw) -> StockMovement:
    return movement(MovementType.CYCLE_COUNT, location, quantity=quantity, **kw)


def adjustment(delta: int, location: str = "S1", **kw) -> StockMovement:
    return movement(MovementType.ADJUSTMENT, location, delta=delta, reason="test", **kw)


def returned(quantity: int, disposition: ReturnDisposition, location: str = "S1", **kw) -> StockMovement:
    return movement(MovementType.RETURN, location, quantity=quantity, disposition=disposition, **kw)


def shipped(quantity: int, origin: str, destination: str, **kw) -> StockMovement:
    return movement(MovementType.TRANSFER_SHIPPED, origin, quantity=quantity, counterparty_location=destination, **kw)


def received(quantity: int, destination: str, origin: str, **kw) -> StockMovement:
    return movement(MovementType.TRANSFER_RECEIVED, destination, quantity=quantity, counterparty_location=origin, **kw)


def bucket_move(quantity: int, from_bucket: StockBucket, to_bucket: StockBucket, location: str = "S1", **kw):
    return movement(MovementType.BUCKET_MOVE, location, quantity=quantity, from_bucket=from_bucket, to_bucket=to_bucket, **kw)


def command(
    action: ReservationAction,
    reservation_id: str,
    quantity: int = 1,
    channel_name: str = "ecommerce",
    sku: str = "SKU1",
    location: str | None = None,
    allow_partial: bool = False,
    expires_at: int | None = None,
    time: int = 1,
    event_id: str | None = None,
) -> ReservationCommand:
    return ReservationCommand(
        event_id=event_id or next_id("c"),
        command=action,
        reservation_id=reservation_id,
        sku=sku,
        channel=channel_name,
        quantity=quantity,
        location=location,
        allow_partial=allow_partial,
        expires_at=expires_at,
        event_time=time,
        source="test",
    )


def reserve(reservation_id: str, quantity: int, **kw) -> ReservationCommand:
    return command(ReservationAction.RESERVE, reservation_id, quantity, **kw)


def release(reservation_id: str, **kw) -> ReservationCommand:
    return command(ReservationAction.RELEASE, reservation_id, 0, **kw)


def fulfil(reservation_id: str, **kw) -> ReservationCommand:
    return command(ReservationAction.FULFIL, reservation_id, 0, **kw)


def tick(time: int) -> ClockTick:
    return ClockTick(event_time=time)


def origin(source_offset: int, index: int = 0, topic: str = "source.test", partition: int = 0,
           ingest_time: int | None = None) -> EntryOrigin:
    """Where an entry came from: entry `index` of source record `topic`[`partition`]@`source_offset`."""
    return EntryOrigin(f"{topic}/{partition}", ledger_position(source_offset, index), ingest_time)


class Ledger:
    """Feeds one PartitionEngine with consecutive offsets (one entry per ledger record) and keeps every output."""

    def __init__(self, partition: int = 0, store=None, channels: frozenset[str] = CHANNELS, limits=None) -> None:
        self.store = store if store is not None else MemoryStore()
        self.engine = PartitionEngine(partition, self.store, channels, **({} if limits is None else {"limits": limits}))
        self.offset = -1
        self.outputs: list = []

    @property
    def position(self) -> int:
        """The engine position of the last entry (entries are records of their own: index 0)."""
        return ledger_position(self.offset)

    def apply(self, event, offset: int | None = None, origin: EntryOrigin = NO_ORIGIN) -> list:
        if offset is None:
            self.offset += 1
            offset = self.offset
        out = self.engine.apply(event, ledger_position(offset), origin)
        self.outputs.extend(out)
        return out

    def feed(self, *events) -> list:
        out = []
        for event in events:
            out.extend(self.apply(event))
        return out

    def sku(self, sku: str = "SKU1"):
        return self.store.get_sku_state(sku)

    def shown(self, channel_name: str, sku: str = "SKU1", location: str | None = None) -> int:
        """The last published quantity of a key (0 if never published)."""
        for output in reversed(self.outputs):
            if isinstance(output, ChannelAvailability) and (output.channel, output.sku, output.location) == (
                channel_name,
                sku,
                location,
            ):
                return output.quantity
        return 0


def availability(outputs) -> list[ChannelAvailability]:
    return [o for o in outputs if isinstance(o, ChannelAvailability)]


def decisions(outputs) -> list[ReservationDecision]:
    return [o for o in outputs if isinstance(o, ReservationDecision)]


def rejections(outputs) -> list[Rejection]:
    return [o for o in outputs if isinstance(o, Rejection)]


def exceptions(outputs) -> list[InventoryException]:
    return [o for o in outputs if isinstance(o, InventoryException)]
