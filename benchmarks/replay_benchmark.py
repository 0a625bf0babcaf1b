"""Backfill at scale: how fast `availability replay` reprocesses a large ledger, and how much memory it needs.

1. An embedded broker (or KAFKA_BOOTSTRAP_SERVERS) gets the topics and a generated ledger of `--events` entries
   (default 5,000,000), written directly as the ingest stage writes them (a LedgerEntryBatch per ledger partition
   per micro-batch of `batch_size` events; policy and ticks alone) with a batching producer: the seeded stream of
   benchmarks/engine_benchmark.py (Zipf-popular SKUs, sales, receipts, transfers, counts, ~20% reservation
   commands, a clock tick every 1,000 events), the policy and the ticks on every partition like the ingest stage.
2. The ledger is replayed once per count of `--processes` (default 1 and 2, one after the other), each time in a
   child process (so its peak RSS is its own, not the generator's; with N processes, the sum of theirs): from the
   earliest offset, into a namespace of its own (`replay-bench-pN`), outputs produced to the broker. Each run after
   the first is also given as a ratio to the first, measured on the same ledger in the same session.
Results: benchmarks/results/replay.json and replay.md ($BENCHMARK_RESULTS_DIR where it is set).

    python -m benchmarks.replay_benchmark               # full size
    python -m benchmarks.replay_benchmark --events 200000 --processes 1,2
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from app.engine import ClockTick, PolicyChange, event_to_record
from app.kafka.producing import produce_or_wait
from app.wire.ledger import LedgerBatcher
from app.wire.serialization import AVRO_NAMESPACE, AvroCodec
from app.wire.topics import LEDGER, LEDGER_BROADCAST_KEY, ledger_partition
from benchmarks.cpu import peak_rss_mib
from benchmarks.engine_benchmark import CHANNELS, SEED, StreamGenerator, build_policy
from benchmarks.report import results_dir

BENCH_CHANNELS = tuple(sorted(CHANNELS))
CHUNK = 50_000


def benchmark_settings(bootstrap_servers: str, partitions: int, data_dir: Path):
    from app.settings import Settings

    return Settings(kafka_bootstrap_servers=bootstrap_servers, partitions=partitions, channels=BENCH_CHANNELS,
                    data_dir=data_dir, app_id="replay-benchmark")


def write_ledger(settings, bootstrap_servers: str, events: int, sku_count: int = 20_000, store_count: int = 300,
                 locations_per_sku: int = 8, seed: int = SEED) -> tuple[int, int]:
    """Write about `events` ledger entries (policy and opening stock included) as the ingest stage writes them:
    the movements and commands of each micro-batch of `batch_size` events as one LedgerEntryBatch per ledger
    partition (app.wire.ledger.LedgerBatcher), policy changes and clock ticks as records of their own on every
    partition. Returns (entries, records) written; broadcast entries count once per partition."""
    codec = AvroCodec(settings)
    encode = codec.serde(LEDGER).encode
    partitions = settings.partitions
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 50, "batch.num.messages": 10_000,
                         "batch.size": 4 * 1024 * 1024, "queue.buffering.max.messages": 1_000_000,
                         "queue.buffering.max.kbytes": 1024 * 1024, "max.in.flight.requests.per.connection": 1})
    broadcast_key = LEDGER_BROADCAST_KEY.encode()
    batcher = LedgerBatcher(codec.serde(LEDGER), settings.ledger_batch_max_entries)
    entries = records = pending = 0

    def flush() -> None:
        nonlocal records, pending
        for record in batcher.flush():
            produce_or_wait(producer, LEDGER.name, record.value, record.key, partition=record.partition)
            records += 1
        pending = 0

    def append(event, ingest_time: int) -> None:
        nonlocal entries, records, pending
        record_name, record = event_to_record(event)
        if type(event) is ClockTick or type(event) is PolicyChange:
            flush()  # what came before keeps its place in every partition
            value = encode({"entry": (f"{AVRO_NAMESPACE}.{record_name}", record), "source_topic": None,
                            "source_partition": None, "source_offset": None, "ingest_time": ingest_time})
            for partition in range(partitions):
                produce_or_wait(producer, LEDGER.name, value, broadcast_key, partition=partition)
            entries += partitions
            records += partitions
            return
        # a source position of its own per event, as an ingest stage reading one source partition would give
        batcher.add(ledger_partition(event.sku, partitions), event.sku, record_name, record,
                    ("benchmark", 0, entries, 0), ingest_time)
        entries += 1
        pending += 1
        if pending >= settings.batch_size:
            flush()

    generator = StreamGenerator(seed, sku_count, store_count, 5, locations_per_sku)
    now = int(time.time() * 1000)  # the ingest time: the engine refuses events stamped far after it
    append(build_policy(store_count, 5), now)
    for event in generator.seed_stock():
        append(event, now)
    while entries < events:
        for event in generator.events(min(CHUNK, events - entries)):
            append(event, now)
        producer.poll(0)
    flush()
    if producer.flush(300):
        raise RuntimeError("ledger records not delivered")
    return entries, records


def replay_child(bootstrap_servers: str, partitions: int, data_dir: Path, output: Path, processes: int = 1) -> None:
    """Runs in the child process: one replay, then its summary and peak RSS as JSON."""
    from app.replay import ReplayOptions, replay

    settings = benchmark_settings(bootstrap_servers, partitions, data_dir)

    last_report = [0.0]

    def throttled(done: int, expected: int, events: int) -> None:  # a line every 10 s on stderr
        if time.monotonic() - last_report[0] >= 10:
            last_report[0] = time.monotonic()
            print(f"  replayed {done:,} / ~{expected:,} ledger records ({events:,} events)", file=sys.stderr,
                  flush=True)

    options = ReplayOptions(namespace=f"bench-p{processes}", idle_seconds=3.0, processes=processes)
    summary = replay(settings, bootstrap_servers, options, on_progress=throttled)
    output.write_text(json.dumps({
        "processes": summary.processes, "events": summary.events, "seconds": round(summary.busy_seconds, 2),
        "seconds_with_end_wait": round(summary.seconds, 2),
        "events_per_second": round(summary.events_per_second),
        "records": {topic.rsplit(".", 1)[0]: count for topic, count in sorted(summary.records.items())},
        "rejections": dict(sorted(summary.rejections.items())),
        # of the processes that replayed, added up (with several, this one only waited for them)
        "peak_rss_mib": summary.peak_rss_mib,
        "peak_disk_mib": summary.peak_disk_mib,  # seen ids and finished reservations (docs/REPLAY.md)
    }))


def run(events: int, partitions: int, processes: tuple[int, ...] = (1,)) -> dict:
    from contextlib import ExitStack

    from app.kafka.admin import create_topics
    from app.kafka.broker import EmbeddedBroker
    from app.settings import Settings

    with ExitStack() as stack, tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        bootstrap_servers = Settings().kafka_bootstrap_servers
        broker = None
        if bootstrap_servers is None:
            broker = stack.enter_context(EmbeddedBroker(scratch_dir / "tansu.log"))
            bootstrap_servers = broker.bootstrap_servers
        settings = benchmark_settings(bootstrap_servers, partitions, scratch_dir)
        create_topics(settings, bootstrap_servers)
        started = time.perf_counter()
        written, records = write_ledger(settings, bootstrap_servers, events)
        write_seconds = time.perf_counter() - started
        print(f"ledger: {written:,} entries in {records:,} records in {write_seconds:.1f}s", file=sys.stderr,
              flush=True)
        replays = []
        for count in processes:
            output = scratch_dir / f"replay-{count}.json"
            subprocess.run([sys.executable, "-m", "benchmarks.replay_benchmark", "--replay-child", bootstrap_servers,
                            "--partitions", str(partitions), "--output", str(output), "--processes", str(count)],
                           check=True)
            replays.append(json.loads(output.read_text()))
            if replays[-1]["records"] != replays[0]["records"]:
                raise RuntimeError(f"{count} processes wrote other record counts than {processes[0]}: "
                                   f"{replays[-1]['records']} against {replays[0]['records']}")
        first = replays[0]["events_per_second"]
        for replay in replays[1:]:
            replay["ratio_to_first"] = round(replay["events_per_second"] / first, 2) if first else None
        replay = replays[0]
        return {
            "python": platform.python_version(), "machine": platform.machine(),
            "broker": "embedded Tansu (memory storage)" if broker else bootstrap_servers,
            "requested_events": events, "partitions": partitions, "channels": list(BENCH_CHANNELS), "ledger_entries": written,
            "ledger_records": records, "ledger_write_seconds": round(write_seconds, 1),
            "ledger_write_entries_per_second": round(written / write_seconds),
            "replay": replay, "replays": replays,
            "broker_peak_rss_mib": peak_rss_mib(broker.pid) if broker else None,
        }


def write_results(result: dict) -> None:
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "replay.json").write_text(json.dumps(result, indent=2) + "\n")
    replay = result["replay"]
    outputs = "\n".join(f"| `{topic}` | {count:,} |" for topic, count in replay["records"].items())
    runs = "\n".join(
        f"| {run['processes']} | {run['events_per_second']:,} | {run.get('ratio_to_first', 1.0)}x | {run['seconds']} "
        f"| {run['peak_rss_mib']} | {run['peak_disk_mib']} |" for run in result["replays"])
    (out / "replay.md").write_text(f"""# Replay (backfill) benchmark

Python {result['python']} on {result['machine']}; broker: {result['broker']}; {result['partitions']} ledger
partitions; channels {', '.join(result['channels'])}. Command: `python -m benchmarks.replay_benchmark
--events {result['requested_events']} --processes {','.join(str(run['processes']) for run in result['replays'])}`
(see the module docstring). The machine has 2 cores shared by the replay, the broker and anything else running;
each replay process is one Python thread plus librdkafka's threads.

- ledger: **{result['ledger_entries']:,} entries** in {result['ledger_records']:,} records (batch records of the
  ingest stage's micro-batches, as the service writes them), written in {result['ledger_write_seconds']}s
  ({result['ledger_write_entries_per_second']:,} entries/s)
- replay from the earliest offset by {_processes(replay['processes'])}, outputs produced to the broker:
  **{replay['events_per_second']:,} events/s** ({replay['events']:,} events in {replay['seconds']}s)
- replay peak RSS ({_processes(replay['processes'])}): **{replay['peak_rss_mib']} MiB**; broker peak RSS:
  {result['broker_peak_rss_mib']} MiB; the most its seen ids and finished reservations took on disk:
  {replay['peak_disk_mib']} MiB
- rejections: {replay['rejections'] or 'none'}

The same ledger replayed with each count of processes, one run after the other (`availability replay --processes
N`; every run wrote the same records per output topic):

| processes | events/s | against the first | seconds | peak RSS, MiB (added up) | most on disk, MiB (added up) |
|---:|---:|---:|---:|---:|---:|
{runs}

| output topic | records |
|---|---:|
{outputs}
""")


def _processes(count: int) -> str:
    return "one process" if count == 1 else f"{count} processes"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=5_000_000, help="ledger entries to generate (default 5M)")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--replay-child", metavar="BOOTSTRAP", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--processes", default="1,2", metavar="N,...",
                        help="replay once with each count of processes, in this order (default 1,2); the first is "
                        "the baseline of the others' ratios")
    parser.add_argument("--no-write", action="store_true", help="print the results, do not write results files")
    args = parser.parse_args()
    counts = tuple(int(count) for count in args.processes.split(","))
    if args.replay_child:
        replay_child(args.replay_child, args.partitions, Path(tempfile.gettempdir()), args.output, counts[0])
        return
    result = run(args.events, args.partitions, counts)
    print(json.dumps(result, indent=2))
    if not args.no_write:
        write_results(result)


if __name__ == "__main__":
    main()
