"""Reconciliation, the pure part: a system of record's export against the engine's positions as of a time.

`compare` takes per ledger partition the PartitionEngine that applied the ledger up to the as-of time (fresh memory
stores, app/replay/applying.py) and the export's rows, and returns the drifts (export minus service) per
SKU-location-bucket. `correct` then applies each SKU's SELLABLE corrections as CYCLE_COUNT movements at the as-of
time through the same engines, and reads what every channel key would move by from the SKU's published values:
through the engine, so a capped channel or a share gives the real figure, not the sum of the rows.
DAMAGED and QUARANTINE drifts are reported only: no movement sets those buckets to a counted value.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from app.engine import (
    ChannelAvailability,
    ClockTick,
    ExceptionKind,
    InventoryException,
    MovementType,
    PartitionEngine,
    PolicyChange,
    PositionBucket,
    StockMovement,
)
from app.operations.export import BadRow, ExportRow
from app.wire.topics import ledger_partition

RECONCILE_SOURCE = "reconcile"
CORRECTED_BUCKET = "SELLABLE"  # the bucket a cycle count sets; the others are reported, not corrected
_BUCKET_FIELD = {"SELLABLE": "sellable", "DAMAGED": "damaged", "QUARANTINE": "quarantine"}


@dataclass(frozen=True, slots=True)
class Drift:
    line: int
    sku: str
    location: str
    bucket: str
    export_on_hand: int
    service_on_hand: int
    position: tuple[int, int, int, int, int] | None  # the service's buckets there (None: no position at all)

    @property
    def drift(self) -> int:
        """System of record minus service."""
        return self.export_on_hand - self.service_on_hand

    @property
    def correctable(self) -> bool:
        return self.bucket == CORRECTED_BUCKET


@dataclass
class Comparison:
    rows: int = 0  # export rows read, bad ones included
    compared: int = 0
    agreeing: int = 0
    drifts: list[Drift] = field(default_factory=list)  # ranked: largest absolute drift first
    bad_rows: list[BadRow] = field(default_factory=list)
    impact: Counter = field(default_factory=Counter)  # channel -> units its availability moves by, once corrected
    sku_impact: dict[str, dict[str, int]] = field(default_factory=dict)  # sku -> channel -> units (non-zero only)

    @property
    def total_drift(self) -> int:
        return sum(drift.drift for drift in self.drifts)

    @property
    def absolute_drift(self) -> int:
        return sum(abs(drift.drift) for drift in self.drifts)


def run_id(export_digest: str, as_of_ms: int) -> str:
    """The run's id: the same export and as-of time give the same id, hence the same correction event ids (a
    repeated --apply is then a duplicate the engine ignores within its window)."""
    return hashlib.sha256(f"{export_digest}:{as_of_ms}".encode()).hexdigest()[:16]


def correction_id(run: str, line: int) -> str:
    return f"reconcile-{run}-{line}"


def stamped_up_to(as_of_ms: int):
    """The entries that make the positions as of `as_of_ms`: every one stamped at or before it, and every policy
    change whatever its time (channel values follow the latest valid policy on the ledger)."""

    def keep(event) -> bool:
        return type(event) is PolicyChange or event.event_time <= as_of_ms

    return keep


def advance_to(engines: dict[int, PartitionEngine], as_of_ms: int) -> None:
    """Bring every partition's clock to the as-of time with a clock tick after its last entry: what expires or
    falls silent by then has, before positions are read and corrections applied (which then move no clock)."""
    for engine in engines.values():
        engine.apply(ClockTick(as_of_ms), engine.state.last_position + 1)


def compare(engines: dict[int, PartitionEngine], partitions: int, rows: Iterable[ExportRow | BadRow],
            on_row=None, only: frozenset[int] | None = None, with_bad_rows: bool = True) -> Comparison:
    """Every export row against the service's position. `engines`: ledger partition -> engine (a partition with
    no engine had no entry up to the as-of time). `on_row(rows read)` is called every 10,000 rows. A comparison
    of some partitions only (`only`, one of several processes) leaves the other rows out, and the bad rows too
    unless `with_bad_rows`; `merge` adds such comparisons up."""
    result = Comparison()
    partition_of: dict[str, int] = {}
    stores = {partition: engine.store for partition, engine in engines.items()}
    drifts = result.drifts
    read = 0
    for row in rows:
        read += 1
        if on_row is not None and read % 10_000 == 0:
            on_row(read)
        if type(row) is BadRow:
            if with_bad_rows:
                result.rows += 1
                result.bad_rows.append(row)
            continue
        sku = row.sku
        partition = partition_of.get(sku)
        if partition is None:
            partition = partition_of[sku] = ledger_partition(sku, partitions)
        if only is not None and partition not in only:
            continue
        result.rows += 1
        store = stores.get(partition)
        state = None if store is None else store.get_sku_state(sku)
        position = None if state is None else state.positions.get(row.location)
        service = 0 if position is None else getattr(position, _BUCKET_FIELD[row.bucket])
        result.compared += 1
        if service == row.on_hand:
            result.agreeing += 1
            continue
        snapshot = None if position is None else (position.sellable, position.damaged, position.quarantine,
                                                   position.in_transit, position.reserved)
        drifts.append(Drift(row.line, sku, row.location, row.bucket, row.on_hand, service, snapshot))
    drifts.sort(key=lambda drift: (-abs(drift.drift), drift.sku, drift.location, drift.bucket))
    return result


def merge(parts: Iterable[Comparison]) -> Comparison:
    """One comparison from those of disjoint sets of partitions (impacts included)."""
    merged = Comparison()
    for part in parts:
        merged.rows += part.rows
        merged.compared += part.compared
        merged.agreeing += part.agreeing
        merged.drifts += part.drifts
        merged.bad_rows += part.bad_rows
        merged.impact.update(part.impact)
        merged.sku_impact.update(part.sku_impact)
    merged.drifts.sort(key=lambda drift: (-abs(drift.drift), drift.sku, drift.location, drift.bucket))
    merged.bad_rows.sort(key=lambda bad: bad.line)
    for channel in [channel for channel, units in merged.impact.items() if not units]:
        del merged.impact[channel]
    merged.sku_impact = dict(sorted(merged.sku_impact.items()))
    return merged


def corrections(drifts: Iterable[Drift], run: str, as_of_ms: int) -> list[StockMovement]:
    """The CYCLE_COUNT movements that set every drifting SELLABLE position to the export's count at the as-of time,
    in export line order."""
    return [
        StockMovement(correction_id(run, drift.line), drift.sku, drift.location, as_of_ms, RECONCILE_SOURCE,
                      MovementType.CYCLE_COUNT, quantity=drift.export_on_hand)
        for drift in sorted(drifts, key=lambda drift: drift.line) if drift.correctable
    ]


def correct(engines: dict[int, PartitionEngine], partitions: int, movements: Iterable[StockMovement],
            comparison: Comparison) -> None:
    """Apply `movements` through the engines (after the ledger's last entry of each partition) and record in
    `comparison` what each channel, and each SKU's channel keys, moved by. Changes the engines' states."""
    by_sku: dict[str, list[StockMovement]] = {}
    for movement in movements:
        by_sku.setdefault(movement.sku, []).append(movement)
    for sku in sorted(by_sku):
        partition = ledger_partition(sku, partitions)
        engine = engines.get(partition)
        if engine is None:
            continue  # not possible for a ledger that held a policy: every partition has one
        state = engine.store.get_sku_state(sku)
        before = {} if state is None else {key: last.quantity for key, last in state.published.items()}
        after = dict(before)
        for movement in by_sku[sku]:
            position = engine.state.last_position + 1
            for output in engine.apply(movement, position):
                if type(output) is ChannelAvailability:
                    after[(output.channel, output.location)] = output.quantity
        moved: Counter = Counter()
        for key, quantity in after.items():
            moved[key[0]] += quantity - before.get(key, 0)
        changes = {channel: units for channel, units in sorted(moved.items()) if units}
        if changes:
            comparison.sku_impact[sku] = changes
            comparison.impact.update(changes)
    for channel in [channel for channel, units in comparison.impact.items() if not units]:
        del comparison.impact[channel]  # SKUs that cancel out: the channel does not move


def drift_exception(drift: Drift, as_of_ms: int, run: str) -> InventoryException:
    """The RECONCILIATION_DRIFT record of one drift (docs/CONTRACT.md, Inventory exceptions)."""
    action = "corrected by a cycle count with --apply" if drift.correctable else "reported only: no movement sets it"
    return InventoryException(
        ExceptionKind.RECONCILIATION_DRIFT, drift.sku, drift.location, PositionBucket(drift.bucket), drift.drift,
        drift.position, None, None, None, as_of_ms,
        f"reconcile run {run}: the system of record holds {drift.export_on_hand}, the service "
        f"{drift.service_on_hand} (export line {drift.line}); {action}",
    )
