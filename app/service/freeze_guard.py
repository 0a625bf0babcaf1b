"""Freeze guard: a worker whose process was frozen longer than the group session ends itself on waking up.

A process stopped (SIGSTOP, a paused VM or container, heavy swapping) for longer than the session timeout is
evicted from the consumer group and its partitions go to another worker. When it wakes up it does not know that
yet: until its next heartbeat fails, it goes on with the batch it was in and the records it had already fetched,
and writes table values to changelog partitions that now belong to someone else. Those late, older values land
AFTER the new owner's, and the next restore of that partition (a rebalance, a restart) reads them last: the state
goes back in time and the service publishes versions that fork from what it already published (the chaos test
tests/chaos/test_zombie_worker.py showed exactly that). Without Kafka transactions (the embedded broker has none)
nothing fences such a zombie off, so it must stop itself.

A daemon thread ticks every 100 ms. All threads of a frozen process stop together, so on waking up the gap since
the last tick is the freeze. A gap above the bound ends the process at once (crash-only, as kill -9 would: the
delivery design tolerates that), and the write path (`check()`, called before a batch's records are acknowledged
and before its table values are written) refuses to go on if the thread has not run yet since the freeze. The bound
is below the session timeout minus a heartbeat interval, so a worker that wakes up is never one already evicted.
A long CPU-bound batch does not trip it: the ticking thread keeps running (the GIL switches every few ms).

Known gap: records already handed to the producer's I/O task BEFORE the freeze may still go out in the few
milliseconds after waking up (closed for SIGSTOP/SIGCONT by a SIGCONT handler that checks first; open for a
paused VM or container, which gets no signal). Output records among them are byte-identical repeats of what the new owner publishes
(same state, same ledger entries); a changelog value among them could still land after the new owner's. Kafka
transactions would close that gap, but the service refuses `processing_guarantee=exactly_once` (app.settings); the
gap is listed in docs/RELIABILITY.md.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

# Exit status of a worker that found it had been frozen for longer than its group session allows.
EXIT_PROCESS_WAS_FROZEN = 79
TICK_SECONDS = 0.1


class FreezeDetector:
    """The rule, without a thread: `tick(now)` returns the gap since the previous tick when it exceeds the bound."""

    def __init__(self, bound_seconds: float, now: float) -> None:
        if bound_seconds <= 0:
            raise ValueError("bound_seconds must be positive")
        self.bound_seconds = bound_seconds
        self.last_tick = now

    def gap(self, now: float) -> float:
        return now - self.last_tick

    def tick(self, now: float) -> float | None:
        gap, self.last_tick = now - self.last_tick, now
        return gap if gap > self.bound_seconds else None

    def frozen(self, now: float) -> float | None:
        """The gap if the process has been frozen beyond the bound and the ticking thread has not run since."""
        gap = self.gap(now)
        return gap if gap > self.bound_seconds else None


def end_worker_after_freeze(gap: float) -> None:
    logger.critical(
        "this worker was frozen for %.1fs, longer than its consumer-group session allows: its partitions have "
        "moved to another worker, and going on would publish and write table values as a zombie. Ending the "
        "worker (exit %d); a restart rejoins the group and restores its state from the changelogs.",
        gap, EXIT_PROCESS_WAS_FROZEN,
    )
    logging.shutdown()
    os._exit(EXIT_PROCESS_WAS_FROZEN)


class FreezeGuard:
    def __init__(self, bound_seconds: float, clock: Callable[[], float] = time.monotonic,
                 on_freeze: Callable[[float], None] = end_worker_after_freeze) -> None:
        self.detector = FreezeDetector(bound_seconds, clock())
        self._clock = clock
        self._on_freeze = on_freeze
        self._thread: threading.Thread | None = None

    def start(self) -> FreezeGuard:
        self._thread = threading.Thread(target=self._run, name="freeze-guard", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            gap = self.detector.tick(self._clock())
            if gap is not None:
                self._on_freeze(gap)
            time.sleep(TICK_SECONDS)

    def check(self) -> None:
        gap = self.detector.frozen(self._clock())
        if gap is not None:
            self._on_freeze(gap)


_process_guard: FreezeGuard | None = None


def start_process_freeze_guard(bound_seconds: float) -> FreezeGuard:
    """Start the one guard of this worker process (the process is what freezes; app.service.worker calls this from
    the main thread, which runs the event loop)."""
    global _process_guard
    if _process_guard is None:
        _process_guard = FreezeGuard(bound_seconds).start()
        # A process stopped with SIGSTOP is woken by SIGCONT. Python runs this handler in the main thread before
        # any further Python code there, so before the event loop's producer task can send what the batch had
        # already handed to it: the window of the known gap closes for that case (not for a paused VM).
        guard = _process_guard
        signal.signal(signal.SIGCONT, lambda signum, frame: guard.check())
    return _process_guard


def check_not_frozen() -> None:
    """Called on the write path; a no-op where no guard runs (agent tests, tools)."""
    if _process_guard is not None:
        _process_guard.check()
