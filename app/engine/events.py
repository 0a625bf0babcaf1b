"""Canonical events of the ledger, as frozen dataclasses, with their Avro-dict conversions and stateless validation.

Field names are those of the Avro records in avro/*.avsc. Enums arrive from Avro as their symbol strings; nullable
fields as None; arrays as lists (they become tuples here so events stay hashable and immutable).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Union

from app.engine import reasons
from app.engine.constructors import trusted_constructor

IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""SKU, location, channel, reservation and event ids (use fullmatch: `$` would accept a trailing newline)."""

AVRO_NAMESPACE_PREFIX = "inventory.availability."


class MovementType(str, Enum):
    RECEIPT = "RECEIPT"
    SALE = "SALE"
    RETURN = "RETURN"
    ADJUSTMENT = "ADJUSTMENT"
    CYCLE_COUNT = "CYCLE_COUNT"
    TRANSFER_SHIPPED = "TRANSFER_SHIPPED"
    TRANSFER_RECEIVED = "TRANSFER_RECEIVED"
    BUCKET_MOVE = "BUCKET_MOVE"


class ReturnDisposition(str, Enum):
    RESTOCK = "RESTOCK"
    QUARANTINE = "QUARANTINE"


class StockBucket(str, Enum):
    SELLABLE = "SELLABLE"
    DAMAGED = "DAMAGED"
    QUARANTINE = "QUARANTINE"


class ReservationAction(str, Enum):
    RESERVE = "RESERVE"
    RELEASE = "RELEASE"
    FULFIL = "FULFIL"


class LocationType(str, Enum):
    STORE = "STORE"
    DISTRIBUTION_CENTRE = "DISTRIBUTION_CENTRE"
    DARK_STORE = "DARK_STORE"


class SafetyStockScope(str, Enum):
    SKU_LOCATION = "SKU_LOCATION"
    SKU = "SKU"
    LOCATION_TYPE = "LOCATION_TYPE"


class ChannelGranularity(str, Enum):
    NETWORK = "NETWORK"
    LOCATION = "LOCATION"


class FeedType(str, Enum):
    """A kind of source feed whose silence the service watches: POS (store transactions) and WMS (warehouse and ERP
    stock movements). Which source topic is which feed is the topic registry's business (app/wire/topics.py)."""

    POS = "POS"
    WMS = "WMS"


class FallbackKind(str, Enum):
    BUFFER_UNITS = "BUFFER_UNITS"  # hold back `amount` more units at the location
    BUFFER_PERCENT = "BUFFER_PERCENT"  # hold back `amount` percent of the location's sellable units, rounded up
    EXCLUDE_FROM_NETWORK = "EXCLUDE_FROM_NETWORK"  # NETWORK channels neither count nor source from the location


@dataclass(frozen=True, slots=True)
class StockMovement:
    event_id: str
    sku: str
    location: str
    event_time: int
    source: str
    type: MovementType
    quantity: int | None = None
    delta: int | None = None
    reason: str | None = None
    disposition: ReturnDisposition | None = None
    counterparty_location: str | None = None
    from_bucket: StockBucket | None = None
    to_bucket: StockBucket | None = None


@dataclass(frozen=True, slots=True)
class ReservationCommand:
    event_id: str
    command: ReservationAction
    reservation_id: str
    sku: str
    channel: str
    quantity: int
    location: str | None = None
    allow_partial: bool = False
    expires_at: int | None = None
    event_time: int = 0
    source: str = ""


@dataclass(frozen=True, slots=True)
class PolicyLocation:
    location: str
    location_type: LocationType


@dataclass(frozen=True, slots=True)
class SafetyStockRule:
    scope: SafetyStockScope
    quantity: int
    sku: str | None = None
    location: str | None = None
    location_type: LocationType | None = None


@dataclass(frozen=True, slots=True)
class ChannelRule:
    channel: str
    priority: int
    granularity: ChannelGranularity
    share_bp: int
    protected_quantity: int = 0
    buffer: int = 0
    location_types: tuple[LocationType, ...] = ()
    locations: tuple[str, ...] = ()
    max_advertised: int | None = None
    include_in_transit: bool = False
    low_stock_threshold: int = 0


@dataclass(frozen=True, slots=True)
class FeedRule:
    """When a feed of a location has been silent longer than `max_silence_seconds` of event time (as a clock tick
    finds it), its `fallback` applies to that location until the feed speaks again (docs/RULES.md, section 12)."""

    feed: FeedType
    max_silence_seconds: int
    fallback: FallbackKind
    amount: int = 0
    location_types: tuple[LocationType, ...] = ()  # empty: every location


@dataclass(frozen=True, slots=True)
class PolicyChange:
    event_id: str
    version: int
    event_time: int
    source: str
    locations: tuple[PolicyLocation, ...]
    safety_stock: tuple[SafetyStockRule, ...]
    channels: tuple[ChannelRule, ...]
    feeds: tuple[FeedRule, ...] = ()


@dataclass(frozen=True, slots=True)
class ClockTick:
    event_time: int


@dataclass(frozen=True, slots=True)
class FeedSeen:
    location: str
    last_event_time: int


@dataclass(frozen=True, slots=True)
class FeedActivity:
    """What the ingest stage saw of a feed: per location, the latest event time of its movements. Written to every
    ledger partition, so each partition knows which feeds are alive (a location's events spread over partitions).
    `event_time` is the latest of them; an activity moves no clock."""

    feed: FeedType
    event_time: int
    seen: tuple[FeedSeen, ...]


Event = Union[StockMovement, ReservationCommand, PolicyChange, ClockTick, FeedActivity]


class EventDecodeError(ValueError):
    """An Avro-decoded dict does not describe a canonical event (missing field, unknown enum symbol, wrong record
    name). The ingest stage dead-letters the source record with `reason` (UNDECODABLE_RECORD or UNSUPPORTED_EVENT)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# ------------------------------------------------------------------------------------------------ Avro conversions


def _enum(kind: type[Enum], value: Any) -> Any:
    return None if value is None else kind(value)


def _member_of(kind: type[Enum]):
    """kind(value) as a dict lookup (an Enum call costs about a microsecond, once per ledger entry); anything not a value
    goes through kind(value), which raises its own ValueError."""
    members = {member.value: member for member in kind}

    def member(value: Any) -> Any:
        try:
            return members[value]
        except (KeyError, TypeError):
            return kind(value)

    return member


def _feed_rule_from_record(item: dict) -> FeedRule:
    return FeedRule(
        feed=FeedType(item["feed"]),
        max_silence_seconds=item["max_silence_seconds"],
        fallback=FallbackKind(item["fallback"]),
        amount=item.get("amount", 0),
        location_types=tuple(LocationType(t) for t in item.get("location_types") or ()),
    )


def _feed_activity_from_record(record: dict) -> FeedActivity:
    return FeedActivity(
        feed=FeedType(record["feed"]),
        event_time=record["event_time"],
        seen=tuple(FeedSeen(item["location"], item["last_event_time"]) for item in record["seen"]),
    )


def _policy_from_record(record: dict) -> PolicyChange:
    return PolicyChange(
        event_id=record["event_id"],
        version=record["version"],
        event_time=record["event_time"],
        source=record["source"],
        locations=tuple(
            PolicyLocation(item["location"], LocationType(item["location_type"])) for item in record["locations"]
        ),
        safety_stock=tuple(
            SafetyStockRule(
                scope=SafetyStockScope(item["scope"]),
                quantity=item["quantity"],
                sku=item.get("sku"),
                location=item.get("location"),
                location_type=_enum(LocationType, item.get("location_type")),
            )
            for item in record["safety_stock"]
        ),
        channels=tuple(
            ChannelRule(
                channel=item["channel"],
                priority=item["priority"],
                granularity=ChannelGranularity(item["granularity"]),
                share_bp=item["share_bp"],
                protected_quantity=item["protected_quantity"],
                buffer=item["buffer"],
                location_types=tuple(LocationType(t) for t in item.get("location_types") or ()),
                locations=tuple(item.get("locations") or ()),
                max_advertised=item.get("max_advertised"),
                include_in_transit=bool(item.get("include_in_transit", False)),
                low_stock_threshold=item["low_stock_threshold"],
            )
            for item in record["channels"]
        ),
        feeds=tuple(_feed_rule_from_record(item) for item in record.get("feeds") or ()),
    )


_new_movement = trusted_constructor(StockMovement)
_new_command = trusted_constructor(ReservationCommand)
_movement_type = _member_of(MovementType)
_reservation_action = _member_of(ReservationAction)


def _movement_from_record(record: dict) -> StockMovement:
    get = record.get
    return _new_movement(
        record["event_id"],
        record["sku"],
        record["location"],
        record["event_time"],
        record["source"],
        _movement_type(record["type"]),
        get("quantity"),
        get("delta"),
        get("reason"),
        _enum(ReturnDisposition, get("disposition")),
        get("counterparty_location"),
        _enum(StockBucket, get("from_bucket")),
        _enum(StockBucket, get("to_bucket")),
    )


def _command_from_record(record: dict) -> ReservationCommand:
    get = record.get
    return _new_command(
        record["event_id"],
        _reservation_action(record["command"]),
        record["reservation_id"],
        record["sku"],
        record["channel"],
        record["quantity"],
        get("location"),
        bool(get("allow_partial", False)),
        get("expires_at"),
        record["event_time"],
        record["source"],
    )


_FROM_RECORD: dict[str, Callable[[dict], Event]] = {
    "StockMovement": _movement_from_record,
    "ReservationCommand": _command_from_record,
    "PolicyChange": _policy_from_record,
    "ClockTick": lambda record: ClockTick(event_time=record["event_time"]),
    "FeedActivity": _feed_activity_from_record,
}


def event_from_record(record_name: str, record: dict) -> Event:
    """The canonical event for an Avro-decoded record (`StockMovement` or its full name
    `inventory.availability.StockMovement`, ...). Raises EventDecodeError; it does not validate (see validate())."""
    short_name = record_name.removeprefix(AVRO_NAMESPACE_PREFIX)
    convert = _FROM_RECORD.get(short_name)
    if convert is None:
        raise EventDecodeError(reasons.UNSUPPORTED_EVENT, f"not a canonical event record: {record_name!r}")
    try:
        return convert(record)
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise EventDecodeError(reasons.UNDECODABLE_RECORD, f"{short_name}: {error!r}") from error


def _value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def event_to_record(event: Event) -> tuple[str, dict]:
    """(record name, Avro dict) of an event: the inverse of event_from_record."""
    if isinstance(event, PolicyChange):
        return "PolicyChange", {
            "event_id": event.event_id,
            "version": event.version,
            "event_time": event.event_time,
            "source": event.source,
            "locations": [{"location": item.location, "location_type": item.location_type.value} for item in event.locations],
            "safety_stock": [
                {
                    "scope": rule.scope.value,
                    "sku": rule.sku,
                    "location": rule.location,
                    "location_type": _value(rule.location_type),
                    "quantity": rule.quantity,
                }
                for rule in event.safety_stock
            ],
            "channels": [
                {
                    "channel": rule.channel,
                    "priority": rule.priority,
                    "granularity": rule.granularity.value,
                    "location_types": [t.value for t in rule.location_types],
                    "locations": list(rule.locations),
                    "share_bp": rule.share_bp,
                    "protected_quantity": rule.protected_quantity,
                    "buffer": rule.buffer,
                    "max_advertised": rule.max_advertised,
                    "include_in_transit": rule.include_in_transit,
                    "low_stock_threshold": rule.low_stock_threshold,
                }
                for rule in event.channels
            ],
            "feeds": [
                {
                    "feed": rule.feed.value,
                    "max_silence_seconds": rule.max_silence_seconds,
                    "fallback": rule.fallback.value,
                    "amount": rule.amount,
                    "location_types": [t.value for t in rule.location_types],
                }
                for rule in event.feeds
            ],
        }
    if isinstance(event, FeedActivity):
        return "FeedActivity", {
            "feed": event.feed.value,
            "event_time": event.event_time,
            "seen": [{"location": item.location, "last_event_time": item.last_event_time} for item in event.seen],
        }
    if isinstance(event, (StockMovement, ReservationCommand, ClockTick)):
        record = {name: _value(getattr(event, name)) for name in event.__slots__}
        return type(event).__name__, record
    raise TypeError(f"not a canonical event: {type(event).__name__}")


# ------------------------------------------------------------------------------------------------------ validation


def _bad_id(value: Any) -> bool:
    # Fast path, equivalent to the pattern: 1 to 64 ASCII letters and digits always match it. Anything else
    # (punctuation, non-ASCII, empty, too long, not a str) is decided by the pattern itself.
    if type(value) is str and value.isalnum() and value.isascii() and len(value) <= 64:
        return False
    return not isinstance(value, str) or IDENTIFIER.fullmatch(value) is None


MAX_LONG = 2**63 - 1
"""The largest time or position an event may carry: what Avro's long holds, so every event on the ledger fits, and
the engine keeps times as 64-bit integers (app.engine.state.Position.journal)."""


def _bad_int(value: Any, minimum: int) -> bool:
    return type(value) is not int or value < minimum or value > MAX_LONG


MAX_QUANTITY = 1_000_000_000
"""The largest quantity (or |delta|) one movement or reservation may carry. Real events are far smaller; without a
bound, two receipts of 2**62 units made an availability above Avro's 64-bit long, whose encoding failed on every
retry of the batch and stopped the stage (a poison pill). With it, overflowing needs billions of events at one SKU."""


def _bad_quantity(value: Any, minimum: int) -> bool:
    return type(value) is not int or value < minimum or value > MAX_QUANTITY


_POSITIVE_QUANTITY_TYPES = frozenset(
    {
        MovementType.RECEIPT,
        MovementType.SALE,
        MovementType.RETURN,
        MovementType.TRANSFER_SHIPPED,
        MovementType.TRANSFER_RECEIVED,
        MovementType.BUCKET_MOVE,
    }
)


def _validate_movement(event: StockMovement) -> str | None:
    if _bad_id(event.event_id) or _bad_id(event.sku) or _bad_id(event.location):
        return reasons.INVALID_ID
    if _bad_int(event.event_time, 0):
        return reasons.INVALID_EVENT_TIME
    kind = event.type
    if kind is MovementType.SALE or kind is MovementType.RECEIPT or kind in _POSITIVE_QUANTITY_TYPES:
        if _bad_quantity(event.quantity, 1):
            return reasons.INVALID_QUANTITY
    elif kind is MovementType.CYCLE_COUNT:
        if _bad_quantity(event.quantity, 0):
            return reasons.INVALID_QUANTITY
    elif kind is MovementType.ADJUSTMENT:
        if type(event.delta) is not int or event.delta == 0 or abs(event.delta) > MAX_QUANTITY:
            return reasons.INVALID_DELTA
    else:
        return reasons.UNSUPPORTED_EVENT
    if kind is MovementType.RETURN and not isinstance(event.disposition, ReturnDisposition):
        return reasons.MISSING_DISPOSITION
    if kind is MovementType.TRANSFER_SHIPPED or kind is MovementType.TRANSFER_RECEIVED:
        if _bad_id(event.counterparty_location) or event.counterparty_location == event.location:
            return reasons.INVALID_COUNTERPARTY
    if kind is MovementType.BUCKET_MOVE:
        if (
            not isinstance(event.from_bucket, StockBucket)
            or not isinstance(event.to_bucket, StockBucket)
            or event.from_bucket is event.to_bucket
        ):
            return reasons.INVALID_BUCKETS
    return None


def _validate_command(event: ReservationCommand) -> str | None:
    if (
        _bad_id(event.event_id)
        or _bad_id(event.reservation_id)
        or _bad_id(event.sku)
        or _bad_id(event.channel)
        or (event.location is not None and _bad_id(event.location))
    ):
        return reasons.INVALID_ID
    if not isinstance(event.command, ReservationAction):
        return reasons.UNSUPPORTED_EVENT
    if _bad_int(event.event_time, 0):
        return reasons.INVALID_EVENT_TIME
    # RELEASE and FULFIL act on the whole reservation; their quantity is informational but may not be negative.
    if _bad_quantity(event.quantity, 1 if event.command is ReservationAction.RESERVE else 0):
        return reasons.INVALID_QUANTITY
    if event.expires_at is not None and _bad_int(event.expires_at, 0):
        return reasons.INVALID_EXPIRY
    return None


def _validate_policy(event: PolicyChange) -> str | None:
    if _bad_id(event.event_id):
        return reasons.INVALID_ID
    if _bad_int(event.event_time, 0):
        return reasons.INVALID_EVENT_TIME
    if _bad_int(event.version, 1):
        return reasons.INVALID_POLICY
    known: set[str] = set()
    for item in event.locations:
        if _bad_id(item.location) or item.location in known or not isinstance(item.location_type, LocationType):
            return reasons.INVALID_POLICY
        known.add(item.location)
    for safety_rule in event.safety_stock:
        if _bad_int(safety_rule.quantity, 0):
            return reasons.INVALID_POLICY
        scope = safety_rule.scope
        if scope is SafetyStockScope.SKU_LOCATION:
            if _bad_id(safety_rule.sku) or safety_rule.location not in known:
                return reasons.INVALID_POLICY
        elif scope is SafetyStockScope.SKU:
            if _bad_id(safety_rule.sku):
                return reasons.INVALID_POLICY
        elif scope is SafetyStockScope.LOCATION_TYPE:
            if not isinstance(safety_rule.location_type, LocationType):
                return reasons.INVALID_POLICY
        else:
            return reasons.INVALID_POLICY
    names: set[str] = set()
    for channel_rule in event.channels:
        if _bad_id(channel_rule.channel) or channel_rule.channel in names:
            return reasons.INVALID_POLICY
        names.add(channel_rule.channel)
        if (
            not isinstance(channel_rule.granularity, ChannelGranularity)
            or _bad_int(channel_rule.priority, 0)
            or _bad_int(channel_rule.share_bp, 0)
            or channel_rule.share_bp > 10_000
            or _bad_int(channel_rule.protected_quantity, 0)
            or _bad_int(channel_rule.buffer, 0)
            or _bad_int(channel_rule.low_stock_threshold, 0)
            or (channel_rule.max_advertised is not None and _bad_int(channel_rule.max_advertised, 0))
            or any(not isinstance(t, LocationType) for t in channel_rule.location_types)
        ):
            return reasons.INVALID_POLICY
        if any(location not in known for location in channel_rule.locations):
            return reasons.UNKNOWN_LOCATION
    feeds: set[FeedType] = set()
    for feed_rule in event.feeds:
        if (
            not isinstance(feed_rule.feed, FeedType)
            or feed_rule.feed in feeds
            or not isinstance(feed_rule.fallback, FallbackKind)
            or _bad_int(feed_rule.max_silence_seconds, MIN_FEED_SILENCE_SECONDS)
            or _bad_int(feed_rule.amount, 0)
            or (feed_rule.fallback is FallbackKind.BUFFER_PERCENT and feed_rule.amount > 100)
            or any(not isinstance(t, LocationType) for t in feed_rule.location_types)
        ):
            return reasons.INVALID_POLICY
        feeds.add(feed_rule.feed)
    return None


MIN_FEED_SILENCE_SECONDS = 30
"""The shortest silence a feed rule may allow: the ingest stage reports a feed's activity for a location again once
its event time has moved 10 s (app.service.ingest, FeedActivityReporter), so a much shorter threshold would find live
feeds silent between two reports."""


def _validate_feed_activity(event: FeedActivity) -> str | None:
    if not isinstance(event.feed, FeedType):
        return reasons.UNSUPPORTED_EVENT
    if _bad_int(event.event_time, 0):
        return reasons.INVALID_EVENT_TIME
    for item in event.seen:
        if _bad_id(item.location):
            return reasons.INVALID_ID
        if _bad_int(item.last_event_time, 0) or item.last_event_time > event.event_time:
            return reasons.INVALID_EVENT_TIME
    return None


def validate(event: Any) -> str | None:
    """The reason code why `event` can never be applied, whatever the state; None when it is well formed.

    Stateless, so the ingest stage runs it before writing to the ledger; the engine runs it again (it never trusts
    its input). Never raises."""
    try:
        kind = type(event)  # exact-type dispatch first: the common case, cheaper than isinstance
        if kind is StockMovement:
            return _validate_movement(event)
        if kind is ReservationCommand:
            return _validate_command(event)
        if kind is ClockTick:
            return reasons.INVALID_EVENT_TIME if _bad_int(event.event_time, 0) else None
        if kind is FeedActivity:
            return _validate_feed_activity(event)
        if isinstance(event, StockMovement):
            return _validate_movement(event)
        if isinstance(event, ReservationCommand):
            return _validate_command(event)
        if isinstance(event, PolicyChange):
            return _validate_policy(event)
        if isinstance(event, ClockTick):
            return reasons.INVALID_EVENT_TIME if _bad_int(event.event_time, 0) else None
    except (TypeError, AttributeError):
        return reasons.UNSUPPORTED_EVENT
    return reasons.UNSUPPORTED_EVENT
