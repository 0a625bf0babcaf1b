"""One produce-to-consume hop on the embedded broker, by the consumer's fetch wait (aiokafka, the client under Faust).

    python -m benchmarks.fetch_hop      # about 30 s; writes benchmarks/results/fetch_hop.json

The embedded Tansu broker holds a fetch for the consumer's whole maximum wait instead of answering when data
arrives, so on a quiet stream a record waits for the fetch in flight to expire. Faust hard-codes a 1,500 ms wait;
the service sets 50 ms through its transport (app/kafka/transport.py), and every Faust baseline gets the same.
For each wait, a producer sends a record every ~100 ms (jittered, seeded) to a one-partition topic while a consumer
reads it; a hop is the time from `send` to the record in the consumer's hands (one clock). p50 and p99 by nearest
rank.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.analysis import latency_summary
from benchmarks.report import results_dir

FETCH_WAITS_MS = (1500, 500, 50)
TOPIC = "benchmark.fetch-hop"


async def measure_hops(bootstrap: str, fetch_max_wait_ms: int, records: int, seed: int) -> dict:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    partition = TopicPartition(TOPIC, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=fetch_max_wait_ms,
                                enable_auto_commit=False, group_id=None)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([partition])
        await consumer.seek_to_end(partition)
        await consumer.position(partition)
        hops: list[float] = []

        async def read() -> None:
            while len(hops) < records:
                batches = await consumer.getmany(partition, timeout_ms=100)
                arrived = time.time() * 1000
                for message in batches.get(partition, []):
                    hops.append(arrived - float(message.value))

        reader = asyncio.ensure_future(read())
        jitter = random.Random(seed)
        for _ in range(records):
            await asyncio.sleep(0.05 + jitter.random() * 0.1)  # the producer's pace: a quiet stream
            await producer.send_and_wait(TOPIC, str(time.time() * 1000).encode(), partition=0)
        await asyncio.wait_for(reader, timeout=fetch_max_wait_ms / 1000 + 30)
        return {"fetch_max_wait_ms": fetch_max_wait_ms, **latency_summary(hops)}
    finally:
        await producer.stop()
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    from app.kafka.admin import create_topics
    from app.kafka.broker import EmbeddedBroker
    from app.settings import Settings
    from app.wire.topics import CleanupPolicy, TopicSpec

    parser = argparse.ArgumentParser(prog="python -m benchmarks.fetch_hop", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=60, help="hops measured per fetch wait (default 60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results-dir", type=Path, default=results_dir())
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="fetch-hop-"))
    with EmbeddedBroker(scratch / "tansu.log") as broker:
        bootstrap = broker.bootstrap_servers
        settings = Settings(kafka_bootstrap_servers=bootstrap)
        create_topics(settings, bootstrap, specs=[TopicSpec(TOPIC, "none", None, "any", CleanupPolicy.DELETE,
                                                            ("benchmark",), (), "fetch-hop probe")])
        figures = [asyncio.run(measure_hops(bootstrap, wait, args.records, args.seed)) for wait in FETCH_WAITS_MS]
    shutil.rmtree(scratch, ignore_errors=True)
    result = {"benchmark": "fetch_hop", "broker": "embedded Tansu (memory storage)", "records_per_wait": args.records,
              "hop": "aiokafka send_and_wait to the record in the consumer's getmany, one partition, ms",
              "by_fetch_max_wait": figures}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / "fetch_hop.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for figure in figures:
        print(f"fetch wait {figure['fetch_max_wait_ms']:>5} ms: hop p50 {figure['p50_ms']:.0f} ms, "
              f"p99 {figure['p99_ms']:.0f} ms")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
