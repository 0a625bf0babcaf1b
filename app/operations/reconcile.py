"""`availability reconcile`, the Kafka side: the ledger read up to its end and applied as of a time, the export
compared (app/operations/drift.py), the drifts published on `inventory-exceptions`, and with `apply` the
corrections written to `source.stock-movements` as CYCLE_COUNT movements of source `reconcile`.

Positions as of T come from every ledger entry whose event time is at or before T, applied in ledger order on
fresh in-memory state (app/replay/applying.py); policy changes are applied whatever their time, so channel values
follow the latest valid policy on the ledger. The `sku-state` changelog cannot answer "as of T": a later count
has overwritten what the service held then. A ledger partition that lost its first records to retention cannot
give a position at all, and the run is refused.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.engine import event_to_record
from app.errors import UserError
from app.kafka.producing import produce_or_wait
from app.operations.drift import (
    Comparison,
    advance_to,
    compare,
    correct,
    corrections,
    drift_exception,
    run_id,
    stamped_up_to,
)
from app.operations.export import read_export
from app.replay.applying import LedgerApplier
from app.replay.reading import PartitionsReader
from app.replay.replay import output_producer
from app.wire.serialization import AvroCodec
from app.wire.topics import INVENTORY_EXCEPTIONS, LEDGER, STOCK_MOVEMENTS

if TYPE_CHECKING:
    from app.settings import Settings

CORRECTIONS_PER_RECORD = 500  # movements per StockMovementBatch record (about 60 KB, far below the record limit)


class ReconcileError(UserError):
    """Reconciliation cannot be done (ledger trimmed by retention, records not delivered); the message says why."""


@dataclass
class ReconcileRun:
    run: str
    as_of_ms: int
    comparison: Comparison
    ledger_entries: int = 0
    ledger_partitions: int = 0
    exceptions_published: int = 0
    corrections_written: int = 0
    seconds: float = 0.0
    ledger_seconds: float = 0.0  # reading and applying the ledger
    export_seconds: float = 0.0  # reading and comparing the export, and the impact


Progress = Callable[[str, int, int], None]
"""(stage, done, expected): `ledger` in records read, `export` in rows read (expected: the file's bytes, so 0)."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def positions_as_of(settings: Settings, bootstrap_servers: str, codec: AvroCodec, as_of_ms: int,
                    on_progress: Progress | None = None) -> tuple[LedgerApplier, int]:
    """(the applier holding every partition's engine as of `as_of_ms`, the ledger's partition count)."""
    applier = LedgerApplier(codec.serde(LEDGER), frozenset(settings.channels), settings.engine_limits,
                            keep=stamped_up_to(as_of_ms))
    with PartitionsReader(bootstrap_servers, LEDGER.name, settings=settings, through_start_ends=True) as reader:
        trimmed = sorted(partition for partition, low in reader.low.items() if low > 0)
        if trimmed:
            where = ", ".join(f"{partition} (starts at offset {reader.low[partition]})" for partition in trimmed)
            raise ReconcileError(f"ledger partitions {where} lost their first records to retention: positions "
                                 "cannot be rebuilt from them; keep the ledger (AVAILABILITY_TOPIC_RETENTION_MS=-1)")
        expected, done = reader.expected_records, 0
        for batch in reader.batches():
            for message in batch:
                applier.apply(message.partition(), message.offset(), message.value(), collect=False)
            done += len(batch)
            if on_progress is not None:
                on_progress("ledger", done, max(expected, done))
        advance_to(applier.engines, as_of_ms)
        return applier, len(reader.starts)


def reconcile(settings: Settings, bootstrap_servers: str, export: Path, as_of_ms: int, apply: bool,
              on_progress: Progress | None = None) -> ReconcileRun:
    started = time.monotonic()
    codec = AvroCodec(settings)
    run = run_id(file_digest(export), as_of_ms)
    applier, partitions = positions_as_of(settings, bootstrap_servers, codec, as_of_ms, on_progress)
    ledger_done = time.monotonic()
    progress = None if on_progress is None else (lambda rows: on_progress("export", rows, 0))
    comparison = compare(applier.engines, partitions, read_export(export), on_row=progress)
    movements = corrections(comparison.drifts, run, as_of_ms)
    correct(applier.engines, partitions, movements, comparison)
    result = ReconcileRun(run, as_of_ms, comparison, applier.events, partitions,
                          ledger_seconds=ledger_done - started, export_seconds=time.monotonic() - ledger_done)
    producer = output_producer(bootstrap_servers, settings)
    failures: list[str] = []

    def on_delivery(error, message) -> None:
        if error is not None and len(failures) < 5:
            failures.append(f"{message.topic()}: {error}")

    encode = codec.serde(INVENTORY_EXCEPTIONS).encode
    for drift in comparison.drifts:
        record = drift_exception(drift, as_of_ms, run)
        produce_or_wait(producer, INVENTORY_EXCEPTIONS.name, encode(record.to_record()), record.key.encode(),
                        on_delivery=on_delivery)
        result.exceptions_published += 1
    if apply:
        encode_batch = codec.serde(STOCK_MOVEMENTS).encode
        key = f"reconcile-{run}".encode()
        for start in range(0, len(movements), CORRECTIONS_PER_RECORD):
            chunk = movements[start:start + CORRECTIONS_PER_RECORD]
            value = encode_batch({"movements": [event_to_record(movement)[1] for movement in chunk]})
            produce_or_wait(producer, STOCK_MOVEMENTS.name, value, key, on_delivery=on_delivery)
            result.corrections_written += len(chunk)
    remaining = producer.flush(60)
    if remaining or failures:
        raise ReconcileError(f"{remaining} records not delivered; first errors: {'; '.join(failures) or 'none'}")
    result.seconds = time.monotonic() - started
    return result
