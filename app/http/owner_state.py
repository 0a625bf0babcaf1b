"""What the owner of a SKU's partition holds for it now: its state, its finished reservations, its partition's state
(the availability stage's live objects first, which may be ahead of the tables between write-backs, never behind),
and the 503 answer when the owner is not here or not ready."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.engine import FinishedReservation, PartitionState, SkuState, decode_partition_state, decode_sku_state
from app.engine.codec import decode_finished
from tables.declarations import partition_state_key
from tables.kept_records import finished_record_key

if TYPE_CHECKING:
    from faust.web import Response, View

    from app.service.runtime import AvailabilityService

RETRY_AFTER_SECONDS = "1"  # recovery of a partition takes seconds; clients should poll, not give up


def current_sku_state(service: AvailabilityService, partition: int, sku: str) -> SkuState | None:
    """The SKU's latest state on its owner: the availability stage's live state when it holds one (ahead of the
    tables between write-backs), else the table's. Raises StateDecodeError for an unreadable table value."""
    store = None if service.live_states is None else service.live_states.live_store(partition)
    if store is not None:
        found, state = store.cached_sku_state(sku)
        if found:
            return state
    value = service.tables.sku_state.get(sku.encode())
    return None if value is None else decode_sku_state(value)


def current_finished(service: AvailabilityService, partition: int, sku: str,
                     reservation_id: str) -> FinishedReservation | None:
    """The owner's record of a finished reservation (live first, as current_sku_state), if the partition clock has
    not passed its retention: what the engine would still answer a repeat with. Raises StateDecodeError."""
    store = None if service.live_states is None else service.live_states.live_store(partition)
    if store is not None:
        finished = store.get_finished(sku, reservation_id)
    else:
        value = service.tables.sku_state.get(finished_record_key(sku, reservation_id))
        finished = None if value is None else decode_finished(value)
    if finished is None:
        return None
    partition_state = current_partition_state(service, partition)
    clock = 0 if partition_state is None else partition_state.clock
    if finished.finished_clock < clock - service.settings.engine_limits.reservation_retention_ms:
        return None
    return finished


def current_partition_state(service: AvailabilityService, partition: int) -> PartitionState | None:
    store = None if service.live_states is None else service.live_states.live_store(partition)
    if store is not None:
        found, state = store.cached_partition_state()
        if found:
            return state
    value = service.tables.partition_state.get(partition_state_key(partition))
    return None if value is None else decode_partition_state(value)


def unavailable(view: View, reason: str) -> Response:
    """503 with Retry-After: the answer exists, but not here and now (restore, rebalance, owner unreachable)."""
    return view.json({"error": reason}, status=503, headers={"Retry-After": RETRY_AFTER_SECONDS})
