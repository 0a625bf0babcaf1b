"""Whether a worker may answer for its table partitions now: partitions assigned, no rebalance or restore under
way. The HTTP API (`/ready`, 503 answers) and the metrics (`availability_ready`) read the same rule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from faust.types import TP


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str
    active_partitions: tuple[int, ...] = ()


def readiness_of(
    *, active_partitions: Sequence[int], recovery_completed: bool, in_recovery: bool, rebalancing: bool
) -> Readiness:
    """Ready means: some table partition is assigned here, and no rebalance or restore is under way."""
    partitions = tuple(sorted(set(active_partitions)))
    if rebalancing:
        return Readiness(False, "rebalancing", partitions)
    if in_recovery or not recovery_completed:
        return Readiness(False, "recovering tables from their changelogs", partitions)
    if not partitions:
        return Readiness(False, "no partitions assigned", partitions)
    return Readiness(True, "ready", partitions)


def worker_readiness(app) -> Readiness:
    recovery = app.tables.recovery
    return readiness_of(
        active_partitions=[tp.partition for tp in recovery.active_tps],
        recovery_completed=recovery.completed.is_set(),
        in_recovery=bool(getattr(recovery, "in_recovery", False)),
        rebalancing=bool(app.rebalancing),
    )


def partition_unavailable_reason(app, changelog_topic: str, partition: int) -> str | None:
    """None when this worker may answer from `partition` of the table; otherwise why not (HTTP 503)."""
    if TP(changelog_topic, partition) not in app.tables.recovery.active_tps:
        return f"partition {partition} is not assigned to this worker (assignment is changing)"
    readiness = worker_readiness(app)
    return None if readiness.ready else f"partition {partition}: {readiness.reason}"
