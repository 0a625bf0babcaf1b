"""A realistic demo feed: a small clothing retailer with two distribution centres, six stores and three channels.

The feed opens with a policy and an opening-stock load, then sends a few events a second: store sales and returns,
e-commerce and marketplace reservations (later fulfilled, released or left to expire), transfers from the DCs to
stores, purchase-order receipts, cycle counts and the odd damaged unit. It keeps a rough copy of on-hand stock so that
events stay plausible, and it lets popular and scarce SKUs run low or out before a purchase order lands, so the view
shows LOW_STOCK and OUT_OF_STOCK moments and their recovery. Two scripted moments show what the service does with
facts that do not fit: a sale whose return's record arrives late (stock below zero for a few seconds: a
NEGATIVE_STOCK exception), and a store whose POS goes quiet for a while (its feed found silent: the policy's fallback
holds a unit back there until it speaks again).

`DemoFeed` only builds records; sending them is `app.tools.feed.SourceProducer`'s job. It is seeded, so a seed gives the
same sequence of decisions (event times and ids still come from the wall clock and the run id).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.tools.feed import SourceRecord, now_ms, stock_movement
from app.wire.topics import POLICY_CHANGES, RESERVATION_COMMANDS, STOCK_MOVEMENTS, STORE_TRANSACTIONS

DISTRIBUTION_CENTRES = ("DC-NORTH", "DC-SOUTH")
STORES = ("STORE-LONDON", "STORE-LEEDS", "STORE-BRISTOL", "STORE-GLASGOW", "STORE-CARDIFF", "STORE-YORK")
QUIET_STORE = "STORE-YORK"
QUIET_FROM_SECONDS, QUIET_FOR_SECONDS = 15.0, 75.0  # its POS says nothing then: past the policy's 30 s of silence
LATE_RETURN_AT_SECONDS = 10.0  # when the sale whose return arrives late is sold
POS_SILENCE_SECONDS = 30


@dataclass(frozen=True)
class Product:
    sku: str
    demand: float  # relative popularity
    opening_dc: tuple[int, int]  # opening stock at DC-NORTH, DC-SOUTH
    opening_store: int  # opening stock at every store
    reorder_point: int  # network on-hand below which a purchase order is raised
    order_quantity: int


CATALOGUE = (
    Product("TSHIRT-BLUE-M", 5.0, (24, 16), 6, 30, 30),
    Product("TSHIRT-BLUE-L", 3.0, (20, 14), 5, 24, 24),
    Product("JEANS-SLIM-32", 2.0, (12, 8), 4, 16, 16),
    Product("HOODIE-GREY-L", 1.5, (8, 4), 3, 10, 12),
    Product("SNEAKER-WHITE-42", 2.5, (5, 0), 2, 4, 8),  # scarce and popular: goes out of stock
    Product("CAP-BLACK", 1.0, (30, 30), 8, 30, 30),
)


def demo_policy(version: int, event_id: str, event_time: int) -> dict[str, Any]:
    """The demo's policy: ecommerce sells from everywhere first (and keeps one unit per pool from the channels below
    it), the marketplace gets half of the DCs' stock behind a buffer of two and a cap of 20, store pickup sells each
    store's own shelf; one unit per store is held back as safety stock."""
    def channel(name: str, priority: int, granularity: str, types: list[str], share_bp: int, protected: int,
                buffer: int, max_advertised: int | None, low: int) -> dict[str, Any]:
        return {
            "channel": name, "priority": priority, "granularity": granularity, "location_types": types,
            "locations": [], "share_bp": share_bp, "protected_quantity": protected, "buffer": buffer,
            "max_advertised": max_advertised, "include_in_transit": False, "low_stock_threshold": low,
        }

    return {
        "event_id": event_id,
        "version": version,
        "event_time": event_time,
        "source": "demo-policy-admin",
        "locations": [{"location": dc, "location_type": "DISTRIBUTION_CENTRE"} for dc in DISTRIBUTION_CENTRES]
        + [{"location": store, "location_type": "STORE"} for store in STORES],
        "safety_stock": [
            {"scope": "LOCATION_TYPE", "sku": None, "location": None, "location_type": "STORE", "quantity": 1},
        ],
        "channels": [
            channel("ecommerce", 0, "NETWORK", ["DISTRIBUTION_CENTRE", "STORE"], 10000, 1, 0, None, 8),
            channel("marketplace", 1, "NETWORK", ["DISTRIBUTION_CENTRE"], 5000, 0, 2, 20, 4),
            channel("store-pickup", 2, "LOCATION", ["STORE"], 10000, 0, 0, None, 2),
        ],
        # a store whose till has been silent 30 s is not trusted with its last unit (docs/RULES.md, section 12)
        "feeds": [{"feed": "POS", "max_silence_seconds": POS_SILENCE_SECONDS, "fallback": "BUFFER_UNITS",
                   "amount": 1, "location_types": ["STORE"]}],
    }


@dataclass
class _Reservation:
    reservation_id: str
    channel: str
    sku: str
    quantity: int
    requested_at: float
    accepted: bool | None = None  # None until a decision is seen (or assumed, without feedback)
    lines: list[tuple[str, int]] = field(default_factory=list)


class DemoFeed:
    """Builds the demo's records. `opening()` first, then `next_event()` for each further event.

    `note_decision` lets the caller feed reservation decisions back, so only accepted reservations are fulfilled or
    released; without feedback a reservation is assumed accepted after a few seconds."""

    def __init__(self, seed: int | None = None, clock: Callable[[], float] = time.monotonic,
                 event_time: Callable[[], int] = now_ms) -> None:
        """`clock` paces the script (seconds); `event_time` stamps the events (ms since the epoch)."""
        self._rng = random.Random(seed)
        self._clock = clock
        self._now_ms = event_time
        self._started = clock()
        self._late_return_sold = False
        self.run_id = uuid.uuid4().hex[:6]
        self._sequence = 0
        self._order_number = 1000
        self.on_hand: dict[tuple[str, str], int] = {}
        self._reservations: dict[str, _Reservation] = {}
        self._arrivals: list[tuple[float, SourceRecord, str]] = []  # (due, record, description): transfers, POs
        self._on_order: set[str] = set()
        self.decisions_seen = False

    # -- public --------------------------------------------------------------------------------------------------

    def opening(self) -> list[tuple[SourceRecord, str]]:
        """The policy, then the ERP's opening-stock load (one StockMovementBatch)."""
        policy = demo_policy(version=int(time.time()), event_id=self._event_id("policy"), event_time=self._now_ms())
        movements = []
        for product in CATALOGUE:
            for dc, quantity in zip(DISTRIBUTION_CENTRES, product.opening_dc):
                if quantity > 0:  # a receipt of nothing is invalid (and would fail the whole batch)
                    movements.append(self._movement("RECEIPT", product.sku, dc, quantity, source="erp"))
            for store in STORES:
                movements.append(self._movement("RECEIPT", product.sku, store, product.opening_store, source="erp"))
        for movement in movements:
            self._add(movement["sku"], movement["location"], movement["quantity"])
        first_count = CATALOGUE[-1]
        count = self._movement("CYCLE_COUNT", first_count.sku, QUIET_STORE, first_count.opening_store,
                               source=f"pos-{QUIET_STORE.lower()}")
        return [
            (SourceRecord(POLICY_CHANGES, "policy", policy),
             f"policy v{policy['version']}: 8 locations, 3 channels, POS silent {POS_SILENCE_SECONDS} s: hold 1 back"),
            (SourceRecord(STOCK_MOVEMENTS, "opening-stock", {"movements": movements}),
             f"opening stock: {len(movements)} receipts"),
            (SourceRecord(STORE_TRANSACTIONS, QUIET_STORE, count),
             f"cycle count {first_count.sku} at {QUIET_STORE}: {first_count.opening_store} (its POS speaks)"),
        ]

    def next_event(self) -> tuple[SourceRecord, str]:
        """The next event and a one-line description of it."""
        now = self._clock()
        for index, (due, record, description) in enumerate(self._arrivals):
            if due <= now and not (self._pos_quiet(now) and _at_quiet_store(record)):
                del self._arrivals[index]
                self._apply_arrival(record)
                return record, description
        if not self._late_return_sold and now - self._started >= LATE_RETURN_AT_SECONDS:
            self._late_return_sold = True
            return self._sale_before_its_late_return(now)
        actions = (
            (self._store_sale, 30), (self._reserve_ecommerce, 16), (self._reserve_marketplace, 10),
            (self._settle_reservation, 16), (self._store_return, 5), (self._transfer_to_store, 6),
            (self._cycle_count, 4), (self._damaged_unit, 2),
        )
        while True:
            action = self._rng.choices([a for a, _ in actions], weights=[w for _, w in actions])[0]
            produced = action(now)
            if produced is not None:
                self._maybe_raise_purchase_order(now)
                return produced

    def note_decision(self, reservation_id: str, outcome: str, lines: list[tuple[str, int]]) -> None:
        self.decisions_seen = True
        reservation = self._reservations.get(reservation_id)
        if reservation is None:
            return
        if outcome == "ACCEPTED":
            reservation.accepted, reservation.lines = True, lines
        elif outcome in ("REJECTED", "EXPIRED"):  # nothing left to fulfil or release
            del self._reservations[reservation_id]

    # -- actions: each returns (record, description), or None when it does not fit the current stock ---------------

    def _pos_quiet(self, now: float) -> bool:
        return QUIET_FROM_SECONDS <= now - self._started < QUIET_FROM_SECONDS + QUIET_FOR_SECONDS

    def _pos_stores(self, now: float) -> tuple[str, ...]:
        """Stores whose POS speaks now (all but the quiet one during its silence)."""
        return tuple(store for store in STORES if store != QUIET_STORE) if self._pos_quiet(now) else STORES

    def _sale_before_its_late_return(self, now: float):
        """A customer returns a unit and another buys two, but the return's record arrives seconds after the sale:
        the sale drives the shelf below zero (a NEGATIVE_STOCK exception) until the return arrives."""
        product, store = CATALOGUE[0], "STORE-LEEDS"
        quantity = self.on_hand.get((product.sku, store), 0) + 1
        self._add(product.sku, store, -quantity)
        record = self._movement("SALE", product.sku, store, quantity, source=f"pos-{store.lower()}")
        late = self._movement("RETURN", product.sku, store, 1, source=f"pos-{store.lower()}", disposition="RESTOCK")
        self._arrivals.append((now + 6, SourceRecord(STORE_TRANSACTIONS, store, late),
                               f"the late return of 1 x {product.sku} at {store} arrives"))
        return (SourceRecord(STORE_TRANSACTIONS, store, record),
                f"sale {quantity} x {product.sku} at {store}, one more than the shelf held: its return is late")

    def _store_sale(self, now: float):
        product = self._pick_product()
        stocked = [store for store in self._pos_stores(now) if self.on_hand.get((product.sku, store), 0) > 0]
        if not stocked:
            return None
        store = self._rng.choice(stocked)
        quantity = min(self.on_hand[(product.sku, store)], self._rng.choice((1, 1, 1, 2)))
        self._add(product.sku, store, -quantity)
        record = self._movement("SALE", product.sku, store, quantity, source=f"pos-{store.lower()}")
        return SourceRecord(STORE_TRANSACTIONS, store, record), f"sale {quantity} x {product.sku} at {store}"

    def _reserve_ecommerce(self, now: float):
        return self._reserve("ecommerce", "EC", now)

    def _reserve_marketplace(self, now: float):
        return self._reserve("marketplace", "MP", now)

    def _reserve(self, channel: str, prefix: str, now: float):
        product = self._pick_product()
        self._order_number += 1
        reservation_id = f"{prefix}-{self.run_id}-{self._order_number}"
        quantity = self._rng.choice((1, 1, 2, 3))
        expires = self._rng.random() < 0.3
        command = self._command("RESERVE", reservation_id, product.sku, channel, quantity,
                                allow_partial=self._rng.random() < 0.3,
                                expires_at=self._now_ms() + 45_000 if expires else None)
        self._reservations[reservation_id] = _Reservation(reservation_id, channel, product.sku, quantity, now)
        return (SourceRecord(RESERVATION_COMMANDS, reservation_id, command),
                f"{channel} reserves {quantity} x {product.sku} ({reservation_id})")

    def _settle_reservation(self, now: float):
        ready = [r for r in self._reservations.values() if now - r.requested_at > 4 and self._settleable(r, now)]
        if not ready:
            return None
        reservation = self._rng.choice(ready)
        del self._reservations[reservation.reservation_id]
        action = "FULFIL" if self._rng.random() < 0.75 else "RELEASE"
        if action == "FULFIL":
            for location, quantity in reservation.lines:
                self._add(reservation.sku, location, -quantity)
        command = self._command(action, reservation.reservation_id, reservation.sku, reservation.channel,
                                reservation.quantity)
        verb = "fulfils" if action == "FULFIL" else "releases"
        return (SourceRecord(RESERVATION_COMMANDS, reservation.reservation_id, command),
                f"{reservation.channel} {verb} {reservation.reservation_id}")

    def _store_return(self, now: float):
        product = self._pick_product()
        store = self._rng.choice(self._pos_stores(now))
        disposition = "RESTOCK" if self._rng.random() < 0.8 else "QUARANTINE"
        if disposition == "RESTOCK":
            self._add(product.sku, store, 1)
        record = self._movement("RETURN", product.sku, store, 1, source=f"pos-{store.lower()}",
                                disposition=disposition)
        return SourceRecord(STORE_TRANSACTIONS, store, record), f"return 1 x {product.sku} at {store} ({disposition})"

    def _transfer_to_store(self, now: float):
        product = self._pick_product()
        dcs = [dc for dc in DISTRIBUTION_CENTRES if self.on_hand.get((product.sku, dc), 0) >= 6]
        if not dcs:
            return None
        dc = self._rng.choice(dcs)
        store = min(STORES, key=lambda s: (self.on_hand.get((product.sku, s), 0), self._rng.random()))
        quantity = self._rng.randint(2, 4)
        self._add(product.sku, dc, -quantity)
        shipped = self._movement("TRANSFER_SHIPPED", product.sku, dc, quantity, source="wms",
                                 counterparty_location=store)
        received = self._movement("TRANSFER_RECEIVED", product.sku, store, quantity, source="wms",
                                  counterparty_location=dc)
        self._arrivals.append((now + self._rng.uniform(8, 15), SourceRecord(STORE_TRANSACTIONS, store, received),
                               f"transfer of {quantity} x {product.sku} arrives at {store}"))
        return (SourceRecord(STOCK_MOVEMENTS, dc, {"movements": [shipped]}),
                f"transfer {quantity} x {product.sku} {dc} -> {store} shipped")

    def _cycle_count(self, now: float):
        product = self._pick_product()
        store = self._rng.choice(self._pos_stores(now))
        counted = max(0, self.on_hand.get((product.sku, store), 0) + self._rng.choice((-1, 0, 0, 0, 1)))
        self.on_hand[(product.sku, store)] = counted
        record = self._movement("CYCLE_COUNT", product.sku, store, counted, source=f"pos-{store.lower()}")
        return SourceRecord(STORE_TRANSACTIONS, store, record), f"cycle count {product.sku} at {store}: {counted}"

    def _damaged_unit(self, now: float):
        product = self._pick_product()
        dc = self._rng.choice(DISTRIBUTION_CENTRES)
        if self.on_hand.get((product.sku, dc), 0) <= 0:
            return None
        self._add(product.sku, dc, -1)
        record = self._movement("ADJUSTMENT", product.sku, dc, None, source="wms", delta=-1, reason="DAMAGED")
        return SourceRecord(STOCK_MOVEMENTS, dc, {"movements": [record]}), f"1 x {product.sku} damaged at {dc}"

    # -- internals -----------------------------------------------------------------------------------------------

    def _maybe_raise_purchase_order(self, now: float) -> None:
        for product in CATALOGUE:
            total = sum(self.on_hand.get((product.sku, location), 0) for location in DISTRIBUTION_CENTRES + STORES)
            if total < product.reorder_point and product.sku not in self._on_order:
                self._on_order.add(product.sku)
                dc = self._rng.choice(DISTRIBUTION_CENTRES)
                receipt = self._movement("RECEIPT", product.sku, dc, product.order_quantity, source="wms")
                self._arrivals.append((now + self._rng.uniform(20, 35), SourceRecord(STOCK_MOVEMENTS, dc,
                                       {"movements": [receipt]}),
                                       f"purchase order: {product.order_quantity} x {product.sku} received at {dc}"))

    def _apply_arrival(self, record: SourceRecord) -> None:
        movements = record.value.get("movements") or [record.value]
        for movement in movements:
            self._add(movement["sku"], movement["location"], movement["quantity"])
            if movement["type"] == "RECEIPT":
                self._on_order.discard(movement["sku"])

    def _settleable(self, reservation: _Reservation, now: float) -> bool:
        if self.decisions_seen:
            return reservation.accepted is True
        return now - reservation.requested_at > 6  # no feedback: assume it was accepted

    def _pick_product(self) -> Product:
        return self._rng.choices(CATALOGUE, weights=[product.demand for product in CATALOGUE])[0]

    def _add(self, sku: str, location: str, quantity: int) -> None:
        self.on_hand[(sku, location)] = self.on_hand.get((sku, location), 0) + quantity

    def _event_id(self, kind: str) -> str:
        self._sequence += 1
        return f"demo-{self.run_id}-{kind}-{self._sequence}"

    def _movement(self, movement_type: str, sku: str, location: str, quantity: int | None, source: str,
                  **fields: Any) -> dict[str, Any]:
        return stock_movement(event_id=self._event_id(movement_type.lower()), sku=sku, location=location,
                              event_time=self._now_ms(), source=source, type=movement_type, quantity=quantity,
                              **fields)

    def _command(self, command: str, reservation_id: str, sku: str, channel: str, quantity: int,
                 allow_partial: bool = False, expires_at: int | None = None) -> dict[str, Any]:
        return {
            "event_id": self._event_id(command.lower()), "command": command, "reservation_id": reservation_id,
            "sku": sku, "channel": channel, "quantity": quantity, "location": None, "allow_partial": allow_partial,
            "expires_at": expires_at, "event_time": self._now_ms(), "source": f"oms-{channel}",
        }


def _at_quiet_store(record: SourceRecord) -> bool:
    """Whether a record is the quiet store's POS speaking (a transfer received there counts: store-transactions)."""
    return record.topic is STORE_TRANSACTIONS and record.key == QUIET_STORE
