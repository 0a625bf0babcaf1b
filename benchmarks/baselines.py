"""The baselines every service figure is compared with, each run as a process of its own on the same broker and
the same source records as the service, with the service's settings (the scenario's `Settings`, from the
environment: fetch wait, batch size and timeout; the group's session timeout and heartbeat):

- `quix`: the peer. A Quix Streams application doing the service's job the simplest way Quix allows
  (benchmarks/quix_baseline.py): decode, re-key by SKU, state in RocksDB, one output per changed channel key.
- `confluent`: the Python limit. A plain confluent-kafka loop doing the same job (benchmarks/baseline_job.py, the
  same function as the Quix app) with its state in a dict: no framework, no re-keying hop, no durable state.
- `faust`: the framework's own ceiling. A bare Faust agent configured as the service's worker (its transport with
  the service's fetch wait, uvloop, take_events of the service's batch size and timeout, the service's quiet monitor, the
  service's group settings) that only counts the records it consumes.

    python -m benchmarks.baselines quix --bootstrap HOST:PORT --topics T1,T2 --records N --events E --result FILE
    python -m benchmarks.baselines confluent --bootstrap HOST:PORT --topics T1,T2 --records N --result FILE
    python -m benchmarks.baselines faust --bootstrap HOST:PORT --topics T1,T2 --records N --result FILE

Each reads from `--start-offsets` ({"topic:partition": offset}, default the beginning; the group-based baselines get
them as their group's committed offsets before they join) and counts the records below `--end-offsets` (same
form; default no end), never judging from watermarks. With `--min-seconds S`, the confluent loop and the Faust agent
read each partition's range again (seek back to its start after its last record) until S seconds have passed
since their first record, so that a small section still gives a steady rate; the Quix app reads the range once
(Quix refuses offsets that go back within a checkpoint): the benchmark sizes its sections for it. Each writes
{"records", "events", "series": [[time ms, cumulative events], ...], "first_record_ms", "cpu_seconds", "passes"}
to FILE: `cpu_seconds` are the process's (all threads) from its first record to its last event. The Faust
baseline counts records (it decodes nothing); the benchmark turns them into events with the known number of events
per record.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.harness import commit_start_positions, start_positions

BASELINE_OUTPUT_TOPIC = "benchmark.baseline-output"


def now_ms() -> float:
    return time.time() * 1000


def _ranges(topics: list[str], partitions: int, start_offsets: dict[str, int], end_offsets: dict[str, int]
            ) -> dict[tuple[str, int], tuple[int, int | None]]:
    """(topic, partition) -> (first offset, first offset past the range or None)."""
    return {(topic, partition): (start_offsets.get(f"{topic}:{partition}", 0),
                                 end_offsets.get(f"{topic}:{partition}"))
            for topic in topics for partition in range(partitions)}


def _write(result: Path, records: int, events: int, series: list, first_ms: float | None, cpu: float | None,
           passes: float) -> None:
    step = max(1, len(series) // 20_000)  # enough points for the 10%-90% slope, a file of a sensible size
    result.write_text(json.dumps({"records": records, "events": events, "series": series[::step] + series[-1:],
                                  "first_record_ms": first_ms, "cpu_seconds": cpu, "passes": round(passes, 2)}))


def run_confluent(bootstrap: str, topics: list[str], partitions: int, records: int, result: Path,
                  start_offsets: dict[str, int], end_offsets: dict[str, int], settings,
                  min_seconds: float = 0.0) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from app.service.ingest_process import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS
    from app.wire.serialization import AvroCodec
    from benchmarks.baseline_job import SkuState, apply_event, source_events
    from benchmarks.cpu import cpu_seconds

    codec = AvroCodec(settings)
    decoders = {topic: codec.serde(topic).decode for topic in topics}
    quiet = logging.getLogger("baseline.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    # the consumer and producer settings of the service's own librdkafka stage (app.service.ingest_process)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"baseline-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.max.bytes": 16 * 1024 * 1024,
                         "session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
                         "fetch.wait.max.ms": settings.fetch_max_wait_ms, "logger": quiet})
    consumer.assign(start_positions(topics, partitions, start_offsets))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1024 * 1024,
                         "logger": quiet})
    produce = producer.produce
    states: dict[str, SkuState] = {}
    ranges = {(topic, str(partition)): bounds for (topic, partition), bounds
              in _ranges(topics, partitions, start_offsets, end_offsets).items()}
    seen = events = 0
    first_ms = first_cpu = None
    series: list[tuple[float, int]] = []
    paused: set[tuple[str, int]] = set()
    repeat = min_seconds > 0
    while seen < records or (repeat and first_ms is not None and now_ms() - first_ms < min_seconds * 1000):
        for message in consumer.consume(num_messages=2000, timeout=0.5):
            if message.error():
                continue
            if first_ms is None:
                first_ms, first_cpu = now_ms(), cpu_seconds()
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            start, end = ranges[(topic, str(partition))]
            if end is not None and offset >= end:
                # past the section in this partition: not counted, and nothing more fetched from it (records
                # fetched already still arrive: skip them; pausing is a round trip to librdkafka's thread, once)
                if (topic, partition) not in paused:
                    paused.add((topic, partition))
                    consumer.pause([TopicPartition(topic, partition)])
                continue
            seen += 1
            for event in source_events(decoders[topic](message.value()).value):
                sku = event["sku"]
                state = states.get(sku)
                if state is None:
                    state = states[sku] = SkuState()
                for key, units in apply_event(state, event):
                    # inline, not app.kafka.producing: this loop is the Python limit, without a call per record
                    while True:
                        try:
                            produce(BASELINE_OUTPUT_TOPIC, str(units).encode(), key.encode())
                            break
                        except BufferError:
                            producer.poll(0.05)
                events += 1
            if repeat and end is not None and offset == end - 1:
                consumer.seek(TopicPartition(topic, partition, start))  # the range again, from its start
        series.append((now_ms(), events))
        producer.poll(0)
    producer.flush(60)
    series.append((now_ms(), events))
    cpu = round(cpu_seconds() - first_cpu, 3) if first_cpu is not None else None
    consumer.close()
    _write(result, seen, events, series, first_ms, cpu, seen / records if records else 0)


def run_faust(bootstrap: str, topics: list[str], partitions: int, records: int, result: Path,
              start_offsets: dict[str, int], end_offsets: dict[str, int], settings, data_dir: Path | None = None,
              min_seconds: float = 0.0) -> None:
    import faust
    import uvloop

    from app.kafka.transport import WorkerApp
    from app.service.app import (
        BROKER_HEARTBEAT_INTERVAL_SECONDS,
        BROKER_REBALANCE_TIMEOUT_SECONDS,
        BROKER_SESSION_TIMEOUT_SECONDS,
    )
    from app.service.runtime import QuietMonitor
    from benchmarks.cpu import cpu_seconds

    first = {"ms": None, "cpu": None}

    class FirstRecordMonitor(QuietMonitor):
        """The service's own monitor (no per-record statistics, commits recorded), noting when the first record
        came in."""

        def on_message_in(self, tp, offset, message) -> None:
            if first["ms"] is None:
                first["ms"], first["cpu"] = now_ms(), cpu_seconds()

    for name in ("faust", "mode", "aiokafka", "kafka"):
        logging.getLogger(name).setLevel(logging.ERROR)
    app_id = f"baseline-faust-{uuid.uuid4().hex[:8]}"
    commit_start_positions(bootstrap, app_id, topics, partitions, start_offsets)
    app = WorkerApp(
        app_id,
        broker=f"kafka://{bootstrap}",
        # Faust keeps a data dir even with memory tables; the default is `<app_id>-data` in the working directory
        datadir=str(data_dir if data_dir is not None else Path(tempfile.mkdtemp(prefix="baseline-faust-"))),
        store="memory://",
        autodiscover=False,
        topic_partitions=partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=BROKER_SESSION_TIMEOUT_SECONDS,
        broker_heartbeat_interval=BROKER_HEARTBEAT_INTERVAL_SECONDS,
        broker_rebalance_timeout=BROKER_REBALANCE_TIMEOUT_SECONDS,
        stream_recovery_delay=0.0,
        web_enabled=False,
        Monitor=FirstRecordMonitor,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,  # the service's, through its transport
    )
    topic = app.topic(*topics, key_serializer="raw", value_serializer="raw", internal=False)
    series: list[tuple[float, int]] = []
    counted = [0]
    ranges = {(topic_name, partition): bounds for (topic_name, partition), bounds
              in _ranges(topics, partitions, start_offsets, end_offsets).items()}
    repeat = min_seconds > 0

    def finished() -> bool:
        if counted[0] < records:
            return False
        return not repeat or now_ms() - first["ms"] >= min_seconds * 1000

    @app.agent(topic, name="consume_only")
    async def consume_only(stream) -> None:
        async for events in stream.take_events(settings.batch_size, settings.batch_timeout_seconds):
            for event in events:
                message = event.message
                start, end = ranges.get((message.topic, message.partition), (0, None))
                if end is None or message.offset < end:  # records past a partition's end are fetched, not counted
                    counted[0] += 1
                    if repeat and end is not None and message.offset == end - 1:
                        await app.consumer.seek(message.tp, start)  # the range again, from its start
            series.append((now_ms(), counted[0]))
            if finished():
                _write(result, counted[0], counted[0], series, first["ms"], round(cpu_seconds() - first["cpu"], 3),
                       counted[0] / records if records else 0)
                logging.shutdown()
                os._exit(0)  # the measurement is over; a clean Faust shutdown would only add seconds

    loop = uvloop.new_event_loop()
    worker = faust.Worker(app, loglevel="error", loop=loop, quiet=True)
    worker.execute_from_commandline()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("quix", "confluent", "faust"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated source topics")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--records", type=int, required=True, help="records in the range (read at least once)")
    parser.add_argument("--events", type=int, help="quix: events in the range (it stops after applying them)")
    parser.add_argument("--start-offsets", type=json.loads, default={}, help='JSON {"topic:partition": offset}')
    parser.add_argument("--end-offsets", type=json.loads, default={}, help="JSON, as --start-offsets: first "
                        "offsets not counted")
    parser.add_argument("--min-seconds", type=float, default=0.0, help="confluent, faust: read the range again "
                        "until this many seconds have passed since the first record")
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, help="faust: the app's data dir; quix: its state dir (default: a "
                        "new temporary one)")
    parser.add_argument("--by-sku-topic", help="quix: the topic it re-keys events by SKU through (one per run)")
    args = parser.parse_args(argv)
    from app.settings import Settings

    settings = Settings(kafka_bootstrap_servers=args.bootstrap)  # the rest from the environment, as the workers
    topics = [topic for topic in args.topics.split(",") if topic]
    if args.kind == "quix":
        from benchmarks.quix_baseline import run_quix

        if args.events is None or args.by_sku_topic is None:
            parser.error("quix needs --events and --by-sku-topic")
        run_quix(args.bootstrap, topics, args.partitions, args.events, args.result, args.start_offsets,
                 args.end_offsets, args.by_sku_topic, BASELINE_OUTPUT_TOPIC,
                 args.data_dir or Path(tempfile.mkdtemp(prefix="baseline-quix-")), settings)
    elif args.kind == "confluent":
        run_confluent(args.bootstrap, topics, args.partitions, args.records, args.result, args.start_offsets,
                      args.end_offsets, settings, args.min_seconds)
    else:
        run_faust(args.bootstrap, topics, args.partitions, args.records, args.result, args.start_offsets,
                  args.end_offsets, settings, args.data_dir, args.min_seconds)


if __name__ == "__main__":
    sys.exit(main())
