"""HTTP requests waiting for the decision on the reservation command they wrote (POST/DELETE /reservations).

The view that writes a command registers a future under the command's event id (unique per request) before it
writes; the availability stage, once a batch's records are acknowledged and its table values written, hands the
batch's reservation decisions to `resolve()`. A command's own decision carries the command's event id and
reservation id, and is never EXPIRED (expiries that the same entry's clock causes carry its event id too, so they
are skipped). A decision nobody waits for costs a dict lookup; a waiter whose decision never comes here (the
partition moved to another worker, the pipeline is stopped) is left to its timeout (HTTP 504) and discarded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from app.engine import ReservationDecision, ReservationOutcome


class DecisionWaiters:
    def __init__(self) -> None:
        self._waiting: dict[str, tuple[str, asyncio.Future]] = {}

    def __bool__(self) -> bool:
        return bool(self._waiting)

    def __len__(self) -> int:
        return len(self._waiting)

    def expect(self, event_id: str, reservation_id: str) -> asyncio.Future:
        """A future for the decision on the command `event_id`; register it BEFORE writing the command."""
        future = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = (reservation_id, future)
        return future

    def discard(self, event_id: str) -> None:
        self._waiting.pop(event_id, None)

    def resolve(self, decisions: Iterable[ReservationDecision]) -> int:
        """Complete the futures of these decisions' commands; returns how many were waited for."""
        resolved = 0
        for decision in decisions:
            entry = self._waiting.get(decision.event_id)
            if entry is None or entry[0] != decision.reservation_id or decision.outcome is ReservationOutcome.EXPIRED:
                continue
            del self._waiting[decision.event_id]
            future = entry[1]
            if future.done():  # its request gave up (timeout) in the same instant
                continue
            loop = future.get_loop()
            if _running_loop() is loop:
                future.set_result(decision)
            else:  # the web server runs in a thread of its own (Faust's web_in_thread)
                loop.call_soon_threadsafe(_set_result, future, decision)
            resolved += 1
        return resolved


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _set_result(future: asyncio.Future, decision: ReservationDecision) -> None:
    if not future.done():
        future.set_result(decision)
