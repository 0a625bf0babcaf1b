"""Recovery watchdog: a table restore that makes no progress for a bounded time ends the worker, loudly.

Faust restores a table partition by reading its changelog up to the high watermark it saw at the rebalance, and
waits for that without a deadline. Known ways for it to wait forever: a changelog whose records below the high
watermark cannot be read (segments deleted by retention while restoring, faust-streaming #651; aborted
transactions, #47), stream buffers full during recovery (#74), a fetcher that never starts (#21), or a broker
that stopped answering. Faust then logs "Still fetching changelog topics for recovery" or "No event received for
active tp" warnings forever while `/ready` stays 503 and nothing is processed.

The watchdog samples the restore positions every second or so, from the moment the app starts. If recovery is in progress and no active changelog
partition moved for `recovery_stall_timeout_seconds`, it logs one CRITICAL message for the operator (which
partitions, where they stopped, what to check) and ends the process with EXIT_RECOVERY_STALLED, so the supervisor
restarts it and the restore starts over from a fresh rebalance, instead of a worker that hangs silently.

`RecoveryStallDetector` is the rule, plain Python and unit-tested; `RecoveryWatchdog` runs it inside the app.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mode import Service

if TYPE_CHECKING:
    from app.service.runtime import AvailabilityService

logger = logging.getLogger(__name__)

# Exit status of a worker whose table restore stalled (EX_TEMPFAIL: a restart may succeed).
EXIT_RECOVERY_STALLED = 75

TopicPartition = tuple[str, int]


@dataclass(frozen=True)
class RestoreProgress:
    """A worker's table restore at one moment: per active changelog partition, the offset read so far and the
    offset it must reach."""

    in_recovery: bool
    positions: Mapping[TopicPartition, int]
    targets: Mapping[TopicPartition, int]

    def remaining(self) -> dict[TopicPartition, int]:
        return {tp: max(0, target - self.positions.get(tp, -1)) for tp, target in self.targets.items()}


@dataclass(frozen=True)
class StalledRestore:
    stalled_seconds: float
    progress: RestoreProgress

    def operator_message(self, timeout_setting: str = "AVAILABILITY_RECOVERY_STALL_TIMEOUT_SECONDS") -> str:
        waiting = [
            f"{topic}[{partition}] at offset {self.progress.positions.get((topic, partition), -1)} of "
            f"{target} ({remaining} to go)"
            for (topic, partition), target in sorted(self.progress.targets.items())
            if (remaining := self.progress.remaining()[(topic, partition)]) > 0
        ]
        where = "; ".join(waiting) if waiting else "no partition has records left, yet recovery did not end"
        return (
            f"table recovery made no progress for {self.stalled_seconds:.0f}s (bound: {timeout_setting}): {where}. "
            f"Ending the worker (exit {EXIT_RECOVERY_STALLED}) so that a restart retries the restore. If it stalls "
            "again: check that the broker answers and still holds those changelog offsets (retention, deleted "
            "segments), and the broker's log; the worker's local state (AVAILABILITY_DATA_DIR) does not need "
            "deleting, the changelog is the source of truth."
        )


class RecoveryStallDetector:
    """Fed RestoreProgress samples with a monotonic time; reports a stall once recovery has been in progress with
    no position moving for `timeout_seconds`. Leaving recovery resets it."""

    def __init__(self, timeout_seconds: float) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self.timeout_seconds = timeout_seconds
        self._last_positions: dict[TopicPartition, int] | None = None
        self._last_progress_at: float | None = None

    def observe(self, now: float, progress: RestoreProgress) -> StalledRestore | None:
        if not progress.in_recovery:
            self._last_positions, self._last_progress_at = None, None
            return None
        positions = dict(progress.positions)
        if self._last_progress_at is None or positions != self._last_positions:
            self._last_positions, self._last_progress_at = positions, now
            return None
        stalled = now - self._last_progress_at
        if stalled >= self.timeout_seconds:
            return StalledRestore(stalled, progress)
        return None


def read_restore_progress(app) -> RestoreProgress:
    """The restore state of a running Faust app (its Recovery service keeps no public accessor for offsets)."""
    recovery = app.tables.recovery
    positions = {(tp.topic, tp.partition): offset for tp, offset in recovery.active_offsets.items() if offset is not None}
    targets = {
        (tp.topic, tp.partition): highwater
        for tp, highwater in recovery.active_highwaters.items()
        if highwater is not None and tp in recovery.active_tps
    }
    return RestoreProgress(bool(getattr(recovery, "in_recovery", False)), positions, targets)


def end_worker_for_stalled_restore(stall: StalledRestore) -> None:
    logger.critical("%s", stall.operator_message())
    logging.shutdown()
    os._exit(EXIT_RECOVERY_STALLED)


def sample_interval(timeout_seconds: float) -> float:
    """Sample often enough to stop within ~20% of the bound, but not more than once a second."""
    return max(0.2, min(1.0, timeout_seconds / 5))


class RecoveryWatchdog(Service):
    """Samples the app's restore every `sample_interval` seconds from the moment the app starts.

    A mode Service added as a dependency of the app, not an `@app.timer`: Faust starts app timers and tasks only
    after the FIRST table recovery has completed, which is exactly the wait that must not hang silently."""

    def __init__(self, app, detector: RecoveryStallDetector, **kwargs) -> None:
        super().__init__(**kwargs)
        self.app = app
        self.detector = detector
        self.interval = sample_interval(detector.timeout_seconds)

    @Service.task
    async def _watch_table_recovery(self) -> None:
        while not self.should_stop:
            await self.sleep(self.interval)
            try:
                progress = read_restore_progress(self.app)
            except AttributeError:  # the table manager is not set up yet
                continue
            stall = self.detector.observe(time.monotonic(), progress)
            if stall is not None:
                end_worker_for_stalled_restore(stall)


def register_recovery_watchdog(service: AvailabilityService) -> RecoveryWatchdog:
    watchdog = RecoveryWatchdog(
        service.app, RecoveryStallDetector(service.settings.recovery_stall_timeout_seconds)
    )
    service.app.add_dependency(watchdog)  # started and stopped with the app, before its first recovery
    return watchdog
