"""The workers' count of reconciliation drifts: an agent reads `inventory-exceptions` in the worker group and hands
each RECONCILIATION_DRIFT record (written by `availability reconcile`, docs/OPERATIONS.md) to the observer, which
exports `availability_reconciliation_drifts_total` and `availability_reconciliation_drift_units_total`. Each worker
counts the records of the partitions it is assigned; Prometheus sums the workers. The topic carries few records
(exceptions and drifts, not availability), so a record at a time costs nothing that matters."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.engine import ExceptionKind
from app.wire.serialization import SerializationError
from app.wire.topics import INVENTORY_EXCEPTIONS

if TYPE_CHECKING:
    import faust

    from app.service.runtime import AvailabilityService

logger = logging.getLogger(__name__)
DRIFT = ExceptionKind.RECONCILIATION_DRIFT.value


def drift_of(record: dict) -> tuple[str, int] | None:
    """(bucket, drift units) of a decoded InventoryException when it is a reconciliation drift, else None."""
    if record.get("kind") != DRIFT:
        return None
    return record.get("bucket") or "SELLABLE", int(record.get("quantity") or 0)


def register_drift_counter(service: AvailabilityService, topic: faust.TopicT) -> None:
    serde = service.codec.serde(INVENTORY_EXCEPTIONS)
    observer = service.observer

    @service.app.agent(topic, name="reconciliation-drift-counter")
    async def count_reconciliation_drifts(stream) -> None:
        async for value in stream:
            try:
                drift = drift_of(serde.decode(value).value)
            except (SerializationError, TypeError, ValueError) as error:
                logger.debug("inventory-exceptions record not counted: %s", error)
                continue
            if drift is not None:
                observer.reconciliation_drift(*drift)
