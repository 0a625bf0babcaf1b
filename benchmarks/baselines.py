"""The two baselines every service figure is compared with, each run as a process of its own on the same broker and
the same source records as the service:

- `confluent`: the Python limit. A plain confluent-kafka loop: consume the source topics, decode each record with
  the project's codec (fastavro), update a dict of stock per SKU-location or reservations per SKU-channel, and
  produce one small record per event to an output topic. No framework, no ledger, no rules, no durable state.
- `faust`: the framework's own ceiling. A bare Faust agent (faust-streaming, uvloop, take_events(2000), a no-op
  monitor, quiet loggers, the service's group-membership settings) that only counts the records it consumes.

    python -m benchmarks.baselines confluent --bootstrap HOST:PORT --topics T1,T2 --records N --result FILE
    python -m benchmarks.baselines faust --bootstrap HOST:PORT --topics T1,T2 --records N --result FILE

Both read from `--start-offsets` ({"topic:partition": offset}, default the beginning; the Faust app gets them as
its group's committed offsets before it starts) and count the records below `--end-offsets` (same form; default no
end) until they have counted N (counted, never judged from watermarks), and write
{"records", "events", "series": [[time ms, cumulative events], ...]} to FILE. The Faust baseline counts records
(it decodes nothing); the benchmark turns them into events with the known number of events per record.
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

BASELINE_OUTPUT_TOPIC = "benchmark.baseline-output"
FAUST_BATCH = 2000


def now_ms() -> float:
    return time.time() * 1000


def start_positions(topics: list[str], partitions: int, start_offsets: dict[str, int]) -> list:
    from confluent_kafka import TopicPartition

    return [TopicPartition(topic, partition, start_offsets.get(f"{topic}:{partition}", 0))
            for topic in topics for partition in range(partitions)]


def run_confluent(bootstrap: str, topics: list[str], partitions: int, records: int, result: Path,
                  start_offsets: dict[str, int], end_offsets: dict[str, int]) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from app.serialization import AvroCodec
    from app.settings import Settings
    from app.topics import STOCK_MOVEMENTS

    codec = AvroCodec(Settings(kafka_bootstrap_servers=bootstrap))
    decoders = {topic: codec.serde(topic).decode for topic in topics}
    quiet = logging.getLogger("baseline.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"baseline-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "fetch.max.bytes": 16 * 1024 * 1024, "logger": quiet})
    consumer.assign(start_positions(topics, partitions, start_offsets))
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1024 * 1024,
                         "logger": quiet})
    produce = producer.produce
    stock: dict[tuple[str, str], int] = {}
    reserved: dict[tuple[str, str], int] = {}
    seen = events = 0
    series: list[tuple[float, int]] = []
    ends = {tuple(name.rsplit(":", 1)): offset for name, offset in end_offsets.items()}
    paused: set[tuple[str, int]] = set()
    while seen < records:
        for message in consumer.consume(num_messages=min(2000, records - seen), timeout=0.5):
            if message.error():
                continue
            end = ends.get((message.topic(), str(message.partition())))
            if end is not None and message.offset() >= end:
                # past the section in this partition: not counted, and nothing more fetched from it (records
                # fetched already still arrive: skip them; pausing is a round trip to librdkafka's thread, once)
                partition = (message.topic(), message.partition())
                if partition not in paused:
                    paused.add(partition)
                    consumer.pause([TopicPartition(*partition)])
                continue
            seen += 1
            value = decoders[message.topic()](message.value()).value
            items = value["movements"] if message.topic() == STOCK_MOVEMENTS.name else (value,)
            for item in items:
                sku = item["sku"]
                if "command" in item:
                    key = (sku, item["channel"])
                    units = reserved.get(key, 0) + (item["quantity"] if item["command"] == "RESERVE"
                                                    else -item["quantity"])
                    reserved[key] = units
                else:
                    key = (sku, item["location"])
                    change = item["quantity"] if item["quantity"] is not None else item["delta"]
                    units = stock.get(key, 0) + (-change if item["type"] in ("SALE", "TRANSFER_SHIPPED") else change)
                    stock[key] = units
                while True:
                    try:
                        produce(BASELINE_OUTPUT_TOPIC, str(units).encode(), sku.encode())
                        break
                    except BufferError:
                        producer.poll(0.05)
                events += 1
            series.append((now_ms(), events))
            producer.poll(0)
    producer.flush(60)
    series.append((now_ms(), events))
    consumer.close()
    step = max(1, len(series) // 20_000)  # enough points for the 10%-90% slope, a file of a sensible size
    result.write_text(json.dumps({"records": seen, "events": events, "series": series[::step] + series[-1:]}))


def run_faust(bootstrap: str, topics: list[str], partitions: int, records: int, result: Path,
              start_offsets: dict[str, int], end_offsets: dict[str, int], data_dir: Path | None = None) -> None:
    import faust
    from confluent_kafka import Consumer
    import uvloop
    from faust.sensors import Monitor

    from app.service.app import (
        BROKER_HEARTBEAT_INTERVAL_SECONDS,
        BROKER_REBALANCE_TIMEOUT_SECONDS,
        BROKER_SESSION_TIMEOUT_SECONDS,
    )

    class NoopMonitor(Monitor):
        """Faust's default monitor records every message and event; the ceiling is measured without it."""

        def on_message_in(self, tp, offset, message) -> None: ...

        def on_stream_event_in(self, tp, offset, stream, event): return None

        def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None: ...

        def on_message_out(self, tp, offset, message) -> None: ...

        def on_commit_initiated(self, consumer): return None

        def on_commit_completed(self, consumer, state) -> None: ...

        def on_send_initiated(self, producer, topic, message, keysize, valsize): return None

        def on_send_completed(self, producer, state, metadata) -> None: ...

    for name in ("faust", "mode", "aiokafka", "kafka"):
        logging.getLogger(name).setLevel(logging.ERROR)
    app_id = f"baseline-faust-{uuid.uuid4().hex[:8]}"
    # where to start: committed offsets of the app's group, written before it joins (a commit needs no membership)
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": app_id, "enable.auto.commit": False})
    committer.commit(offsets=start_positions(topics, partitions, start_offsets), asynchronous=False)
    committer.close()
    app = faust.App(
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
        Monitor=NoopMonitor,
    )
    topic = app.topic(*topics, key_serializer="raw", value_serializer="raw", internal=False)
    series: list[tuple[float, int]] = []
    counted = [0]
    ends = {tuple(name.rsplit(":", 1)): offset for name, offset in end_offsets.items()}

    @app.agent(topic, name="consume_only")
    async def consume_only(stream) -> None:
        async for events in stream.take_events(FAUST_BATCH, 0.05):
            if ends:  # records past a partition's end are consumed (Faust fetches ahead) but not counted
                counted[0] += sum(1 for event in events if event.message.offset < ends.get(
                    (event.message.topic, str(event.message.partition)), 1 << 62))
            else:
                counted[0] += len(events)
            series.append((now_ms(), counted[0]))
            if counted[0] >= records:
                result.write_text(json.dumps({"records": counted[0], "events": counted[0], "series": series}))
                logging.shutdown()
                os._exit(0)  # the measurement is over; a clean Faust shutdown would only add seconds

    loop = uvloop.new_event_loop()
    worker = faust.Worker(app, loglevel="error", loop=loop, quiet=True)
    worker.execute_from_commandline()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=("confluent", "faust"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated source topics")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--records", type=int, required=True, help="records to consume before stopping")
    parser.add_argument("--start-offsets", type=json.loads, default={}, help='JSON {"topic:partition": offset}')
    parser.add_argument("--end-offsets", type=json.loads, default={}, help="JSON, as --start-offsets: first "
                        "offsets not counted")
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, help="faust: the app's data dir (default: a new temporary one)")
    args = parser.parse_args(argv)
    topics = [topic for topic in args.topics.split(",") if topic]
    if args.kind == "confluent":
        run_confluent(args.bootstrap, topics, args.partitions, args.records, args.result, args.start_offsets,
                      args.end_offsets)
    else:
        run_faust(args.bootstrap, topics, args.partitions, args.records, args.result, args.start_offsets,
                  args.end_offsets, args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
