"""An engine dropped by its owner goes with its store and states at once, by reference counting: a worker drops its
engines on every rebalance and a replay at its end, and a reference cycle would keep them (in a worker, frozen by
app/service/gc_pauses.py) until the cycle collector scanned them."""

from __future__ import annotations

import gc
import weakref

from app.engine import MemoryStore
from tests.engine.factories import reserve
from tests.engine.test_recovery import entries, run


def test_an_engine_dropped_by_its_owner_is_freed_without_the_cycle_collector():
    store = MemoryStore()
    events = entries() + [reserve("r2", 1, time=2000), reserve("r1", 1, time=2001)]  # r1 again: a finished id
    gc.disable()
    try:
        outputs = run(store, events)  # the engine is made and dropped inside
        assert store.sku_states["SKU1"].reservations  # r2 is still open: the states are there to free
        kept = weakref.ref(store)
        del store
        assert kept() is None
    finally:
        gc.enable()
    assert outputs  # the engine did apply them
