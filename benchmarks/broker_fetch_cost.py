"""What a consumer that follows a growing topic costs the embedded broker, by the producer's linger.

    python -m benchmarks.broker_fetch_cost      # about a minute; writes benchmarks/results/broker_fetch_cost.json

The live run of the peak benchmark finds the embedded Tansu broker using a whole core (docs/PERFORMANCE.md). This
isolates why. Three runs, each on a fresh broker, the same message rate for the same time into an 8-partition
topic: a producer alone (linger 5 ms, librdkafka's default), then a producer with one consumer following the topic
from its start (assigned, no group, the service's 50 ms fetch wait) at linger 5 ms and at linger 50 ms. The broker's
CPU (from /proc) is reported per window. The messages are the same; only the number of record batches the topic
holds differs (about ten times fewer at 50 ms). A cost that grows from window to window with the batches stored,
when a consumer follows, is the broker's, not the clients': on Apache Kafka a fetch finds its offset through an
index.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from app.kafka.admin import create_topics
from app.kafka.broker import EmbeddedBroker
from app.settings import Settings
from app.wire.topics import CleanupPolicy, TopicSpec
from benchmarks.cpu import cpu_seconds
from benchmarks.report import results_dir

TOPIC = "benchmark.broker-fetch-cost"
PARTITIONS = 8
PAYLOAD = b"x" * 200  # about an encoded source record


def follow(bootstrap: str, stop: threading.Event, received: list[int]) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 50})
    consumer.assign([TopicPartition(TOPIC, partition, 0) for partition in range(PARTITIONS)])
    try:
        while not stop.is_set():
            received[0] += sum(message.error() is None for message in consumer.consume(10_000, 0.1))
    finally:
        consumer.close()


def run(rate: float, seconds: float, window: float, linger_ms: int, consumer: bool) -> dict:
    with tempfile.TemporaryDirectory() as scratch, EmbeddedBroker(Path(scratch) / "tansu.log") as broker:
        settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, partitions=PARTITIONS)
        create_topics(settings, broker.bootstrap_servers, specs=[TopicSpec(
            TOPIC, "none", None, "any", CleanupPolicy.DELETE, ("benchmark",), (), "broker fetch cost probe")])
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": linger_ms})
        producer.list_topics(timeout=10)
        stop, received = threading.Event(), [0]
        follower = threading.Thread(target=follow, args=(broker.bootstrap_servers, stop, received), daemon=True)
        if consumer:
            follower.start()
        started = time.monotonic()
        window_start, window_cpu = started, cpu_seconds(broker.pid)
        broker_cores: list[float] = []
        sent = 0
        while (elapsed := time.monotonic() - started) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                producer.produce(TOPIC, PAYLOAD, str(sent % 5_000).encode())
                sent += 1
            producer.poll(0)
            time.sleep(0.001)
            if time.monotonic() - window_start >= window:
                now, cpu = time.monotonic(), cpu_seconds(broker.pid)
                broker_cores.append(round((cpu - window_cpu) / (now - window_start), 2))
                window_start, window_cpu = now, cpu
        producer.flush(30)
        deadline = time.monotonic() + 30
        while consumer and received[0] < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        if consumer:
            follower.join(30)
    return {"linger_ms": linger_ms, "consumer": consumer, "messages": sent,
            "received": received[0] if consumer else None, "broker_cores_by_window": broker_cores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=2_000.0, help="messages per second (default 2,000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each run (default 15)")
    parser.add_argument("--window", type=float, default=3.0, help="seconds per CPU window (default 3)")
    args = parser.parse_args()
    runs = []
    for linger_ms, consumer in ((5, False), (5, True), (50, True)):
        result = run(args.rate, args.seconds, args.window, linger_ms, consumer)
        who = "producer and consumer" if consumer else "producer alone"
        print(f"{who}, linger {linger_ms} ms: broker cores by {args.window:g} s window "
              f"{result['broker_cores_by_window']}", flush=True)
        runs.append(result)
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "broker_fetch_cost.json").write_text(json.dumps(
        {"benchmark": "broker_fetch_cost", "rate": args.rate, "seconds": args.seconds, "window_seconds": args.window,
         "partitions": PARTITIONS, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
