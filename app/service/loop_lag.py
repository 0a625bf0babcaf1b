"""How late the worker's event loop runs what is due: the probe behind `availability_event_loop_lag_seconds`.

Everything of a worker shares one event loop: the availability stage, the group's heartbeats, fetches, the HTTP API.
A stage that holds the loop (a ledger record being applied, a write-back) delays all of them; the stage yields once
it has held the loop `LOOP_HOLD_SECONDS` (app/service/availability.py), between ledger records. The probe sleeps
`PROBE_INTERVAL_SECONDS` at a time and reports how much later than asked it woke: near 0 on an idle loop, the
length of the hold that delayed it otherwise. A mode Service added as a dependency of the app, so it runs from the
worker's start, recovery included (app timers start only after the first recovery).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mode import Service

PROBE_INTERVAL_SECONDS = 0.1  # ten wake-ups a second: far below the cost of anything it measures


class EventLoopLagProbe(Service):
    def __init__(self, report: Callable[[float], None], interval_seconds: float = PROBE_INTERVAL_SECONDS,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.report = report
        self.interval_seconds = interval_seconds

    @Service.task
    async def _probe(self) -> None:
        interval = self.interval_seconds
        while not self.should_stop:
            asked = time.monotonic() + interval
            await asyncio.sleep(interval)
            self.report(max(0.0, time.monotonic() - asked))


def register_event_loop_lag_probe(service) -> EventLoopLagProbe:
    probe = EventLoopLagProbe(service.observer.event_loop_lagged)
    service.app.add_dependency(probe)  # started and stopped with the app
    return probe
