"""What the engine returns: channel availability changes, reservation decisions and rejections.

`to_record()` gives the Avro dict (field names of avro/ChannelAvailability.avsc and avro/ReservationDecision.avsc);
`key` gives the record key. Outputs carry the engine's ledger position; their records carry it as the pair
(`ledger_offset`, `ledger_index`) (app.engine.positions). The engine does not know topic names: the service routes
ChannelAvailability to `availability.<channel>`, ReservationDecision to `reservation-decisions` and Rejection to
`dead-letters`/metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Union

from app.engine.constructors import trusted_constructor
from app.engine.positions import POSITION_STRIDE

POSITION_SHIFT = POSITION_STRIDE.bit_length() - 1  # split_position() as shifts: two per published record
INDEX_MASK = POSITION_STRIDE - 1


class AvailabilityStatus(str, Enum):
    IN_STOCK = "IN_STOCK"
    LOW_STOCK = "LOW_STOCK"
    OUT_OF_STOCK = "OUT_OF_STOCK"


class ReservationOutcome(str, Enum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    RELEASED = "RELEASED"
    FULFILLED = "FULFILLED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True, slots=True)
class ChannelAvailability:
    channel: str
    sku: str
    location: str | None
    quantity: int
    status: AvailabilityStatus
    version: int
    event_id: str
    ledger_partition: int
    ledger_position: int  # app.engine.positions: (ledger_offset, ledger_index) in the record
    policy_version: int
    event_time: int
    snapshot: bool = False
    fallbacks: tuple[str, ...] = ()  # `<location>:<feed>` of the silent feeds whose fallbacks shaped the value

    @property
    def key(self) -> str:
        """`sku` for a NETWORK channel, `sku/location` for a LOCATION channel."""
        return self.sku if self.location is None else f"{self.sku}/{self.location}"

    def to_record(self) -> dict:
        return {
            "channel": self.channel,
            "sku": self.sku,
            "location": self.location,
            "quantity": self.quantity,
            "status": self.status.value,
            "version": self.version,
            "event_id": self.event_id,
            "ledger_partition": self.ledger_partition,
            "ledger_offset": self.ledger_position >> POSITION_SHIFT,
            "ledger_index": self.ledger_position & INDEX_MASK,
            "policy_version": self.policy_version,
            "event_time": self.event_time,
            "snapshot": self.snapshot,
            "fallbacks": list(self.fallbacks),
        }


@dataclass(frozen=True, slots=True)
class ReservationLine:
    location: str
    quantity: int


@dataclass(frozen=True, slots=True)
class ReservationDecision:
    reservation_id: str
    channel: str
    sku: str
    outcome: ReservationOutcome
    reason: str | None
    requested_quantity: int
    reserved_quantity: int
    lines: tuple[ReservationLine, ...]
    event_id: str
    ledger_partition: int
    ledger_position: int  # app.engine.positions: (ledger_offset, ledger_index) in the record
    event_time: int

    @property
    def key(self) -> str:
        return self.reservation_id

    def to_record(self) -> dict:
        return {
            "reservation_id": self.reservation_id,
            "channel": self.channel,
            "sku": self.sku,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "requested_quantity": self.requested_quantity,
            "reserved_quantity": self.reserved_quantity,
            "lines": [{"location": line.location, "quantity": line.quantity} for line in self.lines],
            "event_id": self.event_id,
            "ledger_partition": self.ledger_partition,
            "ledger_offset": self.ledger_position >> POSITION_SHIFT,
            "ledger_index": self.ledger_position & INDEX_MASK,
            "event_time": self.event_time,
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    """An entry that changed nothing because it is malformed or does not fit the state (or, for
    COVERED_BY_CYCLE_COUNT, an acknowledgement that a late delta is already inside a count). `event_id` is None
    only for a malformed entry without a usable id, or a clock tick."""

    reason: str
    detail: str
    event_id: str | None
    sku: str | None
    ledger_partition: int
    ledger_position: int  # app.engine.positions: (ledger_offset, ledger_index) in the record

    @property
    def key(self) -> str:
        """Key for the dead-letter record: the ledger key (sku; empty for partition-wide entries)."""
        return self.sku or ""

    def to_record(self) -> dict:
        """Header values for the dead-letter record (the service adds the original bytes and source position)."""
        return {
            "reason": self.reason,
            "error": self.detail,
            "event_id": self.event_id,
            "sku": self.sku,
            "ledger_partition": self.ledger_partition,
            "ledger_offset": self.ledger_position >> POSITION_SHIFT,
            "ledger_index": self.ledger_position & INDEX_MASK,
        }


class ExceptionKind(str, Enum):
    NEGATIVE_STOCK = "NEGATIVE_STOCK"  # a fact drove a bucket (sellable, damaged, quarantine) below zero
    NEGATIVE_IN_TRANSIT = "NEGATIVE_IN_TRANSIT"  # units received before their shipment was on the ledger
    UNKNOWN_LOCATION = "UNKNOWN_LOCATION"  # a fact at a location the policy in force does not list
    INEXACT_COUNT = "INEXACT_COUNT"  # a count older than its location's journal: applied, later deltas may be missing
    STALE_FEED = "STALE_FEED"  # a location's feed went quiet past its freshness threshold: fallback applied
    FEED_RECOVERED = "FEED_RECOVERED"  # the feed spoke again: fallback lifted
    RECONCILIATION_DRIFT = "RECONCILIATION_DRIFT"  # the system of record's on-hand differs from the service's


class PositionBucket(str, Enum):
    SELLABLE = "SELLABLE"
    DAMAGED = "DAMAGED"
    QUARANTINE = "QUARANTINE"
    IN_TRANSIT = "IN_TRANSIT"


@dataclass(frozen=True, slots=True)
class InventoryException:
    """Something an operator should look at, found while applying a fact that the service applied all the same
    (facts are never refused: docs/RULES.md, section 2). `position` is the location's buckets after the entry:
    (sellable, damaged, quarantine, in_transit, reserved); lineage fields are None for exceptions no ledger entry
    caused (reconciliation)."""

    kind: ExceptionKind
    sku: str | None
    location: str | None
    bucket: PositionBucket | None
    quantity: int
    position: tuple[int, int, int, int, int] | None
    event_id: str | None
    ledger_partition: int | None
    ledger_position: int | None
    event_time: int
    detail: str

    @property
    def key(self) -> str:
        """`sku/location`, `sku` or `location`: the record key on `inventory-exceptions`."""
        if self.sku is None:
            return self.location or ""
        return self.sku if self.location is None else f"{self.sku}/{self.location}"

    def to_record(self) -> dict:
        position = self.position
        return {
            "kind": self.kind.value,
            "sku": self.sku,
            "location": self.location,
            "bucket": None if self.bucket is None else self.bucket.value,
            "quantity": self.quantity,
            "position": None if position is None else dict(zip(POSITION_FIELDS, position)),
            "event_id": self.event_id,
            "ledger_partition": self.ledger_partition,
            "ledger_offset": None if self.ledger_position is None else self.ledger_position >> POSITION_SHIFT,
            "ledger_index": None if self.ledger_position is None else self.ledger_position & INDEX_MASK,
            "event_time": self.event_time,
            "detail": self.detail,
        }


POSITION_FIELDS = ("sellable", "damaged", "quarantine", "in_transit", "reserved")

Output = Union[ChannelAvailability, ReservationDecision, Rejection, InventoryException]


new_channel_availability = trusted_constructor(ChannelAvailability)
new_reservation_decision = trusted_constructor(ReservationDecision)
new_reservation_line = trusted_constructor(ReservationLine)
