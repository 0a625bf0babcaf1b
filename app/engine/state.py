"""The engine's state: one SkuState per SKU (all its locations, reservations and published versions) and one
PartitionState per ledger partition (policy history, event-time clock, reservation expiry index).

Persistent fields are what app.engine.codec encodes. Fields marked *derived* are caches computed from the
persistent ones under one policy; they are rebuilt after decoding or when the policy in force changes.
"""

from __future__ import annotations

import heapq
from array import array
from typing import TYPE_CHECKING

from app.engine.events import PolicyChange

if TYPE_CHECKING:
    from app.engine.policy import Policy

JOURNAL_LIMIT = 16
"""Sellable deltas remembered per location for cycle counts (see docs/RULES.md, "Cycle counts")."""

HISTORY_LIMIT = 10
"""Ledger entries remembered per SKU as (event_id, kind, ledger partition, ledger position, result, reservation id), so
an operator can see which entries made its numbers (GET /availability/{sku}/explain). State only: never published."""

POLICY_HISTORY_LIMIT = 16
"""Policy versions kept per partition, so a redelivered entry is evaluated with the policy in force at its position."""

NO_OFFSET = -1


class Position:
    """Stock of one SKU at one location. `journal` holds recent applied sellable deltas as flat
    [event_time, delta, event_time, delta, ...] in arrival order, as 64-bit integers (an array: less than half the
    memory of a list of int objects, and positions are most of a cached state's); `journal_floor` is the latest
    event time among deltas dropped from it (NO_OFFSET when none was dropped)."""

    __slots__ = (
        "sellable",
        "damaged",
        "quarantine",
        "in_transit",
        "reserved",
        "last_count_time",
        "journal_floor",
        "journal",
        # derived
        "safety",
        "atp",
        "atp_with_transit",
    )

    def __init__(
        self,
        sellable: int = 0,
        damaged: int = 0,
        quarantine: int = 0,
        in_transit: int = 0,
        reserved: int = 0,
        last_count_time: int | None = None,
        journal_floor: int = NO_OFFSET,
        journal: list[int] | array | None = None,
    ) -> None:
        self.sellable = sellable
        self.damaged = damaged
        self.quarantine = quarantine
        self.in_transit = in_transit
        self.reserved = reserved
        self.last_count_time = last_count_time
        self.journal_floor = journal_floor
        self.journal = array("q") if journal is None else array("q", journal)
        self.safety = 0
        self.atp = 0
        self.atp_with_transit = 0

    def record_delta(self, event_time: int, delta: int) -> None:
        journal = self.journal
        journal.append(event_time)
        journal.append(delta)
        if len(journal) > 2 * JOURNAL_LIMIT:
            self.record_delta_overflow()

    def record_delta_overflow(self) -> None:
        """Drop the oldest journal entry once it is over its limit; the floor remembers its time."""
        journal = self.journal
        dropped_time = journal[0]
        del journal[:2]
        if dropped_time > self.journal_floor:
            self.journal_floor = dropped_time

    def is_counted(self, event_time: int) -> bool:
        """Whether a sellable delta at `event_time` is already inside the last cycle count of this location."""
        return self.last_count_time is not None and event_time <= self.last_count_time


class Reservation:
    """An active (accepted, not yet released, fulfilled or expired) reservation. `lines` is ((location, units), ...)
    in sourcing order."""

    __slots__ = ("reservation_id", "channel", "requested", "lines", "expires_at")

    def __init__(
        self,
        reservation_id: str,
        channel: str,
        requested: int,
        lines: tuple[tuple[str, int], ...],
        expires_at: int | None,
    ) -> None:
        self.reservation_id = reservation_id
        self.channel = channel
        self.requested = requested
        self.lines = lines
        self.expires_at = expires_at

    @property
    def quantity(self) -> int:
        return sum(units for _, units in self.lines)


class FinishedReservation:
    """What is remembered of a reservation that is no longer active, kept by the store beside (not inside) its SKU's
    state, for EngineLimits.reservation_retention_ms of event time: its reserve decision (`reserve_reason` is None
    when it was accepted) and how it ended (`final_outcome`: RELEASED, FULFILLED, EXPIRED, or None if refused).
    `position` is the ledger position of the entry that finished it and `finished_clock` the partition clock then:
    a record is an answer only for entries after it (app.engine.partition.PartitionEngine.finished)."""

    __slots__ = (
        "reservation_id", "channel", "requested", "lines", "reserve_reason", "final_outcome", "position",
        "finished_clock",
    )

    def __init__(
        self,
        reservation_id: str,
        channel: str,
        requested: int,
        lines: tuple[tuple[str, int], ...],
        reserve_reason: str | None,
        final_outcome: str | None,
        position: int = -1,
        finished_clock: int = 0,
    ) -> None:
        self.reservation_id = reservation_id
        self.channel = channel
        self.requested = requested
        self.lines = lines
        self.reserve_reason = reserve_reason
        self.final_outcome = final_outcome
        self.position = position
        self.finished_clock = finished_clock

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FinishedReservation) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __repr__(self) -> str:
        return f"FinishedReservation({', '.join(f'{name}={getattr(self, name)!r}' for name in self.__slots__)})"


class Published:
    """The last record published for one output key, so only changes are published and versions are gapless."""

    __slots__ = ("version", "quantity", "status")

    def __init__(self, version: int, quantity: int, status) -> None:  # AvailabilityStatus, or its name
        self.version = version
        self.quantity = quantity
        self.status = status


class SkuState:
    __slots__ = (
        "sku",
        "last_position",
        "positions",
        "reservations",
        "sources",
        "published",
        "history",
        "legacy",
        # derived, valid for `policy` only
        "policy",
        "network_pools",
        "network_own_reserved",
        "location_own_reserved",
        "next_expiry",
        "expiry_heap",
        "sourcing_cache",
    )

    def __init__(self, sku: str) -> None:
        self.sku = sku
        self.last_position = NO_OFFSET
        self.positions: dict[str, Position] = {}
        self.reservations: dict[str, Reservation] = {}
        # `topic/partition` of a source -> the highest source position (offset, index) applied from it: every entry
        # at or below it is a repeat (the ingest stage re-sent it). Exact, and as small as the number of sources.
        self.sources: dict[str, int] = {}
        # (channel, location or None) -> last published record of that key
        self.published: dict[tuple[str, str | None], Published] = {}
        # the last HISTORY_LIMIT entries applied to this SKU, oldest first, each
        # (event_id, kind, ledger partition, ledger position, result, reservation id or None).
        # `kind` is the movement type, the command, POLICY or EXPIRY; `result` is APPLIED, the decision outcome, or
        # the refusal's reason.
        self.history: list = []
        # (finished reservations, event ids) of a state decoded from a format that kept them inside it; the engine
        # moves them into the store on first use (PartitionEngine._migrate). Never encoded.
        self.legacy: tuple[list[FinishedReservation], list[str]] | None = None
        self.policy: Policy | None = None
        self.network_pools: dict[str, int] = {}  # NETWORK channel -> sum of its locations' ATP
        self.network_own_reserved: dict[str, int] = {}  # channel -> its reserved units at locations it draws from
        self.location_own_reserved: dict[tuple[str, str], int] = {}  # (channel, location) -> its reserved units
        # the earliest expires_at among active reservations, or lower: the partition's index may have expired that
        # reservation since (the SKU's next entry then pops the heap, which makes it exact again)
        self.next_expiry: int | None = None
        # (expires_at, reservation_id) of the active reservations with an expiry, as a heap; the entry of one that
        # ended another way stays until it reaches the top or the heap is rebuilt. Finding the SKU's overdue
        # reservations then costs what is overdue, not a walk over every active one (a hot SKU holds thousands).
        self.expiry_heap: list[tuple[int, str]] = []
        # channel -> (number of positions, its locations with a position in sourcing order); see reservations.py
        self.sourcing_cache: dict[str, tuple[int, list[str]]] = {}

    def rebuild_expiries(self) -> None:
        """The expiry heap and next_expiry from the active reservations (after decoding, or a policy change)."""
        heap = [(r.expires_at, rid) for rid, r in self.reservations.items() if r.expires_at is not None]
        heapq.heapify(heap)
        self.expiry_heap = heap
        self.next_expiry = heap[0][0] if heap else None

    def add_expiry(self, expires_at: int, reservation_id: str) -> None:
        """A reservation with an expiry became active (it is in `reservations` already)."""
        heap = self.expiry_heap
        if len(heap) > 64 and len(heap) > 2 * len(self.reservations):  # mostly entries of ended reservations
            self.rebuild_expiries()  # this one included
            return
        heapq.heappush(heap, (expires_at, reservation_id))
        if self.next_expiry is None or expires_at < self.next_expiry:
            self.next_expiry = expires_at

    def pop_overdue(self, clock: int) -> list[str]:
        """Ids of the active reservations with expires_at <= clock, earliest first (ties by id), removed from the
        heap; next_expiry then becomes the earliest expiry of those still active after them."""
        heap = self.expiry_heap
        reservations = self.reservations
        overdue: list[str] = []
        while heap and heap[0][0] <= clock:
            expires_at, reservation_id = heapq.heappop(heap)
            reservation = reservations.get(reservation_id)
            if reservation is not None and reservation.expires_at == expires_at and reservation_id not in overdue:
                overdue.append(reservation_id)
        while heap:  # stale entries at the top: their reservations ended another way
            expires_at, reservation_id = heap[0]
            reservation = reservations.get(reservation_id)
            if reservation is not None and reservation.expires_at == expires_at and reservation_id not in overdue:
                break
            heapq.heappop(heap)
        self.next_expiry = heap[0][0] if heap else None
        return overdue

    def remember_entry(
        self, event_id: str, kind: str, partition: int, position: int, result: str, reservation_id: str | None = None
    ) -> None:
        history = self.history
        history.append((event_id, kind, partition, position, result, reservation_id))
        if len(history) > HISTORY_LIMIT:
            del history[0]


def units_reserved_beyond_sellable(state: SkuState) -> int:
    """Units held by reservations beyond the sellable units at their location: the oversell exposure of one SKU.
    Only facts reported after a reservation (a walk-in sale, shrink) can make it non-zero."""
    exposure = 0
    for position in state.positions.values():
        beyond = position.reserved - max(0, position.sellable)
        if beyond > 0:
            exposure += beyond
    return exposure


class PartitionState:
    """State shared by every SKU of one ledger partition.

    `expiries` maps (sku, reservation_id) to expires_at for every active reservation with an expiry; `_heap` orders
    them and may hold stale entries (released early, or re-registered), which are dropped when popped.
    `feeds_seen` maps (feed, location) to the latest event time its FeedActivity entries reported, and `silent` the
    (feed, location) pairs a clock tick found silent past their rule, to the last event time seen then
    (docs/RULES.md, section 12)."""

    __slots__ = ("partition", "last_position", "clock", "policies", "expiries", "_heap", "feeds_seen", "silent")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.last_position = NO_OFFSET
        self.clock = 0
        self.policies: list[tuple[int, PolicyChange]] = []  # (effective ledger position, policy), ascending
        self.expiries: dict[tuple[str, str], int] = {}
        self._heap: list[tuple[int, str, str]] = []
        self.feeds_seen: dict[tuple[str, str], int] = {}
        self.silent: dict[tuple[str, str], int] = {}

    def register_expiry(self, sku: str, reservation_id: str, expires_at: int) -> None:
        key = (sku, reservation_id)
        if self.expiries.get(key) == expires_at:
            return  # idempotent: re-registration after a redelivery
        self.expiries[key] = expires_at
        heapq.heappush(self._heap, (expires_at, sku, reservation_id))

    def forget_expiry(self, sku: str, reservation_id: str) -> None:
        self.expiries.pop((sku, reservation_id), None)
        heap = self._heap
        if len(heap) > 64 and len(heap) > 2 * len(self.expiries):
            self.rebuild_heap()

    def rebuild_heap(self) -> None:
        self._heap = sorted((expires_at, sku, rid) for (sku, rid), expires_at in self.expiries.items())

    def has_due(self, clock: int) -> bool:
        """Whether pop_due(clock) may return something (the heap may hold stale entries): a cheap check per entry."""
        heap = self._heap
        return bool(heap) and heap[0][0] <= clock

    def pop_due(self, clock: int) -> list[tuple[str, str, int]]:
        """(sku, reservation_id, expires_at) of registered expiries with expires_at <= clock, earliest first
        (ties by sku, then reservation id), removed from the index."""
        heap = self._heap
        due = []
        while heap and heap[0][0] <= clock:
            expires_at, sku, reservation_id = heapq.heappop(heap)
            if self.expiries.get((sku, reservation_id)) != expires_at:
                continue  # stale
            del self.expiries[(sku, reservation_id)]
            due.append((sku, reservation_id, expires_at))
        return due

    def policy_change_at(self, position: int) -> tuple[int, PolicyChange] | None:
        """The (effective position, policy) in force for an entry at ledger `position`, or None before any policy."""
        for effective_position, change in reversed(self.policies):
            if effective_position <= position:
                return effective_position, change
        return None

    def add_policy(self, effective_position: int, change: PolicyChange) -> None:
        self.policies.append((effective_position, change))
        if len(self.policies) > POLICY_HISTORY_LIMIT:
            del self.policies[0]
