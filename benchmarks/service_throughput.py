"""Throughput of the availability stage alone (ledger -> engine -> topics + tables), on a peak benchmark's mix.

    python -m benchmarks.service_throughput [--events 200000] [--mix mixed|single|bulk] [--py-spy FILE]

The peak workload's mix (benchmarks/generator.py; `mixed` by default: store sales and returns, reservations, bulk
warehouse movements over Zipf-popular SKUs; `single` and `bulk` are the peak benchmark's other two sections) goes
through the ingest stage's own logic (`ingest_micro_batch`, in this process) in
micro-batches of the settings' `batch_size`, and the ledger records it writes are produced straight to the ledger,
with the policy and the stock loads first. Then one worker starts with AVAILABILITY_STAGES=availability and the
clock runs from its "Worker ready" to the moment its `ledger_events_applied` metric counts every entry written (read every 0.5 s);
its CPU seconds over that time give the per-core figure. It also counts, without a worker, the availability records
the engine publishes for that ledger, and how many it would had each entry been a ledger record of its own, and
reports the worker's memory by part at the scrape with its largest resident set (`availability_memory_bytes`) and
the entries per worker CPU second of each tenth of the entries (from the same scrapes; None for a tenth of fewer
than BY_TENTH_MIN_SCRAPES scrapes, which the next tenth then includes: the worker counts its entries once per chunk,
so a short tenth is off by the chunk it read early or late). A longer run's states grow, and so does the cost per
entry. `slowest_scrape_seconds` is the longest a scrape waited for the worker's answer: the worker answers when its
stage lets the event loop run (between two chunks of a micro-batch, and within a chunk every LOOP_HOLD_SECONDS of
app/service/availability.py), so it is about the longest the stage held that loop.
`event_loop_lag` counts the worker's event-loop probe's wake-ups (`availability_event_loop_lag_seconds`,
docs/OPERATIONS.md) by how late they came: what else on the worker's loop (heartbeats, fetches, HTTP) waited.
`--py-spy FILE` records the worker meanwhile (speedscope format). Result in
benchmarks/results/service_throughput.json, or service_throughput-<mix>.json for another mix ($BENCHMARK_RESULTS_DIR
where it is set).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import Producer

from app.engine import ChannelAvailability, MemoryStore, PartitionEngine, event_from_record
from app.engine.positions import ledger_position
from app.kafka.admin import create_topics
from app.kafka.broker import EmbeddedBroker, free_loopback_port
from app.replay.applying import LedgerApplier
from app.service.ingest import LedgerWriter, SourceMessage, ingest_micro_batch
from app.settings import Settings
from app.wire.ledger import LedgerBatcher, item_event, read_ledger_record
from app.wire.serialization import AvroCodec
from app.wire.topics import LEDGER
from benchmarks.analysis import work_per_cpu_second_by_part
from benchmarks.cpu import cpu_seconds, peak_rss_mib
from benchmarks.generator import MIXES, Workload, WorkloadConfig
from benchmarks.report import results_dir
from benchmarks.worker_metrics import histogram, scrape
from tests.service.harness import WORKER_READY, WorkerProcess

# 5 s of scrapes per tenth at least. The worker's count moves once per chunk (tens of thousands of entries), so a
# tenth spans few moves unless the run is long: 1,000,000 events gave 3 tenths of 10 a figure, 3,000,000 all 10.
BY_TENTH_MIN_SCRAPES = 10
# A scrape is answered only when the worker's stage lets its event loop run (a chunk held it for seconds, on a loaded
# machine, before LOOP_HOLD_SECONDS): it waits, and the wait is reported, rather than ending the run.
SCRAPE_TIMEOUT_SECONDS = 60.0
LOOP_LAG_METRIC = "availability_event_loop_lag_seconds"


def ledger_of_workload(settings: Settings, codec: AvroCodec, events: int, ingest_time: int,
                       mix: str = "mixed") -> tuple[list, int]:
    """(partition, key, value) of every ledger record the `mix` of `events` events becomes, policy and stock loads
    first, and the number of ledger entries they hold."""
    workload = Workload(WorkloadConfig(partitions=settings.partitions), mix=mix, prefix="st")
    records = list(workload.records(events)) + list(workload.flush())
    writer = LedgerWriter(codec, settings.partitions)
    ledger: list[tuple[int, bytes, bytes]] = []
    policy = event_from_record("PolicyChange", workload.policy())
    ledger += [(a.partition, a.key, a.value) for a in writer.broadcast(writer.entry_value(policy, None, ingest_time))]
    entries = settings.partitions
    batcher = LedgerBatcher(codec.serde(LEDGER), settings.ledger_batch_max_entries)
    # the stock on hand, as a bulk feed would load it: batch records of the ledger partitions
    for index, load in enumerate(workload.take_stock_loads()):
        batcher.add(workload.partition_of(load.sku), load.sku, "StockMovement", workload.stock_load_record(load),
                    ("benchmark-stock-load", 0, index, 0), ingest_time)
        entries += 1
    ledger += [(append.partition, append.key, append.value) for append in batcher.flush()]
    offsets: dict[str, int] = {}
    for start in range(0, len(records), settings.batch_size):
        messages = []
        for record in records[start:start + settings.batch_size]:
            offset = offsets[record.topic.name] = offsets.get(record.topic.name, -1) + 1
            messages.append(SourceMessage(record.topic.name, 0, offset, record.key.encode(),
                                          codec.encode(record.topic, record.value)))
        batch = ingest_micro_batch(messages, ingest_time, writer, batcher)
        if batch.dead_letters:
            raise RuntimeError(f"the workload has invalid records: {batch.dead_letters[:3]}")
        ledger += [(out.partition, out.key, out.value) for out in batch.records if out.topic == LEDGER.name]
        entries += batch.ingested.total()
    return ledger, entries


def with_offsets(ledger: list) -> Iterator[tuple[int, int, bytes]]:
    """(partition, offset, value) of each record of `ledger` as the broker numbers them when it is produced in order
    into empty partitions (how the benchmarks apply a ledger without a broker)."""
    offsets: dict[int, int] = {}
    for partition, _, value in ledger:
        offset = offsets[partition] = offsets.get(partition, -1) + 1
        yield partition, offset, value


def availability_records(settings: Settings, codec: AvroCodec, ledger: list) -> tuple[int, int]:
    """The availability records the engine publishes for `ledger` (no worker): (as written, one record per key per
    ledger record; had each entry been a record of its own), which shows what coalescing per record saves."""
    serde = codec.serde(LEDGER)
    channels = frozenset(settings.channels)
    as_written = LedgerApplier(serde, channels, settings.engine_limits)  # the loop replay and the stage share
    as_entries: dict[int, PartitionEngine] = {}
    published = entry_by_entry = 0
    for partition, offset, value in with_offsets(ledger):
        published += sum(type(output) is ChannelAvailability for _, output in as_written.apply(partition, offset, value))
        engine = as_entries.get(partition) or as_entries.setdefault(
            partition, PartitionEngine(partition, MemoryStore(), channels, limits=settings.engine_limits))
        for item in read_ledger_record(serde, value):  # each entry alone, at the same position
            outputs = engine.apply(item_event(item), ledger_position(offset, item.index), item.origin)
            entry_by_entry += sum(type(output) is ChannelAvailability for output in outputs)
    return published, entry_by_entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--mix", choices=MIXES, default="mixed",
                        help="the peak benchmark's workload to apply (default mixed, its mix section)")
    parser.add_argument("--py-spy", type=Path, default=None, help="record the worker with py-spy into FILE")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, EmbeddedBroker(Path(scratch) / "tansu.log") as broker:
        web_port = free_loopback_port()
        settings = Settings(kafka_bootstrap_servers=broker.bootstrap_servers, app_id=f"bench-{uuid.uuid4().hex[:8]}",
                            data_dir=Path(scratch) / "worker", web_port=web_port, tick_interval_seconds=3600,
                            stages="availability")
        create_topics(settings, broker.bootstrap_servers)
        codec = AvroCodec(settings)
        prepared = time.monotonic()
        ledger, entries = ledger_of_workload(settings, codec, args.events, int(time.time() * 1000), args.mix)
        print(f"{args.events:,} events -> {len(ledger):,} ledger records, {entries:,} entries "
              f"({time.monotonic() - prepared:.1f} s)", flush=True)
        coalesced, uncoalesced = availability_records(settings, codec, ledger)
        print(f"availability records: {coalesced:,} (one per key per ledger record; {uncoalesced:,} had each entry "
              "been a record of its own)", flush=True)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20})
        for partition, key, value in ledger:
            producer.produce(LEDGER.name, value, key, partition=partition)
            producer.poll(0)
        producer.flush()
        worker = WorkerProcess(settings).start()
        profiler = None
        try:
            worker.wait_for_log(WORKER_READY, timeout=180)
            if args.py_spy is not None:
                binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
                profiler = subprocess.Popen([binary, "record", "--format", "speedscope", "--output", str(args.py_spy),
                                             "--pid", str(worker.process.pid), "--rate", "200", "--nonblocking"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            started, cpu_start = time.monotonic(), cpu_seconds(worker.process.pid)
            done = 0
            memory_at_peak: dict[str, float] = {}
            progress: list[tuple[int, float]] = []  # (entries applied, worker CPU seconds) at each scrape
            slowest_scrape = 0.0
            while done < entries:
                if time.monotonic() - started > 900:
                    raise TimeoutError(f"{done:,} of {entries:,} entries applied in 900 s")
                time.sleep(0.5)  # what a Prometheus scrape every 0.5 s would cost
                asked = time.monotonic()
                # A scrape waits for the stage to let the event loop run: the longest wait is reported (docstring).
                done, memory = scrape(web_port, timeout_seconds=SCRAPE_TIMEOUT_SECONDS)
                slowest_scrape = max(slowest_scrape, time.monotonic() - asked)
                progress.append((done, cpu_seconds(worker.process.pid) - cpu_start))
                if memory.get("resident", 0) >= memory_at_peak.get("resident", 0):
                    memory_at_peak = memory
            elapsed, cpu = time.monotonic() - started, cpu_seconds(worker.process.pid) - cpu_start
            peak_rss = peak_rss_mib(worker.process.pid)
            probes, late = histogram(web_port, LOOP_LAG_METRIC)
        finally:
            if profiler is not None:
                profiler.send_signal(2)
                profiler.wait(timeout=60)
            worker.stop()
        result = {"events": args.events, "mix": args.mix, "ledger_records": len(ledger), "ledger_entries": entries,
                  "batch_size": settings.batch_size, "ledger_batch_max_entries": settings.ledger_batch_max_entries,
                  "seconds": round(elapsed, 2), "entries_per_second": round(entries / elapsed),
                  "worker_cpu_seconds": round(cpu, 2), "entries_per_cpu_second": round(entries / cpu),
                  "availability_records": coalesced, "availability_records_one_per_entry": uncoalesced,
                  "worker_peak_rss_mib": peak_rss,
                  # from asking the worker's /metrics to its answer, the longest of the run's scrapes
                  "slowest_scrape_seconds": round(slowest_scrape, 2),
                  # the worker's event-loop probe (docs/OPERATIONS.md): how many of its wake-ups came later than each
                  # bound, from the worker's start (the run, and the little before it)
                  "event_loop_lag": {"probes": probes, "later_than_seconds": late},
                  # the worker's /metrics at the scrape with the largest resident set (MiB; docs/OPERATIONS.md)
                  "worker_memory_at_peak_mib": memory_at_peak,
                  # how the cost per entry moves as the states grow: each tenth of the entries, as applied
                  "entries_per_cpu_second_by_tenth": [
                      row["work_per_cpu_second"] for row in work_per_cpu_second_by_part(
                          progress, entries, 10, min_readings=BY_TENTH_MIN_SCRAPES)]}
        print(json.dumps(result))
        out = results_dir()
        out.mkdir(parents=True, exist_ok=True)
        name = "service_throughput.json" if args.mix == "mixed" else f"service_throughput-{args.mix}.json"
        (out / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
