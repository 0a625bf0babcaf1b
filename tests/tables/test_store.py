"""PartitionStateStore: decoded states cached between chunks, written back once per changed key, bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine import PartitionState, SkuState, encode_partition_state, encode_sku_state
from app.engine.positions import ledger_position
from app.engine.state import Position, units_reserved_beyond_sellable
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


def test_reading_beyond_the_limit_drops_an_unchanged_state_at_once_and_keeps_a_changed_one():
    store, table = store_with(["A", "B", "C", "D"], cache_limit=2)
    a = store.get_sku_state("A")
    store.put_sku_state(a)  # changed, not written back
    store.get_sku_state("B")
    store.get_sku_state("C")  # one beyond the limit: B goes, A stays although it is the least recently used
    assert store.cached_sku_state("B") == (False, None)
    assert store.cached_sku_state("A") == (True, a) and store.cached_sku_states == 2
    store.get_sku_state("D")  # beyond again: C, the only unchanged state left, goes
    assert store.cached_sku_state("C") == (False, None) and store.cached_sku_state("A") == (True, a)
    assert [key for _, key, _ in store.dirty_writes()] == [b"A"]  # the change is written back as ever


def test_unchanged_states_behind_many_changed_ones_are_still_dropped():
    store, _ = store_with(["A", "B", "C", "D", "E", "F"], cache_limit=1)
    for sku in ("A", "B", "C", "D"):
        store.put_sku_state(store.get_sku_state(sku))
    store.get_sku_state("E")
    store.get_sku_state("F")  # behind four changed states: E goes all the same
    assert store.cached_sku_state("E") == (False, None) and store.cached_sku_states == 5


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(st.sampled_from(["load", "mutate", "written"]), st.sampled_from("ABCDEF")),
                      max_size=60),
       cache_limit=st.integers(1, 4))
def test_between_write_backs_the_cache_holds_at_most_its_limit_or_its_changed_states_and_the_one_read(
        steps, cache_limit):
    store, _ = store_with(["A", "B", "C", "D"], cache_limit)
    changed: dict[str, SkuState] = {}
    for kind, sku in steps:
        if kind == "written":
            store.written()
            changed.clear()
            continue
        state = store.get_sku_state(sku)
        if kind == "mutate":
            state = state or SkuState(sku)
            state.last_position += 1
            store.put_sku_state(state)
            changed[sku] = state
        assert store.cached_sku_states <= max(cache_limit, len(changed) + 1)  # + 1: the state just read
        for sku, state in changed.items():  # a changed state is never dropped before it is written back
            assert store.cached_sku_state(sku) == (True, state)
    assert sorted(key.decode() for _, key, _ in store.dirty_writes()) == sorted(changed)


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


def exposed_state(sku: str, shelves: list[tuple[int, int]]) -> SkuState:
    state = SkuState(sku)
    state.positions = {f"L{i}": Position(sellable=sellable, reserved=reserved)
                       for i, (sellable, reserved) in enumerate(shelves)}
    return state


def exposure_of_cached(store: PartitionStateStore, skus: list[str]) -> int:
    cached = (store.cached_sku_state(sku) for sku in skus)
    return sum(units_reserved_beyond_sellable(state) for found, state in cached if found and state is not None)


SKUS = ["A", "B", "C", "D"]
shelves = st.lists(st.tuples(st.integers(-3, 5), st.integers(0, 5)), max_size=3)
store_steps = st.lists(
    st.one_of(
        st.tuples(st.just("load"), st.sampled_from(SKUS)),
        st.tuples(st.just("put"), st.sampled_from(SKUS), shelves),
        st.tuples(st.just("mutate"), st.sampled_from(SKUS), shelves),  # the engine's way: change, then put back
        st.tuples(st.just("written")),
        st.tuples(st.just("read")),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(stored=st.lists(shelves, min_size=len(SKUS), max_size=len(SKUS)), steps=store_steps,
       cache_limit=st.integers(1, 4))
def test_the_oversell_exposure_kept_by_the_store_equals_a_walk_over_its_cached_states(stored, steps, cache_limit):
    table = CountingTable()
    for sku, sku_shelves in zip(SKUS[:2], stored):  # two stored SKUs, two created by puts
        table[sku.encode()] = encode_sku_state(exposed_state(sku, sku_shelves))
    store = PartitionStateStore(0, AvailabilityTables(sku_state=table, partition_state=CountingTable(), partitions=1),
                                cache_limit)
    for step in steps:
        if step[0] == "load":
            store.get_sku_state(step[1])
        elif step[0] == "put":
            store.put_sku_state(exposed_state(step[1], step[2]))
        elif step[0] == "mutate":
            state = store.get_sku_state(step[1]) or SkuState(step[1])
            state.positions = exposed_state(step[1], step[2]).positions
            store.put_sku_state(state)
        elif step[0] == "written":
            store.written()
        else:  # a scrape: between two of them, any number of changes and evictions
            assert store.oversell_exposure() == exposure_of_cached(store, SKUS)
    assert store.oversell_exposure() == exposure_of_cached(store, SKUS)


def test_the_oversell_exposure_counts_a_walk_in_sale_after_a_reservation_once():
    store, _ = store_with([])
    state = exposed_state("A", [(1, 3), (-2, 1), (4, 4)])  # 2 beyond at L0, 1 at L1 (nothing sellable), 0 at L2
    store.put_sku_state(state)
    assert store.oversell_exposure() == 3
    assert store.oversell_exposure() == 3  # read again: nothing changed, nothing counted twice
    state.positions["L0"].sellable = 3
    store.put_sku_state(state)
    assert store.oversell_exposure() == 1
