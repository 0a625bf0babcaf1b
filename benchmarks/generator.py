"""The peak-season workload: a seeded, deterministic stream of source records for the availability service.

Pure: no I/O, no wall clock, no global randomness. The same `WorkloadConfig` (seed included) and the same calls give
the same records, byte for byte once encoded. Records are plain dicts with the Avro field names of `avro/*.avsc`,
addressed to the real source topics of `app.wire.topics`, so the service ingests them exactly as it ingests a retailer's
feeds.

What it models:
- 100,000 SKUs with Zipf popularity (exponent 1.1: the top 1% of SKUs take about half of the demand); each SKU is
  carried by a deterministic assortment of stores (all 300 for the head, 3 for the tail) and by 1 to 5 DCs.
- 300 stores and 5 distribution centres; three channels: `ecommerce` (NETWORK, DCs and stores), `marketplace`
  (NETWORK, half of the DCs' stock) and `store-pickup` (LOCATION, stores).
- The realistic mix, per event: store sales (about 40%) and returns (5%) as single `StockMovement` records on
  `source.store-transactions`; reservations from the 3 channels (20%: reserve, then fulfil or release) as single
  `ReservationCommand` records (a command ends a random active reservation with probability 0.45, else reserves:
  open reservations build up through a run, 20,314 at 1,000,000 events, half of them without an expiry, and a hot
  SKU holds thousands; docs/PERFORMANCE.md, "Three million events"); warehouse and ERP movements (35%: receipts,
  DC-to-store transfers shipped and received, DC cycle counts and adjustments) in bulk `StockMovementBatch` records
  on `source.stock-movements`, one feed per DC (keyed by the DC, so a transfer's receipt always follows its shipment
  on the same source partition).
- Valid events only: a shadow model of stock keeps every sale, shipment, reservation and fulfilment within what the
  engine will have. Where the model lacks stock, the generator adds a *stock load* (one RECEIPT per SKU-location)
  that the benchmark writes to the ledger before the section that needs it: the pre-season stock on hand. The
  model never counts stock that arrives on another source topic than the event that needs it, so the interleaving
  of topics by the ingest stage cannot turn a valid event into a rejected one (cycle counts at DCs may still
  disagree by a few units with reservations that race them; DC stocks are large, so no rejection follows).

`RateSchedule` turns a section's event positions into send times: a steady rate with bursts (4x for a minute in the
peak profile), also deterministic.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app.wire.topics import (
    POLICY_CHANGES,
    RESERVATION_COMMANDS,
    STOCK_MOVEMENTS,
    STORE_TRANSACTIONS,
    TopicSpec,
    ledger_partition,
)

CHANNELS = ("ecommerce", "marketplace", "store-pickup")  # the service's default channels (app.settings)
MIXES = ("mixed", "single", "bulk")
_MIX_SEED_OFFSET = {"mixed": 0, "single": 1, "bulk": 2}  # str hash() is salted per process: never seed with it

STORE_SAFETY_STOCK = 1
STORE_TOP_UP = 24  # units a stock load puts on a store shelf when the model runs short
DC_TOP_UP = 2_000
DC_MARGIN = 100  # a DC keeps this many unreserved units in the model, for races with cycle counts
BULK_TYPES = (("RECEIPT", 0.35), ("TRANSFER_SHIPPED", 0.25), ("TRANSFER_RECEIVED", 0.25), ("CYCLE_COUNT", 0.10),
              ("ADJUSTMENT", 0.05))
RESERVATION_CHANNELS = (("ecommerce", 0.5), ("marketplace", 0.25), ("store-pickup", 0.25))
_MOVEMENT_OPTIONAL = ("quantity", "delta", "reason", "disposition", "counterparty_location", "from_bucket",
                      "to_bucket")


@dataclass(frozen=True)
class WorkloadConfig:
    seed: int = 20241129
    skus: int = 100_000
    stores: int = 300
    distribution_centres: int = 5
    zipf_exponent: float = 1.1
    bulk_share: float = 0.35  # of events: movements that arrive in StockMovementBatch records
    reservation_share: float = 0.20
    return_share: float = 0.05  # the rest are store sales
    batch_size: int = 200  # movements per StockMovementBatch
    event_time_step_ms: int = 1  # event time advances this much per event: every event has its own millisecond
    start_time_ms: int = 1_732_838_400_000  # 2024-11-29T00:00:00Z
    partitions: int = 8  # ledger partitions (to count what each ledger partition will hold)
    reservation_expiry_ms: int = 15 * 60 * 1000
    expiring_share: float = 0.5  # of reservations that carry an expiry

    def __post_init__(self) -> None:
        if self.event_time_step_ms < 1:
            raise ValueError("event_time_step_ms must be at least 1 (a cycle count must not share a movement's time)")
        if self.bulk_share + self.reservation_share + self.return_share >= 1:
            raise ValueError("bulk, reservation and return shares must leave room for store sales")


@dataclass(frozen=True, slots=True)
class GeneratedRecord:
    """One source record and the events in it: `seqs` are the events' sequence numbers (event ids are
    `<prefix><seq>`), `partitions` the ledger partition of each event (one byte each)."""

    topic: TopicSpec
    key: str
    value: dict[str, Any]
    seqs: tuple[int, ...]
    partitions: bytes

    @property
    def events(self) -> int:
        return len(self.seqs)

    @property
    def last_seq(self) -> int:
        return self.seqs[-1]


@dataclass(frozen=True, slots=True)
class StockLoad:
    """Stock on hand before a section: one RECEIPT for a SKU-location, written straight to the ledger."""

    sku: str
    location: str
    quantity: int


@dataclass
class _Reservation:
    reservation_id: str
    sku: str
    channel: str
    location: str
    quantity: int
    expires_at: int | None


@dataclass
class _Feed:
    """One DC's bulk feed: movements waiting to fill a StockMovementBatch."""

    movements: list[dict] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    partitions: bytearray = field(default_factory=bytearray)
    in_transit: deque = field(default_factory=deque)  # (sku, store, quantity) shipped, not yet received


class Workload:
    """Generates source records for one mix ('mixed', 'single': store transactions and reservations only, 'bulk':
    StockMovementBatch records only). Call `records(n)` for each section; `take_stock_loads()` after each call gives
    the stock the section needs on the ledger before its records."""

    def __init__(self, config: WorkloadConfig = WorkloadConfig(), mix: str = "mixed", prefix: str = "pk",
                 sku_prefix: str = "SKU") -> None:
        if mix not in MIXES:
            raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
        self.config = config
        self.mix = mix
        self.prefix = prefix  # event ids are <prefix><seq>
        self.sku_prefix = sku_prefix  # two workloads on one broker keep apart with different SKU prefixes
        self._rng = random.Random(config.seed * 10 + _MIX_SEED_OFFSET[mix])
        weights = [1.0 / (rank + 1) ** config.zipf_exponent for rank in range(config.skus)]
        self._cumulative = list(itertools.accumulate(weights))
        self.stores = tuple(f"ST{index:03d}" for index in range(config.stores))
        self.distribution_centres = tuple(f"DC{index}" for index in range(config.distribution_centres))
        self._assortments: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._partitions: dict[str, int] = {}
        self.sellable: dict[tuple[str, str], int] = {}  # the model's sellable units per SKU-location
        # units that are on the ledger before ANY later event, whatever topic it comes on: stock loads minus every
        # decrease. Increases that travel on a source topic (receipts, returns) count only for events of that topic.
        self.guaranteed: dict[tuple[str, str], int] = {}
        self.reserved: dict[tuple[str, str], int] = {}
        self.positions: set[tuple[str, str]] = set()  # SKU-locations the engine will hold a position for
        self._dc_positions: list[tuple[str, str]] = []
        self._loads: dict[tuple[str, str], int] = {}
        self._counted: set[tuple[str, str]] = set()  # DC positions with a cycle count: no more stock loads there
        self._active: list[_Reservation] = []
        self._feeds = {dc: _Feed() for dc in self.distribution_centres}
        self._seq = 0
        self._reservation_number = 0
        self._load_number = 0
        shares = {
            "mixed": (config.bulk_share, config.reservation_share, config.return_share),
            "single": (0.0, config.reservation_share, config.return_share),
            "bulk": (1.0, 0.0, 0.0),
        }[mix]
        total = 1.0 if mix != "single" else 1.0 - config.bulk_share
        bulk, reservations, returns = (share / total for share in shares)
        self._thresholds = (bulk, bulk + reservations, bulk + reservations + returns)
        self._bulk_types = [name for name, _ in BULK_TYPES]
        self._bulk_cumulative = list(itertools.accumulate(weight for _, weight in BULK_TYPES))

    # -- public ----------------------------------------------------------------------------------------------------

    @property
    def events_generated(self) -> int:
        return self._seq

    def policy(self, version: int = 1) -> dict[str, Any]:
        """The PolicyChange record: every store and DC, store safety stock, the three channels."""

        def channel(name, priority, granularity, types, share_bp, low):
            return {"channel": name, "priority": priority, "granularity": granularity, "location_types": types,
                    "locations": [], "share_bp": share_bp, "protected_quantity": 0, "buffer": 0,
                    "max_advertised": None, "include_in_transit": False, "low_stock_threshold": low}

        return {
            "event_id": f"{self.prefix}-policy-{version}",
            "version": version,
            "event_time": self.config.start_time_ms,
            "source": "benchmark-policy-admin",
            "locations": [{"location": dc, "location_type": "DISTRIBUTION_CENTRE"} for dc in self.distribution_centres]
            + [{"location": store, "location_type": "STORE"} for store in self.stores],
            "safety_stock": [{"scope": "LOCATION_TYPE", "sku": None, "location": None, "location_type": "STORE",
                              "quantity": STORE_SAFETY_STOCK}],
            "channels": [
                channel("ecommerce", 0, "NETWORK", ["DISTRIBUTION_CENTRE", "STORE"], 10_000, 5),
                channel("marketplace", 1, "NETWORK", ["DISTRIBUTION_CENTRE"], 5_000, 3),
                channel("store-pickup", 2, "LOCATION", ["STORE"], 10_000, 1),
            ],
        }

    def records(self, events: int) -> Iterator[GeneratedRecord]:
        """The next `events` events as source records, in send order; partly filled batches are sent at the end."""
        target = self._seq + events
        while self._seq < target:
            record = self._next_event()
            if record is not None:
                yield record
        yield from self.flush()

    def flush(self) -> Iterator[GeneratedRecord]:
        for dc in self.distribution_centres:
            if self._feeds[dc].movements:
                yield self._emit_batch(dc)

    def take_stock_loads(self) -> list[StockLoad]:
        """The stock loads added since the last call (sorted, deterministic), then forgotten."""
        loads = [StockLoad(sku, location, quantity) for (sku, location), quantity in sorted(self._loads.items())]
        self._loads.clear()
        return loads

    def stock_load_record(self, load: StockLoad) -> dict[str, Any]:
        """A stock load as a StockMovement record (RECEIPT), with an id of its own (not a sequence number)."""
        self._load_number += 1
        return _movement(f"{self.prefix}-load{self._load_number}", load.sku, load.location,
                         self.config.start_time_ms, "benchmark-stock-load", "RECEIPT", quantity=load.quantity)

    def probe_records(self, tag: str) -> list[GeneratedRecord]:
        """One restocking return of 5 units per ledger partition (more than the store safety stock, so each
        publishes availability at once): what a restart measurement waits for. Ids `<prefix>-probe<tag>-<partition>`."""
        records, seen = [], set()
        for rank in range(self.config.skus):
            sku = self.sku_name(rank)
            partition = self.partition_of(sku)
            if partition in seen:
                continue
            seen.add(partition)
            store = self._assortment(rank)[0][0]
            self._add_sellable(sku, store, 5)
            event_id = f"{self.prefix}-probe{tag}-{partition}"
            value = _movement(event_id, sku, store, self._now(), f"pos-{store.lower()}", "RETURN", quantity=5,
                              disposition="RESTOCK")
            records.append(GeneratedRecord(STORE_TRANSACTIONS, store, value, (-1,), bytes((partition,))))
            if len(seen) == self.config.partitions:
                break
        return records

    def sku_name(self, rank: int) -> str:
        return f"{self.sku_prefix}{rank:06d}"

    def partition_of(self, sku: str) -> int:
        partition = self._partitions.get(sku)
        if partition is None:
            partition = self._partitions[sku] = ledger_partition(sku, self.config.partitions)
        return partition

    # -- events ----------------------------------------------------------------------------------------------------

    def _next_event(self) -> GeneratedRecord | None:
        roll = self._rng.random()
        bulk, reservations, returns = self._thresholds
        if roll < bulk:
            return self._bulk_movement()
        if roll < reservations:
            return self._reservation_command()
        if roll < returns:
            return self._store_return()
        return self._store_sale()

    def _new_seq(self) -> tuple[int, str, int]:
        seq = self._seq
        self._seq += 1
        return seq, f"{self.prefix}{seq}", self._now()

    def _now(self) -> int:
        return self.config.start_time_ms + self._seq * self.config.event_time_step_ms

    def _single(self, topic: TopicSpec, key: str, value: dict, seq: int, sku: str) -> GeneratedRecord:
        return GeneratedRecord(topic, key, value, (seq,), bytes((self.partition_of(sku),)))

    def _store_sale(self) -> GeneratedRecord:
        rank = self._pick_rank()
        sku = self.sku_name(rank)
        store = self._rng.choice(self._assortment(rank)[0])
        quantity = 1 if self._rng.random() < 0.8 else 2
        self._ensure_available(sku, store, quantity, STORE_SAFETY_STOCK, STORE_TOP_UP, guaranteed=False)
        self._add_sellable(sku, store, -quantity)
        seq, event_id, now = self._new_seq()
        value = _movement(event_id, sku, store, now, f"pos-{store.lower()}", "SALE", quantity=quantity)
        return self._single(STORE_TRANSACTIONS, store, value, seq, sku)

    def _store_return(self) -> GeneratedRecord:
        rank = self._pick_rank()
        sku = self.sku_name(rank)
        store = self._rng.choice(self._assortment(rank)[0])
        restock = self._rng.random() < 0.8
        if restock:
            self._add_sellable(sku, store, 1)
        else:
            self.positions.add((sku, store))
        seq, event_id, now = self._new_seq()
        value = _movement(event_id, sku, store, now, f"pos-{store.lower()}", "RETURN", quantity=1,
                          disposition="RESTOCK" if restock else "QUARANTINE")
        return self._single(STORE_TRANSACTIONS, store, value, seq, sku)

    def _reservation_command(self) -> GeneratedRecord:
        rng = self._rng
        now = self._now()
        while self._active and rng.random() < 0.45:
            index = rng.randrange(len(self._active))
            reservation = self._active[index]
            self._active[index] = self._active[-1]
            self._active.pop()
            if reservation.expires_at is not None and reservation.expires_at <= now + 60_000:
                # about to expire (or expired): the engine ends it; the model lets go of its units (as a release)
                self._release(reservation, fulfil=False)
                continue
            fulfil = rng.random() < 0.8
            self._release(reservation, fulfil)
            seq, event_id, now = self._new_seq()
            return self._single(RESERVATION_COMMANDS, reservation.reservation_id,
                                _command(event_id, "FULFIL" if fulfil else "RELEASE", reservation, now), seq,
                                reservation.sku)
        rank = self._pick_rank()
        sku = self.sku_name(rank)
        channel = _weighted(rng.random(), RESERVATION_CHANNELS)
        stores, dcs = self._assortment(rank)
        quantity = rng.randint(1, 3)
        location = None
        if channel != "store-pickup":
            # marketplace takes half of a DC's ATP: ask for twice the units; a DC already cycle-counted cannot get
            # a stock load (the count would have erased it), so it serves only from what the model knows is there
            start = rng.randrange(len(dcs))
            for dc in dcs[start:] + dcs[:start]:
                if self._ensure_dc_stock(sku, dc, 2 * quantity, guaranteed=True):
                    location = dc
                    break
            else:
                channel = "store-pickup"
        if location is None:
            location = rng.choice(stores)
            self._ensure_available(sku, location, quantity + 2, STORE_SAFETY_STOCK, STORE_TOP_UP, guaranteed=True)
        self._reservation_number += 1
        code = {"ecommerce": "EC", "marketplace": "MP", "store-pickup": "SP"}[channel]
        expires_at = now + self.config.reservation_expiry_ms if rng.random() < self.config.expiring_share else None
        reservation = _Reservation(f"{self.prefix}-{code}-{self._reservation_number}", sku, channel, location,
                                   quantity, expires_at)
        self.reserved[(sku, location)] = self.reserved.get((sku, location), 0) + quantity
        self._active.append(reservation)
        seq, event_id, now = self._new_seq()
        return self._single(RESERVATION_COMMANDS, reservation.reservation_id,
                            _command(event_id, "RESERVE", reservation, now), seq, sku)

    def _release(self, reservation: _Reservation, fulfil: bool) -> None:
        key = (reservation.sku, reservation.location)
        self.reserved[key] -= reservation.quantity
        if fulfil:
            self._add_sellable(reservation.sku, reservation.location, -reservation.quantity)

    def _bulk_movement(self) -> GeneratedRecord | None:
        rng = self._rng
        kind = self._bulk_types[bisect.bisect_left(self._bulk_cumulative, rng.random() * self._bulk_cumulative[-1])]
        if kind == "TRANSFER_RECEIVED":
            feeds = [dc for dc in self.distribution_centres if self._feeds[dc].in_transit]
            if feeds:
                dc = rng.choice(feeds)
                sku, store, quantity = self._feeds[dc].in_transit.popleft()
                # the model does not count it: a sale on another topic may reach the ledger first
                seq, event_id, now = self._new_seq()
                return self._add_to_feed(dc, seq, sku, _movement(
                    event_id, sku, store, now, f"wms-{dc.lower()}", "TRANSFER_RECEIVED", quantity=quantity,
                    counterparty_location=dc))
            kind = "RECEIPT"
        if kind == "CYCLE_COUNT":
            if self._dc_positions:
                sku, dc = self._dc_positions[rng.randrange(len(self._dc_positions))]
                self._counted.add((sku, dc))
                seq, event_id, now = self._new_seq()
                return self._add_to_feed(dc, seq, sku, _movement(
                    event_id, sku, dc, now, f"wms-{dc.lower()}", "CYCLE_COUNT", quantity=self.sellable[(sku, dc)]))
            kind = "RECEIPT"
        rank = self._pick_rank()
        sku = self.sku_name(rank)
        stores, dcs = self._assortment(rank)
        dc = rng.choice(dcs)
        if kind == "RECEIPT":
            quantity = rng.randint(50, 500)
            self._add_sellable(sku, dc, quantity)
            seq, event_id, now = self._new_seq()
            value = _movement(event_id, sku, dc, now, "erp", "RECEIPT", quantity=quantity)
        elif kind == "TRANSFER_SHIPPED":
            store = rng.choice(stores)
            quantity = rng.randint(2, 12)
            if self._ensure_dc_stock(sku, dc, quantity, guaranteed=False):
                self._add_sellable(sku, dc, -quantity)
                self.positions.add((sku, store))
                self._feeds[dc].in_transit.append((sku, store, quantity))
                seq, event_id, now = self._new_seq()
                value = _movement(event_id, sku, dc, now, f"wms-{dc.lower()}", "TRANSFER_SHIPPED", quantity=quantity,
                                  counterparty_location=store)
            else:  # a counted DC short of the units: the ERP replenishes it first, on the same feed
                self._add_sellable(sku, dc, DC_TOP_UP)
                seq, event_id, now = self._new_seq()
                value = _movement(event_id, sku, dc, now, "erp", "RECEIPT", quantity=DC_TOP_UP)
        else:  # ADJUSTMENT
            delta = rng.choice((-3, -2, -1, 1, 2, 3))
            if delta < 0 and not self._ensure_dc_stock(sku, dc, -delta, guaranteed=False):
                delta = -delta  # a counted DC without the units: found stock instead of damaged stock
            self._add_sellable(sku, dc, delta)
            seq, event_id, now = self._new_seq()
            value = _movement(event_id, sku, dc, now, f"wms-{dc.lower()}", "ADJUSTMENT", delta=delta,
                              reason="DAMAGED" if delta < 0 else "FOUND")
        return self._add_to_feed(dc, seq, sku, value)

    def _add_to_feed(self, dc: str, seq: int, sku: str, movement: dict) -> GeneratedRecord | None:
        feed = self._feeds[dc]
        feed.movements.append(movement)
        feed.seqs.append(seq)
        feed.partitions.append(self.partition_of(sku))
        if len(feed.movements) >= self.config.batch_size:
            return self._emit_batch(dc)
        return None

    def _emit_batch(self, dc: str) -> GeneratedRecord:
        feed = self._feeds[dc]
        record = GeneratedRecord(STOCK_MOVEMENTS, f"wms-{dc}", {"movements": feed.movements}, tuple(feed.seqs),
                                 bytes(feed.partitions))
        feed.movements, feed.seqs, feed.partitions = [], [], bytearray()
        return record

    # -- the stock model -------------------------------------------------------------------------------------------

    def _pick_rank(self) -> int:
        return bisect.bisect_left(self._cumulative, self._rng.random() * self._cumulative[-1])

    def _assortment(self, rank: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(stores, DCs) that carry the SKU of popularity `rank`: the head everywhere, the tail in 3 stores."""
        known = self._assortments.get(rank)
        if known is None:
            rng = random.Random(self.config.seed * 1_000_003 + rank)
            store_count = max(3, min(len(self.stores), round(len(self.stores) / (1 + rank / 50))))
            dc_count = len(self.distribution_centres) if rank < 1000 else min(2, len(self.distribution_centres))
            known = (tuple(rng.sample(self.stores, store_count)), tuple(rng.sample(self.distribution_centres, dc_count)))
            self._assortments[rank] = known
        return known

    def _add_sellable(self, sku: str, location: str, delta: int) -> None:
        """A movement in the model: a decrease lowers the guaranteed units too, an increase only the sellable."""
        key = (sku, location)
        if key not in self.sellable:
            self.positions.add(key)
            self.sellable[key] = 0
            self.guaranteed[key] = 0
            if location.startswith("DC"):
                self._dc_positions.append(key)
        self.sellable[key] += delta
        if delta < 0:
            self.guaranteed[key] += delta

    def _ensure_available(self, sku: str, location: str, quantity: int, safety: int, top_up: int,
                          guaranteed: bool) -> None:
        """Stock loads until `quantity` units are available beyond safety stock and reservations: counting only
        guaranteed units for an event on another topic than the increases, all sellable units otherwise."""
        key = (sku, location)
        units = self.guaranteed if guaranteed else self.sellable
        while units.get(key, 0) - self.reserved.get(key, 0) - safety < quantity:
            self._loads[key] = self._loads.get(key, 0) + top_up
            self._add_sellable(sku, location, top_up)
            self.guaranteed[key] += top_up

    def _ensure_dc_stock(self, sku: str, dc: str, quantity: int, guaranteed: bool) -> bool:
        """Make `quantity` units (plus a margin) available at a DC in the model; False when that is not possible.

        Before the DC position's first cycle count a stock load does it. After it, a load would be erased by the
        count (loads are on the ledger before everything), so a counted DC serves only what the model knows is
        there, and the caller does something else."""
        key = (sku, dc)
        needed = quantity + DC_MARGIN
        units = self.guaranteed if guaranteed else self.sellable
        if units.get(key, 0) - self.reserved.get(key, 0) >= needed:
            return True
        if key in self._counted:
            return False
        self._ensure_available(sku, dc, needed, 0, DC_TOP_UP, guaranteed)
        return True


class RateSchedule:
    """Send times of a section: `steady_rate` events/s, times `factor` during each burst (start, length seconds).
    `time_of(n)` is when the n-th event of the section is due (seconds from the section's start)."""

    def __init__(self, steady_rate: float, bursts: tuple[tuple[float, float, float], ...] = ()) -> None:
        if steady_rate <= 0:
            raise ValueError("steady_rate must be positive")
        self.steady_rate = steady_rate
        self.bursts = tuple(sorted(bursts))
        # piecewise-constant rate: (segment start time, events due before it, rate)
        segments, time, events = [], 0.0, 0.0
        for start, length, factor in self.bursts:
            if start < time:
                raise ValueError("bursts overlap")
            events += (start - time) * steady_rate
            segments.append((start, events, steady_rate * factor))
            events += length * steady_rate * factor
            time = start + length
            segments.append((time, events, steady_rate))
        self._segments = [(0.0, 0.0, steady_rate)] + segments

    def rate_at(self, seconds: float) -> float:
        return self._segment_at_time(seconds)[2]

    def events_by(self, seconds: float) -> float:
        start, before, rate = self._segment_at_time(seconds)
        return before + (seconds - start) * rate

    def time_of(self, event_index: float) -> float:
        index = bisect.bisect_right([before for _, before, _ in self._segments], event_index) - 1
        start, before, rate = self._segments[max(index, 0)]
        return start + (event_index - before) / rate

    def _segment_at_time(self, seconds: float) -> tuple[float, float, float]:
        index = bisect.bisect_right([start for start, _, _ in self._segments], seconds) - 1
        return self._segments[max(index, 0)]


def _weighted(roll: float, choices: tuple[tuple[str, float], ...]) -> str:
    for name, weight in choices:
        if roll < weight:
            return name
        roll -= weight
    return choices[-1][0]


def _movement(event_id: str, sku: str, location: str, event_time: int, source: str, movement_type: str,
              **fields: Any) -> dict[str, Any]:
    value = {"event_id": event_id, "sku": sku, "location": location, "event_time": event_time, "source": source,
             "type": movement_type}
    for name in _MOVEMENT_OPTIONAL:
        value[name] = fields.get(name)
    return value


def _command(event_id: str, action: str, reservation: _Reservation, event_time: int) -> dict[str, Any]:
    return {"event_id": event_id, "command": action, "reservation_id": reservation.reservation_id,
            "sku": reservation.sku, "channel": reservation.channel,
            "quantity": reservation.quantity, "location": reservation.location if action == "RESERVE" else None,
            "allow_partial": False, "expires_at": reservation.expires_at if action == "RESERVE" else None,
            "event_time": event_time, "source": f"oms-{reservation.channel}"}


def policy_topic() -> TopicSpec:
    return POLICY_CHANGES
