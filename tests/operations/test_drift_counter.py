"""The workers' count of reconciliation drifts: which inventory-exceptions records count, and what is exported."""

from __future__ import annotations

from app.engine import ExceptionKind, InventoryException, PositionBucket
from app.operations.drift import Drift, drift_exception
from app.service.drift_counter import drift_of
from app.service.metrics import ServiceMetrics
from app.settings import Settings
from app.wire.serialization import AvroCodec
from app.wire.topics import INVENTORY_EXCEPTIONS


def test_only_reconciliation_drifts_count_with_their_bucket_and_units():
    codec = AvroCodec(Settings())
    serde = codec.serde(INVENTORY_EXCEPTIONS)
    drift = drift_exception(Drift(4, "SKU-A", "S2", "DAMAGED", 2, 5, (1, 5, 0, 0, 0)), 1_000, "run")
    negative = InventoryException(ExceptionKind.NEGATIVE_STOCK, "SKU-A", "S1", PositionBucket.SELLABLE, -1,
                                  (-1, 0, 0, 0, 0), "e1", 0, 0, 1, "a sale before its receipt")
    assert drift_of(serde.decode(serde.encode(drift.to_record())).value) == ("DAMAGED", -3)
    assert drift_of(serde.decode(serde.encode(negative.to_record())).value) is None


def test_the_metrics_count_records_and_absolute_units_by_bucket():
    metrics = ServiceMetrics()
    for bucket, units in (("SELLABLE", -3), ("SELLABLE", 3), ("DAMAGED", 2)):
        metrics.reconciliation_drift(bucket, units)
    text = metrics.exposition().decode()
    assert 'availability_reconciliation_drifts_total{bucket="SELLABLE"} 2.0' in text
    assert 'availability_reconciliation_drift_units_total{bucket="SELLABLE"} 6.0' in text
    assert 'availability_reconciliation_drift_units_total{bucket="DAMAGED"} 2.0' in text
