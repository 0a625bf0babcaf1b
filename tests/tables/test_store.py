"""PartitionStateStore: decoded states cached between chunks, written back once per changed key, bounded."""

from __future__ import annotations

from app.engine import PartitionState, SkuState, encode_partition_state, encode_sku_state
from app.engine.positions import ledger_position
from tables.declarations import AvailabilityTables, partition_state_key
from tables.store import PartitionStateStore


class CountingTable(dict):
    """A table stand-in: counts reads, and holds its values in `.data` like a Faust table's store."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.data = self

    def get(self, key, default=None):
        self.reads += 1
        return super().get(key, default)


def store_with(skus: list[str], cache_limit: int = 100) -> tuple[PartitionStateStore, CountingTable]:
    table = CountingTable()
    for sku in skus:
        table[sku.encode()] = encode_sku_state(SkuState(sku))
    tables = AvailabilityTables(sku_state=table, partition_state=CountingTable(), partitions=1)
    store = PartitionStateStore(0, tables, cache_limit)
    table.reads = 0  # opening reads the kept records' bookkeeping (tables.kept_records): count from here
    return store, table


def test_a_state_is_read_and_decoded_once_across_chunks():
    store, table = store_with(["A"])
    first = store.get_sku_state("A")
    store.put_sku_state(first)
    assert [key for _, key, _ in store.dirty_writes()] == [b"A"]
    store.written()
    assert store.get_sku_state("A") is first and table.reads == 1
    assert store.dirty_writes() == []  # nothing changed since the write-back


def test_the_cache_keeps_the_most_recently_used_states_within_its_limit():
    store, table = store_with(["A", "B", "C"], cache_limit=2)
    for sku in ("A", "B", "C", "A"):  # A used last: B is the least recently used
        store.get_sku_state(sku)
    store.written()
    reads = table.reads
    store.get_sku_state("A")
    store.get_sku_state("C")
    assert table.reads == reads  # both kept
    store.get_sku_state("B")
    assert table.reads == reads + 1  # dropped, read again


def test_unknown_skus_are_remembered_as_absent_until_created():
    store, table = store_with([])
    assert store.get_sku_state("X") is None and store.get_sku_state("X") is None and table.reads == 1
    created = SkuState("X")
    store.put_sku_state(created)
    assert store.get_sku_state("X") is created and store.skus() == ["X"]


def test_a_position_counts_as_stored_once_a_partition_state_with_one_is_written():
    store, _ = store_with([])
    assert store.get_partition_state() is None and not store.position_stored
    state = PartitionState(0)
    store.put_partition_state(state)  # no position yet
    store.written()
    assert not store.position_stored
    state.last_position = ledger_position(0)
    store.put_partition_state(state)
    assert not store.position_stored  # changed in memory only
    store.written()
    assert store.position_stored


def test_a_stored_partition_state_with_a_position_is_read_as_stored():
    store, _ = store_with([])
    state = PartitionState(0)
    state.last_position = ledger_position(5, 2)
    store._tables.partition_state[partition_state_key(0)] = encode_partition_state(state)
    assert store.get_partition_state().last_position == ledger_position(5, 2) and store.position_stored


def test_lookups_see_the_live_state_before_it_is_written_back():
    store, table = store_with(["A"])
    assert store.cached_sku_state("A") == (False, None)  # not read yet: the table holds the latest
    state = store.get_sku_state("A")
    state.last_position = ledger_position(9)
    store.put_sku_state(state)
    assert store.cached_sku_state("A") == (True, state)
    assert store.cached_sku_state("unknown") == (False, None)
    store.get_sku_state("unknown")
    assert store.cached_sku_state("unknown") == (True, None)
