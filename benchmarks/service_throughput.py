"""Throughput of the availability stage (ledger -> engine -> topics + tables) on the embedded broker.

    python -m benchmarks.service_throughput [--events 20000] [--skus 2000]

Writes a policy and N receipts/sales straight to the ledger (no ingest) as the ingest stage writes them: per
micro-batch of `batch_size` events, one LedgerEntryBatch of up to `ledger_batch_max_entries` entries per ledger
partition (the settings' defaults, or AVAILABILITY_BATCH_SIZE / AVAILABILITY_LEDGER_BATCH_MAX_ENTRIES; 1 writes a
record per event). Then starts one worker and measures ledger events per second until the last event's availability
record is read. Result in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from confluent_kafka import Producer

from app.engine import event_to_record
from app.kafka.admin import create_topics
from app.kafka.broker import EmbeddedBroker, free_loopback_port
from app.service.ingest import LedgerWriter
from app.settings import Settings
from app.wire.ledger import LedgerBatcher
from app.wire.serialization import AvroCodec
from app.wire.topics import LEDGER, availability_topic, ledger_partition
from tests.engine.factories import receipt, sale
from tests.service.harness import WORKER_READY, WorkerProcess, read_topic
from tests.service.scenario import LOCATIONS, policy_v


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--skus", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, EmbeddedBroker(Path(scratch) / "tansu.log") as broker:
        settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, app_id=f"bench-{uuid.uuid4().hex[:8]}",
                            data_dir=Path(scratch) / "worker", partitions=8, web_port=free_loopback_port(),
                            tick_interval_seconds=3600, channels=("ecommerce", "marketplace", "store-pickup"))
        create_topics(settings, broker.bootstrap_servers)
        codec = AvroCodec(settings)
        writer = LedgerWriter(codec, settings.partitions)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20})
        now = int(time.time() * 1000)  # ingest time: the engine refuses events stamped far after it
        for append in writer.broadcast(writer.entry_value(policy_v(1, 10_000), None, now)):
            producer.produce(LEDGER.name, append.value, append.key, partition=append.partition)
        batcher = LedgerBatcher(codec.serde(LEDGER), settings.ledger_batch_max_entries)
        ledger_records = 0

        def flush() -> int:
            appends = batcher.flush()
            for append in appends:
                producer.produce(LEDGER.name, append.value, append.key, partition=append.partition)
            producer.poll(0)
            return len(appends)

        for index in range(args.events):
            sku = f"SKU-{index % args.skus:05d}"
            location = LOCATIONS[index % len(LOCATIONS)]
            event = (receipt(5, location, sku=sku, event_id=f"e{index}", time=index + 10) if index % 4
                     else sale(1, location, sku=sku, event_id=f"e{index}", time=index + 10))
            name, record = event_to_record(event)
            batcher.add(ledger_partition(sku, settings.partitions), sku, name, record, ("benchmark", 0, index, 0), now)
            if (index + 1) % settings.batch_size == 0:
                ledger_records += flush()
        ledger_records += flush()
        producer.flush()
        worker = WorkerProcess(settings).start()
        try:
            worker.wait_for_log(WORKER_READY, timeout=120)
            started = time.monotonic()
            topic = availability_topic("marketplace").name
            records = read_topic(broker.bootstrap_servers, topic, settings.partitions,
                                 until=lambda rs: any(f"e{args.events - 1}".encode() in r.value for r in rs),
                                 timeout=600, idle_seconds=0)
            elapsed = time.monotonic() - started
        finally:
            worker.stop()
        result = {"events": args.events, "skus": args.skus, "ledger_records": ledger_records,
                  "ledger_batch_max_entries": settings.ledger_batch_max_entries, "seconds": round(elapsed, 2),
                  "events_per_second": round(args.events / elapsed), "records_seen": len(records)}
        print(json.dumps(result))
        out = Path(__file__).resolve().parent / "results"
        out.mkdir(exist_ok=True)
        (out / "service_throughput.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
