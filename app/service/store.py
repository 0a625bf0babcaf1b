"""The engine's StateStore for one ledger partition and one micro-batch, backed by the availability tables.

Reads go through to the tables once per key per batch and are kept as live objects; writes stay in memory
(write-back) until `write_back()`, which the availability agent calls only after every record of the batch has
been acknowledged by the broker. One table write (and one changelog record) per changed key per batch, however
many events touched it.

Faust tables read and write the partition of the *current event*: the caller must make an event of this
partition current (see app.service.availability) around `read`s that miss the cache and around `write_back()`.
"""

from __future__ import annotations

from collections.abc import Iterator

import faust

from app.engine import (
    PartitionState,
    SkuState,
    decode_partition_state,
    decode_sku_state,
    encode_partition_state,
    encode_sku_state,
)
from app.topics import ledger_partition
from tables.state import AvailabilityTables, partition_state_key


class BatchStateStore:
    """StateStore (app.engine.store) over the tables for ledger partition `partition`, for one batch."""

    def __init__(self, partition: int, tables: AvailabilityTables) -> None:
        self.partition = partition
        self._tables = tables
        self._sku_states: dict[str, SkuState | None] = {}
        self._dirty_skus: set[str] = set()
        self._partition_state: PartitionState | None = None
        self._partition_state_loaded = False
        self._partition_state_dirty = False

    # -- StateStore -------------------------------------------------------------------------------------------

    def get_sku_state(self, sku: str) -> SkuState | None:
        try:
            return self._sku_states[sku]
        except KeyError:
            value = self._tables.sku_state.get(sku.encode())
            state = None if value is None else decode_sku_state(value)
            self._sku_states[sku] = state
            return state

    def put_sku_state(self, state: SkuState) -> None:
        self._sku_states[state.sku] = state
        self._dirty_skus.add(state.sku)

    def get_partition_state(self) -> PartitionState | None:
        if not self._partition_state_loaded:
            value = self._tables.partition_state.get(partition_state_key(self.partition))
            self._partition_state = None if value is None else decode_partition_state(value)
            self._partition_state_loaded = True
        return self._partition_state

    def put_partition_state(self, state: PartitionState) -> None:
        self._partition_state = state
        self._partition_state_loaded = True
        self._partition_state_dirty = True

    def skus(self) -> list[str]:
        """Every SKU with a state in this partition (stored or created in this batch), sorted."""
        known = {sku for sku, state in self._sku_states.items() if state is not None}
        known.update(self._stored_skus())
        return sorted(known)

    # -- write-back -------------------------------------------------------------------------------------------

    @property
    def is_dirty(self) -> bool:
        return bool(self._dirty_skus) or self._partition_state_dirty

    def dirty_writes(self) -> list[tuple[faust.Table, bytes, bytes]]:
        """(table, key, value) of every changed value, SKUs in sorted order and the partition state last."""
        writes: list[tuple[faust.Table, bytes, bytes]] = []
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

    def _stored_skus(self) -> Iterator[str]:
        data = self._tables.sku_state.data
        # Fast path on RocksDB: the partition's own database holds exactly this partition's SKUs.
        db_for_partition = getattr(data, "_db_for_partition", None)
        visible_keys = getattr(data, "_visible_keys", None)
        if db_for_partition is not None and visible_keys is not None:
            for key in visible_keys(db_for_partition(self.partition)):
                yield key.decode() if isinstance(key, bytes) else key
            return
        # Any other store (memory:// in agent tests): a SKU's partition is the ledger's partitioner.
        for key in data.keys():
            sku = key.decode() if isinstance(key, bytes) else key
            if ledger_partition(sku, self._tables.partitions) == self.partition:
                yield sku
