"""The engine's StateStore for one ledger partition, backed by the availability tables, kept between micro-batches.

Reads go through to the tables once per key and are kept as live, decoded objects, so a hot SKU is decoded once and
not once per batch (at most `cache_limit` SKUs: reading one more drops the least recently used, never a changed
one, which stays until it is written back); writes stay
in memory (write-back) until `dirty_writes()`, which the availability agent calls only after every record of the
chunks that changed them has been acknowledged by the broker (after every chunk, or once per write-back interval:
app.service.availability), and `written()` after the table writes. One table write (and one changelog record) per
changed key per write-back, however many events touched it.

The cache holds what the tables hold plus the changes not written back yet, for as long as this worker owns the
partition: the agent drops the store on every rebalance (another worker may have changed the partition meanwhile),
and any failure while applying ends the worker, so states changed in memory and not written back never outlive it
(the ledger records that made them are applied again: app.service.availability).

A state missing from the cache is read straight from the partition's own RocksDB database (one read; Faust's
`table.get` reads twice, to learn whether the key exists and then its value). The partition state is read through
the Faust table, which reads the partition of the *current event*: the caller must make an event of this partition
current (see app.service.availability) around its first read.
"""

from __future__ import annotations

from collections.abc import Iterator

import faust

from app.engine import (
    DEFAULT_LIMITS,
    EngineLimits,
    FinishedReservation,
    PartitionState,
    SkuState,
    decode_partition_state,
    decode_sku_state,
    encode_partition_state,
    encode_sku_state,
)
from app.engine.positions import split_position
from app.engine.state import units_reserved_beyond_sellable
from app.wire.topics import ledger_partition
from tables.declarations import AvailabilityTables, partition_state_key
from tables.kept_records import KeptRecords, PartitionDB, is_kept_record_key

DEFAULT_CACHE_LIMIT = 20_000


def has_position(state: PartitionState | None) -> bool:
    return state is not None and split_position(state.last_position)[0] >= 0


class PartitionStateStore:
    """StateStore (app.engine.store) over the tables for ledger partition `partition`."""

    def __init__(self, partition: int, tables: AvailabilityTables, cache_limit: int = DEFAULT_CACHE_LIMIT,
                 limits: EngineLimits = DEFAULT_LIMITS) -> None:
        self.partition = partition
        self._tables = tables
        self._cache_limit = cache_limit
        self._sku_db = PartitionDB(tables.sku_state.data, partition)
        # seen event ids and finished reservations, beside the SKU states in the same table (tables.kept_records)
        self._kept = KeptRecords(partition, self._sku_db, limits)
        self._sku_states: dict[str, SkuState | None] = {}  # in least recently used order
        self._dirty_skus: set[str] = set()
        self._partition_state: PartitionState | None = None
        self._partition_state_loaded = False
        self._partition_state_dirty = False
        self._position_stored = False  # the tables hold a ledger position of this partition
        # Oversell exposure over the cached states, kept up to date at each read of it: only the SKUs put or loaded
        # since the last read are walked again, so a scrape costs what changed, not what is cached.
        self._exposure_by_sku: dict[str, int] = {}  # non-zero ones only
        self._exposure_total = 0
        self._exposure_unread: set[str] = set()

    # -- StateStore -------------------------------------------------------------------------------------------

    def get_sku_state(self, sku: str) -> SkuState | None:
        states = self._sku_states
        try:
            state = states.pop(sku)
            states[sku] = state  # now the most recently used
            return state
        except KeyError:
            value = self._sku_db.get(sku.encode())
            state = None if value is None else decode_sku_state(value)
            states[sku] = state
            if state is not None:
                self._exposure_unread.add(sku)
            if len(states) > self._cache_limit:
                self._drop_unchanged(sku)
            return state

    def _drop_unchanged(self, read: str) -> None:
        """Drop the least recently used states that hold no change, down to the cache's limit: between two
        write-backs the cache would otherwise hold every SKU read since the last one (about 40% more states than
        its limit in the peak benchmark's live run). A changed state stays until it is written back, and so does
        the one just `read`; each goes to the end of the order, so it is looked at again only once the states read
        after it come before it."""
        states = self._sku_states
        dirty = self._dirty_skus  # all of them in the cache: only a write-back makes a changed state droppable
        limit = self._cache_limit
        for _ in range(len(states)):
            if len(states) <= limit or len(states) - len(dirty) < 2:
                return  # within the limit, or nothing unchanged left but the state just read
            sku = next(iter(states))
            if sku in dirty or sku == read:
                states[sku] = states.pop(sku)
                continue
            self._drop(sku)

    def _drop(self, sku: str) -> None:
        """Forget a cached state that holds no change, and what the oversell exposure counted of it."""
        del self._sku_states[sku]
        self._exposure_total -= self._exposure_by_sku.pop(sku, 0)
        self._exposure_unread.discard(sku)

    def put_sku_state(self, state: SkuState) -> None:
        self._sku_states[state.sku] = state
        self._dirty_skus.add(state.sku)
        self._exposure_unread.add(state.sku)

    def get_partition_state(self) -> PartitionState | None:
        if not self._partition_state_loaded:
            value = self._tables.partition_state.get(partition_state_key(self.partition))
            self._partition_state = None if value is None else decode_partition_state(value)
            self._partition_state_loaded = True
            self._position_stored = has_position(self._partition_state)
        return self._partition_state

    def put_partition_state(self, state: PartitionState) -> None:
        self._partition_state = state
        self._partition_state_loaded = True
        self._partition_state_dirty = True

    def skus(self) -> list[str]:
        """Every SKU with a state in this partition (stored, or created since the last write-back), sorted."""
        known = {sku for sku, state in self._sku_states.items() if state is not None}
        known.update(self._stored_skus())
        return sorted(known)

    def get_seen_event(self, sku: str, event_id: str) -> tuple[int, int] | None:
        return self._kept.get_seen_event(sku, event_id)

    def put_seen_event(self, sku: str, event_id: str, event_time: int, position: int) -> None:
        self._kept.put_seen_event(sku, event_id, event_time, position)

    def get_finished(self, sku: str, reservation_id: str) -> FinishedReservation | None:
        return self._kept.get_finished(sku, reservation_id)

    def put_finished(self, sku: str, finished: FinishedReservation) -> None:
        self._kept.put_finished(sku, finished)

    def forget_before(self, seen_before: int, finished_before: int) -> None:
        self._kept.forget_before(seen_before, finished_before)

    # -- reads of the live states (HTTP lookups) ---------------------------------------------------------------

    def cached_sku_state(self, sku: str) -> tuple[bool, SkuState | None]:
        """(True, the SKU's live state or None for no state) when the SKU is in the cache, else (False, None).
        The live state may be ahead of the tables (not written back yet), never behind them."""
        states = self._sku_states
        if sku in states:
            return True, states[sku]
        return False, None

    def oversell_exposure(self) -> int:
        """Units reserved beyond the sellable units at their location, summed over the SKU states held in memory
        (app.engine.state.units_reserved_beyond_sellable). Walks only the SKUs put or loaded since the last call."""
        by_sku = self._exposure_by_sku
        states = self._sku_states
        total = self._exposure_total
        for sku in self._exposure_unread:
            state = states.get(sku)
            exposure = 0 if state is None else units_reserved_beyond_sellable(state)
            total += exposure - by_sku.pop(sku, 0)
            if exposure:
                by_sku[sku] = exposure
        self._exposure_unread.clear()
        self._exposure_total = total
        return total

    def cached_partition_state(self) -> tuple[bool, PartitionState | None]:
        return self._partition_state_loaded, self._partition_state

    # -- write-back -------------------------------------------------------------------------------------------

    @property
    def is_dirty(self) -> bool:
        return bool(self._dirty_skus) or self._partition_state_dirty or self._kept.is_dirty

    @property
    def cached_sku_states(self) -> int:
        """SKUs whose decoded state is held in memory (a SKU read and found absent counts too: its entry is None)."""
        return len(self._sku_states)

    @property
    def dirty_skus(self) -> int:
        return len(self._dirty_skus)

    @property
    def position_stored(self) -> bool:
        """Whether the tables hold a ledger position for this partition. Without one, a worker that takes the
        partition over cannot tell which ledger records were applied only in memory: write back at once."""
        return self._position_stored

    def dirty_writes(self) -> list[tuple[faust.Table, bytes, bytes | None]]:
        """(table, key, value or None to delete) of every change: the kept records first (they must be in the
        changelog before the SKU states that rely on them, tables.kept_records), then SKUs in sorted order,
        and the partition state last."""
        sku_table = self._tables.sku_state
        writes: list[tuple[faust.Table, bytes, bytes | None]] = [
            (sku_table, key, value) for key, value in self._kept.changelog_writes()
        ]
        for sku in sorted(self._dirty_skus):
            state = self._sku_states[sku]
            assert state is not None  # only put_sku_state marks a SKU dirty
            writes.append((self._tables.sku_state, sku.encode(), encode_sku_state(state)))
        if self._partition_state_dirty and self._partition_state is not None:
            writes.append(
                (
                    self._tables.partition_state,
                    partition_state_key(self.partition),
                    encode_partition_state(self._partition_state),
                )
            )
        return writes

    def written(self) -> None:
        """The dirty values are in the tables: forget that they changed, and keep the cache within its limit."""
        self._kept.written()
        self._dirty_skus.clear()
        if self._partition_state_dirty:
            self._position_stored = has_position(self._partition_state)
        self._partition_state_dirty = False
        states = self._sku_states
        excess = len(states) - self._cache_limit
        if excess > 0:
            for sku in [sku for sku, _ in zip(states, range(excess))]:
                self._drop(sku)

    def _stored_skus(self) -> Iterator[str]:
        data = self._tables.sku_state.data
        # Fast path on RocksDB: the partition's own database holds exactly this partition's SKUs.
        db_for_partition = getattr(data, "_db_for_partition", None)
        visible_keys = getattr(data, "_visible_keys", None)
        if db_for_partition is not None and visible_keys is not None:
            offset_key = getattr(data, "offset_key", None)
            # SKU ids start with a letter or digit: seeking to "0" skips the kept records ("#...") unread
            for key in db_for_partition(self.partition).keys(from_key=b"0"):
                if key != offset_key:
                    yield key.decode()
            return
        # Any other store (memory:// in agent tests): a SKU's partition is the ledger's partitioner.
        for key in data.keys():
            if is_kept_record_key(key):
                continue
            sku = key.decode() if isinstance(key, bytes) else key
            if ledger_partition(sku, self._tables.partitions) == self.partition:
                yield sku
