"""Operating inventory truth at scale: `availability reconcile` on a large export, `availability preview` on many
SKUs, each run as a user runs it (the `availability` command in a child process) against an embedded broker.

    python -m benchmarks.operations_benchmark reconcile --rows 1000000
    python -m benchmarks.operations_benchmark preview --skus 100000

reconcile: a ledger of about rows x 1.1 entries (the seeded stream of benchmarks/engine_benchmark.py: opening stock
at 8 locations per SKU, then sales, receipts, counts, transfers and reservations), written as the ingest stage
writes it (LedgerEntryBatch records of up to 500 entries per partition); the truth computed in this process by
the engine; an export of one row per SKU-location holding that truth with a known drift on every 100th row and a
bad row every 1,000th. The command's drift count must equal the expected one.
preview: the SKU and partition states of `--skus` SKUs (16 locations each) written to the table changelogs as a
worker writes them; the computation timed in process, then the command end to end.
Results: benchmarks/results/operations.json and operations.md (each run keeps the other's figures).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer

from app.engine import (
    ClockTick,
    MemoryStore,
    PartitionEngine,
    PolicyChange,
    decode_partition_state,
    decode_sku_state,
    encode_partition_state,
    encode_sku_state,
    event_to_record,
)
from app.kafka.producing import produce_or_wait
from app.operations.drift import advance_to
from app.operations.preview import PolicyPreviewer
from app.operations.preview_sources import changelog_topic
from app.wire.ledger import LedgerBatcher
from app.wire.serialization import AVRO_NAMESPACE, AvroCodec
from app.wire.topics import LEDGER, LEDGER_BROADCAST_KEY, STOCK_MOVEMENTS, ledger_partition
from benchmarks.engine_benchmark import CHANNELS, SEED, StreamGenerator, build_policy
from benchmarks.report import results_dir
from tables.declarations import PARTITION_STATE_TABLE, SKU_STATE_TABLE, partition_state_key

BENCH_CHANNELS = tuple(sorted(CHANNELS))
PARTITIONS = 8
LOCATIONS_PER_SKU = 8
DRIFT_EVERY = 100
BAD_ROW_EVERY = 1_000


def bench_settings(bootstrap_servers: str, data_dir: Path, **overrides):
    from app.settings import Settings

    return Settings(kafka_bootstrap_servers=bootstrap_servers, partitions=PARTITIONS, channels=BENCH_CHANNELS,
                    data_dir=data_dir, app_id="operations-benchmark", **overrides)


def command_environment(settings) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith("AVAILABILITY_") and key != "KAFKA_BOOTSTRAP_SERVERS"}
    environment.update({
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "AVAILABILITY_PARTITIONS": str(settings.partitions),
        "AVAILABILITY_CHANNELS": ",".join(settings.channels),
        "AVAILABILITY_APP_ID": settings.app_id,
        "AVAILABILITY_DATA_DIR": str(settings.data_dir),
    })
    return environment


def availability_command() -> list[str]:
    script = Path(sys.executable).with_name("availability")
    return [str(script)] if script.exists() else [sys.executable, "-m", "app.tools.cli"]


class LedgerWriter:
    """Appends events to the ledger as the ingest stage does: movements and commands in LedgerEntryBatch records per
    partition, policies and clock ticks as records of their own on every partition."""

    def __init__(self, settings, bootstrap_servers: str) -> None:
        self.codec = AvroCodec(settings)
        self.serde = self.codec.serde(LEDGER)
        self.partitions = settings.partitions
        self.batcher = LedgerBatcher(self.serde, 500)
        self.producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 50,
                                  "batch.size": 4 * 1024 * 1024, "queue.buffering.max.kbytes": 1024 * 1024,
                                  "max.in.flight.requests.per.connection": 1})
        self.ingest_time = int(time.time() * 1000)
        self.entries = 0
        self.source_offset = 0

    def append(self, event) -> None:
        self.entries += 1
        record_name, record = event_to_record(event)
        if type(event) is ClockTick or type(event) is PolicyChange:
            self.flush_batches()
            value = self.serde.encode({"entry": (f"{AVRO_NAMESPACE}.{record_name}", record), "source_topic": None,
                                       "source_partition": None, "source_offset": None,
                                       "ingest_time": self.ingest_time})
            for partition in range(self.partitions):
                produce_or_wait(self.producer, LEDGER.name, value, LEDGER_BROADCAST_KEY.encode(), partition=partition)
            return
        self.source_offset += 1
        self.batcher.add(ledger_partition(event.sku, self.partitions), event.sku, record_name, record,
                         (STOCK_MOVEMENTS.name, 0, self.source_offset, 0), self.ingest_time)
        if self.entries % 4_000 == 0:
            self.flush_batches()

    def flush_batches(self) -> None:
        for append in self.batcher.flush():
            produce_or_wait(self.producer, LEDGER.name, append.value, append.key, partition=append.partition)
        self.producer.poll(0)

    def close(self) -> None:
        self.flush_batches()
        if self.producer.flush(300):
            raise RuntimeError("ledger records not delivered")


def write_export(path: Path, truth: dict[tuple[str, str], int], stocked: dict[str, list[str]]) -> tuple[int, int, int]:
    """One row per SKU-location (the truth, every DRIFT_EVERY-th one off by 1 to 5) and a bad row every
    BAD_ROW_EVERY-th; returns (rows, drifts expected, bad rows)."""
    rows = drifts = bad = 0
    with path.open("w", encoding="utf-8") as handle:
        handle.write("sku,location,on_hand,bucket\n")
        for sku, locations in stocked.items():
            for location in locations:
                rows += 1
                held = truth.get((sku, location), 0)
                on_hand = max(held, 0)
                if rows % DRIFT_EVERY == 0:
                    on_hand += 1 + rows % 5
                if on_hand != held:
                    drifts += 1
                handle.write(f"{sku},{location},{on_hand},SELLABLE\n")
                if rows % BAD_ROW_EVERY == 0:
                    bad += 1
                    handle.write(f"{sku},{location}-X,not-a-number,SELLABLE\n")
    return rows + bad, drifts, bad


def run_reconcile(rows: int) -> dict:
    from app.kafka.admin import create_topics
    from app.kafka.broker import EmbeddedBroker

    sku_count = rows // LOCATIONS_PER_SKU
    with tempfile.TemporaryDirectory(prefix="operations-bench-") as directory:
        work = Path(directory)
        with EmbeddedBroker(work / "tansu.log") as broker:
            settings = bench_settings(broker.bootstrap_servers, work / "data")
            create_topics(settings, broker.bootstrap_servers)
            started = time.monotonic()
            generator = StreamGenerator(SEED, sku_count, 300, 5, LOCATIONS_PER_SKU)
            writer = LedgerWriter(settings, broker.bootstrap_servers)
            engines = {p: PartitionEngine(p, MemoryStore(), CHANNELS) for p in range(PARTITIONS)}
            positions = dict.fromkeys(range(PARTITIONS), 0)

            def apply(event) -> None:
                writer.append(event)
                targets = range(PARTITIONS) if type(event) in (ClockTick, PolicyChange) else (
                    ledger_partition(event.sku, PARTITIONS),)
                for partition in targets:
                    positions[partition] += 1 << 20
                    engines[partition].apply(event, positions[partition])

            apply(build_policy(300, 5))
            for event in generator.seed_stock():
                apply(event)
            remaining = rows * 11 // 10 - writer.entries
            while remaining > 0:
                for event in generator.events(min(50_000, remaining)):
                    apply(event)
                remaining = rows * 11 // 10 - writer.entries
            writer.close()
            as_of = generator.time  # the last event's time: every entry is stamped at or before it
            advance_to(engines, as_of)
            truth = {}
            for engine in engines.values():
                for sku, state in engine.store.sku_states.items():
                    for location, position in state.positions.items():
                        truth[(sku, location)] = position.sellable
            export = work / "onhand.csv"
            export_rows, expected_drifts, bad_rows = write_export(export, truth, generator.stocked)
            prepared = time.monotonic() - started
            report = work / "drift.json"
            command = [*availability_command(), "reconcile", "--snapshot", str(export), "--as-of", str(as_of),
                       "--json", str(report), "--timeout", "30"]
            began = time.monotonic()
            finished = subprocess.run(command, env=command_environment(settings), capture_output=True, text=True,
                                      timeout=600)
            seconds = time.monotonic() - began
            if finished.returncode != 5:  # drifts (1) + rows not compared (4)
                raise RuntimeError(f"reconcile exited {finished.returncode}: {finished.stderr[-2000:]}")
            document = json.loads(report.read_text())
    if document["drifting"] != expected_drifts or document["not_compared"] != bad_rows:
        raise RuntimeError(f"reconcile found {document['drifting']} drifts and {document['not_compared']} bad rows; "
                           f"expected {expected_drifts} and {bad_rows}")
    return {
        "rows": export_rows,
        "ledger_entries": document["ledger_entries"],
        "drifts": document["drifting"],
        "bad_rows": document["not_compared"],
        "impact_by_channel": document["impact_by_channel"],
        "seconds_end_to_end": round(seconds, 1),
        "seconds_in_command": {"ledger": document["ledger_seconds"], "export": document["export_seconds"],
                               "total": document["seconds"]},
        "rows_per_second": round(export_rows / seconds),
        "seconds_preparing": round(prepared, 1),
        "command": "availability reconcile --snapshot onhand.csv --as-of <ms> --json drift.json",
    }


PREVIEW_LOCATIONS_PER_SKU = 16


def candidate_policy(store_count: int, dc_count: int) -> PolicyChange:
    """The benchmark policy's next version: marketplace at 100% without its cap, store pickup with a buffer of 1."""
    current = build_policy(store_count, dc_count)
    channels = []
    for rule in current.channels:
        if rule.channel == "marketplace":
            rule = dataclasses.replace(rule, share_bp=10_000, max_advertised=None)
        elif rule.channel == "store-pickup":
            rule = dataclasses.replace(rule, buffer=1)
        channels.append(rule)
    return dataclasses.replace(current, event_id="policy-2", version=2, channels=tuple(channels))


def write_changelogs(settings, bootstrap_servers: str, engines: dict[int, PartitionEngine]) -> None:
    """Every SKU state and partition state to the table changelogs, as a worker's write-back leaves them."""
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 50, "batch.size": 4 * 1024 * 1024,
                         "queue.buffering.max.kbytes": 1024 * 1024})
    sku_topic = changelog_topic(settings, SKU_STATE_TABLE)
    partition_topic = changelog_topic(settings, PARTITION_STATE_TABLE)
    for partition, engine in engines.items():
        for sku, state in engine.store.sku_states.items():
            produce_or_wait(producer, sku_topic, encode_sku_state(state), sku.encode(), partition=partition)
        produce_or_wait(producer, partition_topic, encode_partition_state(engine.state),
                        partition_state_key(partition), partition=partition)
        producer.poll(0)
    if producer.flush(300):
        raise RuntimeError("changelog records not delivered")


def run_preview(sku_count: int) -> dict:
    from app.kafka.admin import create_topics
    from app.kafka.broker import EmbeddedBroker

    with tempfile.TemporaryDirectory(prefix="operations-bench-") as directory:
        work = Path(directory)
        with EmbeddedBroker(work / "tansu.log") as broker:
            settings = bench_settings(broker.bootstrap_servers, work / "data")
            create_topics(settings, broker.bootstrap_servers)
            generator = StreamGenerator(SEED, sku_count, 300, 5, PREVIEW_LOCATIONS_PER_SKU)
            engines = {p: PartitionEngine(p, MemoryStore(), CHANNELS) for p in range(PARTITIONS)}
            positions = dict.fromkeys(range(PARTITIONS), 0)
            policy = build_policy(300, 5)
            for partition in range(PARTITIONS):
                positions[partition] += 1 << 20
                engines[partition].apply(policy, positions[partition])
            for event in generator.seed_stock():
                partition = ledger_partition(event.sku, PARTITIONS)
                positions[partition] += 1 << 20
                engines[partition].apply(event, positions[partition])
            write_changelogs(settings, broker.bootstrap_servers, engines)
            candidate = candidate_policy(300, 5)
            # the computation alone, on the encoded states as the command holds them
            encoded = {p: ({sku: encode_sku_state(state) for sku, state in engine.store.sku_states.items()},
                           encode_partition_state(engine.state)) for p, engine in engines.items()}
            del engines, generator
            gc.collect()
            gc.freeze()  # the benchmark's own heap is not the preview's: keep the collector off it
            began = time.monotonic()
            previewer = PolicyPreviewer(candidate, frozenset(BENCH_CHANNELS), settings.engine_limits, limit=10)
            for partition, (states, stored) in encoded.items():
                previewer.add_partition(partition, decode_partition_state(stored), states,
                                        lambda sku, states=states: decode_sku_state(states[sku]))
            computation = time.monotonic() - began
            in_process = previewer.result.to_json()
            candidate_file = work / "candidate.json"
            candidate_file.write_text(json.dumps(event_to_record(candidate)[1]))
            report = work / "preview.json"
            command = [*availability_command(), "preview", "--policy", str(candidate_file), "--json", str(report),
                       "--timeout", "30"]
            began = time.monotonic()
            finished = subprocess.run(command, env=command_environment(settings), capture_output=True, text=True,
                                      timeout=600)
            seconds = time.monotonic() - began
            if finished.returncode != 0:
                raise RuntimeError(f"preview exited {finished.returncode}: {finished.stderr[-2000:]}")
            document = json.loads(report.read_text())
    if document["channels"] != in_process["channels"] or document["skus"] != sku_count:
        raise RuntimeError("the command's preview differs from the one computed in process")
    return {
        "skus": sku_count,
        "locations_per_sku": PREVIEW_LOCATIONS_PER_SKU,
        "seconds_computation": round(computation, 1),
        "seconds_end_to_end": round(seconds, 1),
        "seconds_in_command": document["seconds"],
        "keys_changed": sum(channel["changed_keys"] for channel in document["channels"].values()),
        "changes_by_channel": {name: {key: channel[key] for key in ("changed_keys", "units_gained", "units_lost",
                                                                     "out_of_stock")}
                               for name, channel in document["channels"].items()},
        "command": "availability preview --policy candidate.json --json preview.json",
    }


def load_results() -> dict:
    path = results_dir() / "operations.json"
    return json.loads(path.read_text()) if path.exists() else {}


def write_results(results: dict) -> None:
    results["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    directory = results_dir()
    directory.mkdir(exist_ok=True)
    (directory / "operations.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Operations benchmark", "", f"Machine: {results['machine']}.", ""]
    reconcile = results.get("reconcile")
    if reconcile and "seconds_in_command" in reconcile:
        lines += ["## availability reconcile", "",
                  "| export rows | ledger entries | drifts found (= expected) | bad rows | end to end | rows/s |",
                  "|---:|---:|---:|---:|---:|---:|",
                  f"| {reconcile['rows']:,} | {reconcile['ledger_entries']:,} | {reconcile['drifts']:,} | "
                  f"{reconcile['bad_rows']:,} | {reconcile['seconds_end_to_end']} s | {reconcile['rows_per_second']:,} |",
                  "", f"Inside the command (one process per core): ledger {reconcile['seconds_in_command']['ledger']} s, export "
                  f"{reconcile['seconds_in_command']['export']} s. Impact by channel: {reconcile['impact_by_channel']}.",
                  ""]
    preview = results.get("preview")
    if preview and "seconds_in_command" in preview:
        lines += ["## availability preview", "",
                  "| SKUs | locations per SKU | computation | end to end | keys changed |",
                  "|---:|---:|---:|---:|---:|",
                  f"| {preview['skus']:,} | {preview['locations_per_sku']} | {preview['seconds_computation']} s | "
                  f"{preview['seconds_end_to_end']} s | {preview['keys_changed']:,} |", "",
                  f"Computation: in this process, one process. Inside the command (one process per core): reading the "
                  f"changelogs {preview['seconds_in_command']['reading']} s, computing "
                  f"{preview['seconds_in_command']['computing']} s.", ""]
    (directory / "operations.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.operations_benchmark", description=__doc__.split(
        "\n\n")[0])
    commands = parser.add_subparsers(dest="what", required=True)
    reconcile = commands.add_parser("reconcile", help="availability reconcile on a large export")
    reconcile.add_argument("--rows", type=int, default=1_000_000)
    preview = commands.add_parser("preview", help="availability preview over many SKUs")
    preview.add_argument("--skus", type=int, default=100_000)
    args = parser.parse_args(argv)
    results = load_results()
    if args.what == "reconcile":
        results["reconcile"] = run_reconcile(args.rows)
    else:
        results["preview"] = run_preview(args.skus)
    write_results(results)
    print(json.dumps(results[args.what], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
