"""CPU per source event of the ingest stage's own work, on the peak workload's three mixes, in one process.

    python -m benchmarks.ingest_benchmark [--events 30000] [--repeats 3]

For each mix of the peak benchmark (`single`: one event per source record; `bulk`: StockMovementBatch records;
`mixed`: both, as the `peak` runs send them), the workload's source records are generated and encoded as a source
system writes them, then given to `ingest_micro_batch` (app/service/ingest.py) in micro-batches of the service's
`batch_size`, as the ingest process does after each consume: decoding, conversion to events, validation, ledger
batches per partition and their Avro encoding, the feeds' activity. The consumer itself (librdkafka) and the sends
are not in it: this is the Python part of an ingest stage's cost per event. Each mix: process CPU time of the whole
pass, best of `--repeats`, per source event; every pass must write the same ledger (checked) and dead-letter
nothing. Its baseline, in the same run, passes alternating with the service's: the same stage with every record
decoded to a dict and encoded again from it, instead of read straight into its event and handed to the ledger as
the source wrote it (`LedgerWriter(..., source_bytes=False)`, the code before those two steps; the same ledger,
checked). Then the memory one micro-batch needs: the peak of Python's allocations (tracemalloc) while the first
`batch_size` source records of the mix are ingested, above what was allocated before (a bulk micro-batch is full from
`--events 200000`: 200 movements per record).

Result in benchmarks/results/ingest.json ($BENCHMARK_RESULTS_DIR where it is set).
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc

from app.service.ingest import FeedActivityReporter, LedgerWriter, SourceMessage, ingest_micro_batch, new_source_message
from app.settings import Settings
from app.wire.ledger import LedgerBatcher
from app.wire.serialization import AvroCodec
from app.wire.topics import LEDGER
from benchmarks.generator import MIXES, Workload, WorkloadConfig
from benchmarks.report import results_dir

INGEST_TIME = 1_767_225_600_000  # 2026-01-01, ms: every event of the workload is within the allowed skew of it


def source_messages(settings: Settings, codec: AvroCodec, mix: str, events: int) -> list[SourceMessage]:
    """The workload's source records of `mix` as a consumer delivers them (one source partition per topic)."""
    workload = Workload(WorkloadConfig(partitions=settings.partitions), mix=mix, prefix="ib")
    offsets: dict[str, int] = {}
    messages = []
    for record in [*workload.records(events), *workload.flush()]:
        topic = record.topic.name
        offset = offsets[topic] = offsets.get(topic, -1) + 1
        value = codec.encode(record.topic, record.value)
        messages.append(new_source_message(topic, 0, offset, record.key.encode(), value))
    return messages


def ingest_pass(settings: Settings, codec: AvroCodec, messages: list[SourceMessage],
                source_bytes: bool = True) -> tuple[float, int, list]:
    """(CPU seconds, events ingested, ledger values) of one pass over `messages`, with a fresh writer and batcher."""
    writer = LedgerWriter(codec, settings.partitions, source_bytes=source_bytes)
    batcher = LedgerBatcher(codec.serde(LEDGER), settings.ledger_batch_max_entries)
    feeds = FeedActivityReporter()
    size = settings.batch_size
    ingested = 0
    ledger: list = []
    started = time.process_time()
    for start in range(0, len(messages), size):
        batch = ingest_micro_batch(messages[start:start + size], INGEST_TIME, writer, batcher, feeds)
        ingested += batch.ingested.total()
        if batch.dead_letters:
            raise RuntimeError(f"the workload has invalid records: {batch.dead_letters[:3]}")
        ledger.append(batch.records)
    seconds = time.process_time() - started
    return seconds, ingested, [(record.partition, record.value) for records in ledger for record in records]


def micro_batch_memory(settings: Settings, codec: AvroCodec, messages: list[SourceMessage]) -> dict:
    """What Python allocates while the first micro-batch of `messages` is ingested (and its records held, as the
    ingest process holds them until they are delivered): the peak above what was allocated before, in MiB and per
    event of the micro-batch."""
    writer = LedgerWriter(codec, settings.partitions)
    batcher = LedgerBatcher(codec.serde(LEDGER), settings.ledger_batch_max_entries)
    micro_batch = messages[:settings.batch_size]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        batch = ingest_micro_batch(micro_batch, INGEST_TIME, writer, batcher, FeedActivityReporter())
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    events = batch.ingested.total()
    return {"micro_batch_source_records": len(micro_batch), "micro_batch_events": events,
            "micro_batch_peak_mib": round(peak / 2**20, 1), "micro_batch_peak_bytes_per_event": round(peak / events)}


def measure(events: int, repeats: int) -> dict:
    settings = Settings(partitions=8)
    codec = AvroCodec(settings)
    mixes = {}
    for mix in MIXES:
        messages = source_messages(settings, codec, mix, events)
        gc.collect()
        best = {True: float("inf"), False: float("inf")}  # with the source's bytes, and encoded again
        ingested, first_ledger = 0, None
        for repeat in range(repeats):
            for source_bytes in (True, False) if repeat % 2 == 0 else (False, True):  # neither always goes first
                seconds, ingested, ledger = ingest_pass(settings, codec, messages, source_bytes)
                if first_ledger is None:
                    first_ledger = ledger
                elif ledger != first_ledger:
                    raise RuntimeError(f"{mix}: two passes over the same records wrote different ledgers")
                best[source_bytes] = min(best[source_bytes], seconds)
                del ledger
        mixes[mix] = {
            "source_records": len(messages),
            "events": ingested,
            "ledger_records": len(first_ledger),
            "us_per_event": round(best[True] / ingested * 1e6, 3),
            "events_per_cpu_second": round(ingested / best[True]),
            "baseline_encoded_again_us_per_event": round(best[False] / ingested * 1e6, 3),
            "ratio_to_baseline": round(best[True] / best[False], 3),
            **micro_batch_memory(settings, codec, messages),
        }
    return {"benchmark": "ingest", "requested_events": events, "repeats": repeats,
            "batch_size": settings.batch_size, "ledger_batch_max_entries": settings.ledger_batch_max_entries,
            "mixes": mixes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = measure(args.events, args.repeats)
    for mix, figures in result["mixes"].items():
        print(f"{mix}: {figures['events']:,} events in {figures['source_records']:,} source records -> "
              f"{figures['ledger_records']:,} ledger records; best of {args.repeats}: {figures['us_per_event']} us "
              f"per event ({figures['events_per_cpu_second']:,} events per CPU second), "
              f"{figures['ratio_to_baseline']}x the time of records encoded again "
              f"({figures['baseline_encoded_again_us_per_event']} us); one micro-batch of "
              f"{figures['micro_batch_source_records']:,} source records: peak {figures['micro_batch_peak_mib']} MiB "
              f"({figures['micro_batch_peak_bytes_per_event']:,} bytes per event)")
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "ingest.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
