"""Shorter pauses of Python's cyclic garbage collector in the worker.

A full (generation 2) collection scans every object the process holds, and a worker holds many: the decoded SKU
states it caches, Faust's and aiokafka's own. In `python -m benchmarks.peak --profile quick --topology split` the
worker's full collections took 240-390 ms each, about every ten seconds, and every one of them stopped the event
loop: they were the live p99. After a full collection, what survived is live and long-lived, so it is frozen
(`gc.freeze`: moved to a generation no collection scans) and the next full collection only scans what came since.
Freezing changes what is freed only for reference cycles among frozen objects (everything else is freed by
reference counting, whatever its generation; the cached states hold no cycles), so every `unfreeze_every_seconds`
the frozen objects go back to the oldest generation and the next full collection scans them all once.

A replay (app/replay/replay.py) and reconcile's ledger pass hold every SKU state they have made as a live object
until they end, so their heap grows all the way and each full collection scanned all of it again, to find next to
nothing (1.9 of 32.4 CPU seconds of a 1,000,000-event replay: docs/PERFORMANCE.md, "A replay's full collections").
They run inside `frozen_survivors()`, which installs the same freezer for their duration.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

UNFREEZE_EVERY_SECONDS = 600.0


class FullCollectionFreezer:
    """A `gc.callbacks` entry: freezes the survivors of each full collection, unfreezes them every
    `unfreeze_every_seconds`."""

    def __init__(self, unfreeze_every_seconds: float = UNFREEZE_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._unfreeze_every = unfreeze_every_seconds
        self._clock = clock
        self._unfrozen_at = clock()
        self.freezes = 0
        self.unfreezes = 0

    def __call__(self, phase: str, info: dict) -> None:
        if phase != "stop" or info.get("generation") != 2:
            return
        now = self._clock()
        if now - self._unfrozen_at >= self._unfreeze_every:
            gc.unfreeze()  # the next full collection scans everything again: cycles among old objects are found
            self._unfrozen_at = now
            self.unfreezes += 1
        else:
            gc.freeze()
            self.freezes += 1


def inside_collection_callback(frame) -> bool:
    """Whether `frame` (where a signal handler interrupted the program) is inside a FullCollectionFreezer's call.
    Python prints and drops what a gc callback raises ("Exception ignored in"), so a handler that raises there
    (SystemExit, KeyboardInterrupt) would not stop anything."""
    while frame is not None:
        if frame.f_code is _FREEZER_CALL:
            return True
        frame = frame.f_back
    return False


_FREEZER_CALL = FullCollectionFreezer.__call__.__code__
SIGNAL_AGAIN_AFTER_SECONDS = 0.05  # a collection callback returns within milliseconds
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def outside_collection_callbacks(handler: Callable) -> Callable:
    """`handler`, run where what it raises is not dropped: a signal that interrupts the freezer's callback is sent
    again once the callback has returned (a replay stopped by SIGTERM went on to the end of its quiet period:
    docs/RELIABILITY.md, bug 8)."""
    def handle(signum: int, frame) -> None:
        if inside_collection_callback(frame):
            threading.Timer(SIGNAL_AGAIN_AFTER_SECONDS, os.kill, (os.getpid(), signum)).start()
            return
        handler(signum, frame)

    handle.wrapped = handler
    return handle


@contextmanager
def _signal_handlers_outside_collection_callbacks() -> Iterator[None]:
    """For the block, the stopping signals' Python handlers (SIGTERM, SIGINT) wrapped by outside_collection_callbacks;
    only in the main thread, where handlers are set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wrapped = {}
    for signum in STOPPING_SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler) and not hasattr(handler, "wrapped"):
            wrapped[signum] = outside_collection_callbacks(handler)
            signal.signal(signum, wrapped[signum])
    try:
        yield
    finally:
        for signum, handle in wrapped.items():
            if signal.getsignal(signum) is handle:  # not replaced meanwhile
                signal.signal(signum, handle.wrapped)


def install() -> FullCollectionFreezer:
    freezer = FullCollectionFreezer()
    gc.callbacks.append(freezer)
    return freezer


@contextmanager
def frozen_survivors() -> Iterator[FullCollectionFreezer]:
    """The freezer, installed for the duration of the block; then removed, and what it froze unfrozen (unless
    something was frozen before the block: that is the caller's, and stays so). Meanwhile SIGTERM's and SIGINT's
    handlers are run outside its callback (outside_collection_callbacks)."""
    frozen_before = gc.get_freeze_count()
    freezer = FullCollectionFreezer()
    gc.callbacks.append(freezer)
    try:
        with _signal_handlers_outside_collection_callbacks():
            yield freezer
    finally:
        gc.callbacks.remove(freezer)
        if frozen_before == 0:
            gc.unfreeze()
