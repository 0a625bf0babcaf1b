"""The peer baseline: the service's job done the simplest way Quix Streams allows, on the same broker and records.

    python -m benchmarks.baselines quix --bootstrap HOST:PORT --topics T1,T2 --records N --events E ...

Two dataframes in one Application, one process:

1. per source topic: decode each record with the project's codec (app.wire.serialization.AvroCodec, as the service and
   the confluent-kafka loop do), one row per event (`expand=True`: a StockMovementBatch holds many movements), and
   send each row to a topic keyed by SKU (`to_topic(by_sku, key=sku)`);
2. on that topic: `apply(apply_event, stateful=True)` (benchmarks/baseline_job.py, the same function as the
   confluent-kafka loop) with the state in Quix's RocksDB store and its changelog topic, and one output record per
   changed channel key.

Why keyed by SKU through a topic: Quix scopes state by message key, and no source topic is keyed by SKU (store
transactions by store, reservation commands by reservation, bulk movements by feed). The availability of a network
channel sums every location of a SKU, and a reservation's FULFIL must find the location its RESERVE named, so the
state must be per SKU; state per source key would split one SKU-location across stores of different topics.
Re-keying through a topic is what Quix's `group_by` does; this writes the same thing by hand, to ONE topic for all
the section's source topics, because `group_by` after a `concat` of several topics would turn on Quix's
timestamp alignment, which depends on high watermarks (wrong on the embedded broker) and is not part of the job.
The service pays the same hop (its ledger, keyed by SKU); Quix pays it per event, the service per ledger batch:
that is the idiom's cost, and part of what is compared.

Settings as the service's: the group's session timeout and heartbeat, the consumer's fetch wait, the producer's
linger and batch size, commits every 2.8 s (Faust's commit interval, which the worker keeps), at-least-once
(the embedded broker has no transactions). It starts from the section's first offsets (committed for its group
before it joins), counts events applied (rows through the stateful step, records at or past `--end-offsets`
skipped), and stops when it has applied `--events`. Its result has the same shape as the other baselines'
(benchmarks/baselines.py), with the CPU seconds of the process between its first record and its last event.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

SOURCE_KEY_TOPIC = "benchmark.quix-by-sku"  # the harness creates one per run: <this>.<run>
COMMIT_INTERVAL_SECONDS = 2.8  # Faust's default broker_commit_interval, which the service's workers run with


def run_quix(bootstrap: str, topics: list[str], partitions: int, events: int, result: Path,
             start_offsets: dict[str, int], end_offsets: dict[str, int], by_sku_topic: str, output_topic: str,
             state_dir: Path, settings) -> None:
    from quixstreams import Application, message_context

    from app.service.ingest_process import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
    from app.wire.serialization import AvroCodec
    from benchmarks.baseline_job import apply_event, source_events
    from benchmarks.cpu import cpu_seconds
    from benchmarks.harness import commit_start_positions

    for name in ("quixstreams", "confluent_kafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    group = f"baseline-quix-{uuid.uuid4().hex[:8]}"
    commit_start_positions(bootstrap, group, topics, partitions, start_offsets)
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        commit_interval=COMMIT_INTERVAL_SECONDS,
        consumer_extra_config={"session.timeout.ms": SESSION_TIMEOUT_MS,
                               "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                               "fetch.wait.max.ms": settings.fetch_max_wait_ms},
        producer_extra_config={"linger.ms": 5, "batch.num.messages": 10_000},
        state_dir=str(state_dir),
        loglevel="WARNING",
        processing_guarantee="at-least-once",
    )
    codec = AvroCodec(settings)
    ends = {tuple(name.rsplit(":", 1)): offset for name, offset in end_offsets.items()}
    first = {"ms": None, "cpu": None}
    by_sku = app.topic(by_sku_topic, key_serializer="str", value_serializer="json", key_deserializer="str",
                       value_deserializer="json")
    for name in topics:
        decode = codec.serde(name).decode

        def decode_events(value: bytes, decode=decode, name=name) -> list | tuple:
            if first["ms"] is None:
                first["ms"], first["cpu"] = _now_ms(), cpu_seconds()
            context = message_context()
            if context.offset >= ends.get((name, str(context.partition)), 1 << 62):
                return ()  # past the section in this partition (nothing is, when the baseline runs)
            return source_events(decode(value).value)

        source = app.dataframe(app.topic(name, key_deserializer="bytes", value_deserializer="bytes"))
        source.apply(decode_events, expand=True).to_topic(by_sku, key=lambda event: event["sku"])

    applied = [0]
    series: list[tuple[float, int]] = []

    def apply_and_count(event: dict, state) -> list:
        changed = apply_event(state, event)
        applied[0] += 1
        if applied[0] % 100 == 0 or applied[0] >= events:
            series.append((_now_ms(), applied[0]))
            if applied[0] >= events:
                result.write_text(json.dumps({
                    "records": None, "events": applied[0], "series": series, "first_record_ms": first["ms"],
                    "cpu_seconds": round(cpu_seconds() - first["cpu"], 3), "passes": 1}))
                app.stop()
        return changed

    output = app.topic(output_topic, key_serializer="str", value_serializer="json")
    (app.dataframe(by_sku).apply(apply_and_count, stateful=True, expand=True)
     .to_topic(output, key=lambda change: change[0]))
    app.run()
    if not result.exists():
        raise RuntimeError(f"Quix Streams stopped after {applied[0]} of {events} events")


def _now_ms() -> float:
    import time

    return time.time() * 1000
