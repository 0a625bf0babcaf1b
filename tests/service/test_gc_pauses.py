"""The worker's garbage-collector setting (app/service/gc_pauses.py): survivors of a full collection are frozen, and
unfrozen again at the interval, so cycles among old objects are still collected."""

from __future__ import annotations

import gc

from app.service.gc_pauses import FullCollectionFreezer, frozen_survivors


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_full_collections_freeze_their_survivors_and_the_interval_unfreezes_them():
    now = [0.0]
    freezer = FullCollectionFreezer(unfreeze_every_seconds=600, clock=lambda: now[0])
    gc.unfreeze()
    gc.callbacks.append(freezer)
    try:
        kept = [Cycle() for _ in range(100)]
        gc.collect(1)  # not a full collection: nothing frozen
        assert gc.get_freeze_count() == 0 and freezer.freezes == 0
        gc.collect()
        assert freezer.freezes == 1 and gc.get_freeze_count() >= len(kept)
        frozen_before = gc.get_freeze_count()
        now[0] = 601.0
        gc.collect()  # past the interval: everything goes back to the oldest generation
        assert freezer.unfreezes == 1 and gc.get_freeze_count() == 0 and frozen_before > 0
        now[0] = 700.0
        dropped = Cycle()
        del dropped  # garbage in a cycle: found by the next full collection, which then freezes the survivors
        assert gc.collect() >= 1
        assert freezer.freezes == 2 and gc.get_freeze_count() > 0
    finally:
        gc.callbacks.remove(freezer)
        gc.unfreeze()


def test_frozen_survivors_freeze_only_inside_the_block_and_leave_a_callers_freeze_alone():
    gc.unfreeze()
    callbacks_before = list(gc.callbacks)
    try:
        with frozen_survivors() as freezer:
            assert freezer in gc.callbacks
            kept = [Cycle() for _ in range(100)]
            gc.collect()
            assert freezer.freezes == 1 and gc.get_freeze_count() >= len(kept)
        assert gc.callbacks == callbacks_before and gc.get_freeze_count() == 0  # what it froze is scanned again
        gc.collect()
        gc.freeze()  # the caller's own freeze: a block inside it must not undo it
        frozen = gc.get_freeze_count()
        with frozen_survivors():
            gc.collect()
        assert gc.callbacks == callbacks_before and gc.get_freeze_count() >= frozen > 0
    finally:
        gc.unfreeze()
