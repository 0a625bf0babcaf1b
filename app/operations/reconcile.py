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
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING

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
    merge,
    run_id,
    stamped_up_to,
)
from app.operations.export import read_export
from app.replay.applying import LedgerApplier
from app.replay.reading import PartitionsReader, consumer_for, partition_count
from app.replay.replay import output_producer
from app.service.gc_pauses import frozen_survivors
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
"""(stage, done, expected): `ledger` and the ledger records read so far (expected unknown: 0)."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def positions_as_of(settings: Settings, bootstrap_servers: str, codec: AvroCodec, as_of_ms: int,
                    partitions: list[int] | None = None, on_records: Callable[[int], None] | None = None
                    ) -> LedgerApplier:
    """The applier holding the engines of the ledger `partitions` (None: all) as of `as_of_ms`, to be closed after
    use. `on_records(n)` after every batch of n ledger records read."""
    applier = LedgerApplier(codec.serde(LEDGER), frozenset(settings.channels), settings.engine_limits,
                            keep=stamped_up_to(as_of_ms), kept_on_disk=True)
    try:
        _read_ledger(applier, bootstrap_servers, settings, partitions, on_records)
        advance_to(applier.engines, as_of_ms)
    except BaseException:
        applier.close()
        raise
    return applier


def _read_ledger(applier: LedgerApplier, bootstrap_servers: str, settings: Settings, partitions: list[int] | None,
                 on_records: Callable[[int], None] | None) -> None:
    starts = None if partitions is None else dict.fromkeys(partitions, OFFSET_BEGINNING)
    with PartitionsReader(bootstrap_servers, LEDGER.name, starts, settings=settings, through_start_ends=True) as reader:
        trimmed = sorted(partition for partition, low in reader.low.items() if low > 0)
        if trimmed:
            where = ", ".join(f"{partition} (starts at offset {reader.low[partition]})" for partition in trimmed)
            raise ReconcileError(f"ledger partitions {where} lost their first records to retention: positions "
                                 "cannot be rebuilt from them; keep the ledger (AVAILABILITY_TOPIC_RETENTION_MS=-1)")
        for batch in reader.batches():
            for message in batch:
                applier.apply(message.partition(), message.offset(), message.value(), collect=False)
            if on_records is not None:
                on_records(len(batch))


@dataclass
class PartitionsFound:
    """What one process found for its share of the ledger partitions."""

    comparison: Comparison
    ledger_entries: int
    ledger_seconds: float
    export_seconds: float


def reconcile_partitions(settings: Settings, bootstrap_servers: str, rows: list, as_of_ms: int, run: str,
                         partitions: list[int], partition_count: int, with_bad_rows: bool) -> PartitionsFound:
    """The ledger of `partitions` as of the time, the export rows of their SKUs compared, the impacts computed."""
    started = time.monotonic()
    on_records = _count_records_read if _RECORDS_READ is not None else None
    codec = AvroCodec(settings)
    # the ledger's states are live objects, all of them kept: not the collector's to scan again and again
    with frozen_survivors(), positions_as_of(settings, bootstrap_servers, codec, as_of_ms, partitions,
                                             on_records) as applier:
        ledger_done = time.monotonic()
        comparison = compare(applier.engines, partition_count, rows, only=frozenset(partitions),
                             with_bad_rows=with_bad_rows)
        correct(applier.engines, partition_count, corrections(comparison.drifts, run, as_of_ms), comparison)
    return PartitionsFound(comparison, applier.events, ledger_done - started, time.monotonic() - ledger_done)


_RECORDS_READ = None  # a shared counter of ledger records read, inherited by the forked processes
_EXPORT_ROWS: list = []  # the export's rows, read once before the fork and inherited (copy on write)


def _reconcile_share(*job) -> PartitionsFound:
    return reconcile_partitions(settings=job[0], bootstrap_servers=job[1], rows=_EXPORT_ROWS, as_of_ms=job[2],
                                run=job[3], partitions=job[4], partition_count=job[5], with_bad_rows=job[6])


def _count_records_read(records: int) -> None:
    with _RECORDS_READ.get_lock():
        _RECORDS_READ.value += records


def reconcile(settings: Settings, bootstrap_servers: str, export: Path, as_of_ms: int, apply: bool,
              on_progress: Progress | None = None, processes: int | None = None) -> ReconcileRun:
    """The whole run. The ledger partitions are shared among up to `processes` forked processes (default: the
    machine's cores): a million-row export against 1.1 million ledger entries took 50 s in one process and 26.5 s
    in two on the benchmark's 2 cores, most of it the ledger's replay (benchmarks/results/operations.md)."""
    global _RECORDS_READ, _EXPORT_ROWS
    started = time.monotonic()
    codec = AvroCodec(settings)
    run = run_id(file_digest(export), as_of_ms)
    consumer = consumer_for(bootstrap_servers, settings)
    try:
        count = partition_count(consumer, LEDGER.name)
    finally:
        consumer.close()
    workers = max(1, min(processes or os.cpu_count() or 1, count))
    shares = [list(range(count))[index::workers] for index in range(workers)]
    jobs = [(settings, bootstrap_servers, as_of_ms, run, share, count, index == 0) for index, share in enumerate(shares)]
    context = multiprocessing.get_context("fork")
    _RECORDS_READ = context.Value("q", 0)
    _EXPORT_ROWS = list(read_export(export))
    export_read = time.monotonic() - started
    try:
        # Processes of their own even when there is one: their big heaps go with them, not freed object by object
        with context.Pool(workers) as pool:
            pending = pool.starmap_async(_reconcile_share, jobs)
            while not pending.ready():
                pending.wait(0.5)
                if on_progress is not None:
                    on_progress("ledger", _RECORDS_READ.value, 0)
            found = pending.get()
    finally:
        _RECORDS_READ, _EXPORT_ROWS = None, []
    comparison = merge(part.comparison for part in found)
    movements = corrections(comparison.drifts, run, as_of_ms)
    result = ReconcileRun(run, as_of_ms, comparison, sum(part.ledger_entries for part in found), count,
                          ledger_seconds=max(part.ledger_seconds for part in found),
                          export_seconds=export_read + max(part.export_seconds for part in found))
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
