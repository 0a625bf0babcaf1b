"""The engine's bounds that can change an answer, each sized in event time (docs/RULES.md, "Idempotency").

They are inputs of the rules like the policy: a replay gives the live output only with the same limits, which is
why the service and replay both take them from the same settings (app.settings). Nothing here reads a wall clock:
every bound is measured on the partition clock (the maximum event time applied in the ledger partition) or, for
the future bound, on the `ingest_time` the ingest stage wrote into the ledger record.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class EngineLimits:
    duplicate_window_ms: int = DAY_MS
    """An event id seen on a SKU is a duplicate while the partition clock is at most this far past the first copy's
    event time (source systems that send an event twice). Repeats of a ledger entry (the service's own redeliveries)
    are recognised by source position, with no window."""

    reservation_retention_ms: int = 7 * DAY_MS
    """A finished or refused reservation id keeps its answer while the partition clock is at most this far past the
    moment it finished; a RESERVE of that id later is a new reservation."""

    max_event_time_skew_ms: int = 5 * 60_000
    """An event stamped more than this after its ledger record's `ingest_time` is refused (EVENT_TIME_IN_FUTURE)
    and moves no clock: one bad timestamp must not expire every reservation of a partition."""

    def __post_init__(self) -> None:
        for name in ("duplicate_window_ms", "reservation_retention_ms", "max_event_time_skew_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


DEFAULT_LIMITS = EngineLimits()
