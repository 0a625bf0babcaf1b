"""Peak-season benchmark of the availability service: one command, every figure, each against baselines measured in
the same run.

    python -m benchmarks.peak --profile quick     # about 2 minutes: every step, small sizes, N=1
    python -m benchmarks.peak --profile peak      # the real run (about 15 minutes): bigger sizes, N=1 and N=2
    python -m benchmarks.peak --topology split    # workers with stages=availability, plus ingest processes
    availability benchmark --profile quick        # the same, through the CLI

Two scenarios, each on a fresh embedded broker (always embedded, so that runs are comparable), with the real worker
processes (`python -m app.service.worker`) and the seeded workload of benchmarks/generator.py on the real source
topics. Each is a sequence of sections, and each section's figures come from its own ledger range:

1. `main`, one worker: a backlog of single-event records (store transactions, reservation commands), a backlog of
   bulk StockMovementBatch records (200 movements each), a backlog of the realistic mix (each class with SKUs of
   its own), each followed by the baselines over its source records; then a live run of the mix at half the mix's
   sustained rate with a 4x burst; then restarts with warm and cold local state.
2. `mix-N`: the same mix backlog drained by 1 and by N workers (separate data dirs), each on a fresh broker and
   fresh state, for the scaling ratio.

`--topology split` runs the other deployment (docs/ARCHITECTURE.md, "Two topologies"): every step that starts N
workers starts them with `stages=availability` plus N x `--ingest-per-worker` ingest processes
(`python -m app.service.ingest_worker`, same settings), which stay up while the worker restarts and stop with the
scenario. "Per worker" stays per Faust worker; every section says which processes ran.

Before a section's records are sent, its stock loads (and the policy) are written straight to the ledger and the
workers have applied them: the stock on hand before the peak. The baselines of benchmarks/baselines.py (Quix
Streams, the peer; a plain confluent-kafka loop; a bare Faust agent) consume the section's own source records on the
same broker. Every throughput has two rates, the 10%-90% slope and the whole section (first record sent to last
event applied, what the targets are judged on), and a per-core figure (events per CPU second of the processes that
did the work); service / Quix Streams is the headline ratio of every section. The live load comes from a sender
process of its own (benchmarks/live_sender.py), and the CPU seconds of every process are reported per window.
Figures are read back from the broker afterwards (record timestamps and ledger positions, see
benchmarks/analysis.py); while the workers run, the harness only reads the ledger (to know when a section's events
are all on it, and where) and polls committed offsets. Results:
benchmarks/results/<profile>.json, .md and .png (<profile>-split.* for the split topology); docs/PERFORMANCE.md
explains them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app.engine import event_from_record
from app.kafka.admin import create_topics
from app.kafka.batch_sender import default_partition
from app.kafka.broker import EmbeddedBroker, free_loopback_port
from app.service.ingest import LedgerWriter
from app.service.memory import disk_usage_bytes
from app.settings import Settings
from app.wire.serialization import AvroCodec
from app.wire.topics import (
    DEAD_LETTER_ERROR_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_SOURCE_TOPIC_HEADER,
    DEAD_LETTERS,
    LEDGER,
    RESERVATION_COMMANDS,
    RESERVATION_DECISIONS,
    STOCK_MOVEMENTS,
    STORE_TRANSACTIONS,
    CleanupPolicy,
    TopicSpec,
    availability_topic,
    ledger_key,
)
from benchmarks import analysis
from benchmarks.baselines import BASELINE_OUTPUT_TOPIC
from benchmarks.cpu import CpuSampler
from benchmarks.generator import CHANNELS, GeneratedRecord, RateSchedule, Workload, WorkloadConfig
from benchmarks.harness import (
    CommitWatcher,
    IngestWorker,
    LedgerTail,
    RecordProducer,
    ServiceWorker,
    read_outputs,
    read_records,
    run_module,
    settings_environment,
    stop_all,
    wait_for_events_applied,
)
from benchmarks.live_sender import DEFAULT_LINGER_MS, LiveSender
from benchmarks.memory_census import PhaseCensuses, census_environment
from benchmarks.quix_baseline import SOURCE_KEY_TOPIC
from benchmarks.report import RESULTS_DIR_VARIABLE, results_dir, results_name
from benchmarks.worker_metrics import MemorySampler

PARTITIONS = 8
BURST_FACTOR = 4.0
FAUST_MINIMUM_RECORDS = 300
MINIMUM_INGEST_BATCHES = 2  # a section's ingest rate needs more source records than this many full micro-batches
STEADY_FRACTION = 0.5  # the live run's steady rate, as a fraction of the sustained maximum just measured
TARGETS = {  # judged on whole-section rates (first record sent to last event applied)
    "mix_per_core_vs_quix": 1.0,
    "single_per_core_vs_quix": 1.0,
    "bulk_events_per_second_per_worker": 100_000,
    "live_fraction_of_backlog_rate": 0.9,  # "as fast live as from a backlog"
    "p99_ms_at_half_max": 250,
    "burst_catch_up_seconds": 60,
}
BASELINES = ("quix", "confluent", "faust")  # quix first: the peer, the headline ratio of every section
SINGLE_TOPICS = (STORE_TRANSACTIONS.name, RESERVATION_COMMANDS.name)
BULK_TOPICS = (STOCK_MOVEMENTS.name,)
MIX_TOPICS = SINGLE_TOPICS + BULK_TOPICS
TOPOLOGIES = ("all", "split")  # docs/ARCHITECTURE.md, "Two topologies"
RESTART_INGEST = {
    "all": "the restarted worker ingests the probes itself (its ingest thread) before it applies them",
    "split": "ingest processes kept running: only the availability worker restarts, the probes are on the ledger "
             "before it starts",
}


@dataclass(frozen=True)
class Profile:
    name: str
    single_events: int
    bulk_events: int
    mix_events: int
    workers: tuple[int, ...]  # worker counts for the mix backlog (1 runs in the `mix` scenario)
    steady_seconds: float  # live run: steady load before the burst
    burst_seconds: float  # live run: BURST_FACTOR x the steady rate
    after_max_seconds: float  # live run: steady load after the burst, at most (ends earlier once caught up)
    settle_seconds: float  # live run: kept going this long after the lag looks caught up
    warmup_seconds: float  # live run: left out of the steady latency figures
    cold_restart: bool = True
    baselines: bool = True
    # the confluent-kafka loop and the Faust agent read a section again until they have run this long; the Quix app
    # reads it once (benchmarks.baselines), so the sections are sized for it to run this long too in `peak`
    baseline_min_seconds: float = 0.0
    max_live_rate: float | None = None  # cap of the live run's steady rate (events/s)
    drain_timeout_seconds: float = 900.0
    cold_restart_timeout_seconds: float = 600.0


PROFILES = {
    # for the test suite: every code path that the quick profile has, at toy sizes
    # (mix: more source records than 2 ingest micro-batches, so that the ingest rate is measured)
    "smoke": Profile("smoke", single_events=0, bulk_events=0, mix_events=3_500, workers=(1,),
                     steady_seconds=3, burst_seconds=2, after_max_seconds=6, settle_seconds=1, warmup_seconds=1,
                     cold_restart=False, max_live_rate=250, drain_timeout_seconds=120,
                     cold_restart_timeout_seconds=60),
    "quick": Profile("quick", single_events=3_000, bulk_events=8_000, mix_events=4_000, workers=(1,),
                     steady_seconds=4, burst_seconds=3, after_max_seconds=5, settle_seconds=1, warmup_seconds=1,
                     drain_timeout_seconds=300, cold_restart_timeout_seconds=120, baseline_min_seconds=2),
    # bulk: 2,000 records of 200 movements; single and mix: enough events for the Quix app, which reads a section
    # once, to run for more than 5 s at the 13,000-16,000 events/s it does here
    "peak": Profile("peak", single_events=120_000, bulk_events=400_000, mix_events=100_000, workers=(1, 2),
                    steady_seconds=40, burst_seconds=60, after_max_seconds=90, settle_seconds=10,
                    warmup_seconds=10, baseline_min_seconds=5),
}


# ----------------------------------------------------------------------------------------------------- progress
class Reporter:
    """Progress bars and step lines (rich)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)

    def step(self, text: str) -> None:
        self.console.log(text)

    @contextmanager
    def bar(self, description: str, total: int) -> Iterator:
        task = self.progress.add_task(description, total=max(total, 1))
        try:
            yield lambda done: self.progress.update(task, completed=done)
        finally:
            self.progress.update(task, completed=self.progress.tasks[task].completed)
            self.progress.stop_task(task)


# ------------------------------------------------------------------------------------------------------ scenario
@dataclass
class Section:
    name: str
    start_events: dict[int, int]  # events on each ledger partition before the section
    events: int
    first_seq: int
    records: list[GeneratedRecord] = field(default_factory=list)
    sent_ms: array = field(default_factory=lambda: array("d"))  # per record
    started_ms: float = 0.0
    end_events: dict[int, int] | None = None  # events on each ledger partition through the section
    source_start: dict[tuple[str, int], int] = field(default_factory=dict)  # first source offsets of the section
    source_end: dict[tuple[str, int], int] = field(default_factory=dict)  # first source offsets after it


class Scenario:
    """One embedded broker with the service's topics, one workload, its workers and what was sent.

    Topology `all`: each worker runs both stages. `split`: the workers run the availability stage only
    (`stages=availability`) and `ingest_per_worker` ingest processes per worker feed the ledger; they are started and
    stopped with the workers (`start_workers`, and at the end of the scenario) but not by `stop_workers`, so that a
    restarted worker finds its ledger fed as a deployment's would be."""

    def __init__(self, name: str, scratch: Path, workload: Workload, reporter: Reporter, stack: ExitStack,
                 topology: str = "all", ingest_per_worker: int = 1) -> None:
        if topology not in TOPOLOGIES:
            raise ValueError(f"topology {topology!r}: one of {TOPOLOGIES}")
        self.name = name
        self.topology = topology
        self.ingest_per_worker = ingest_per_worker if topology == "split" else 0
        self._workload = workload
        self.reporter = reporter
        self.directory = scratch / name
        self.broker = stack.enter_context(EmbeddedBroker(self.directory / "tansu.log"))
        self.bootstrap = self.broker.bootstrap_servers
        # CPU seconds of every process of the scenario, sampled while the harness waits (per-core figures)
        self.cpu = CpuSampler()
        self.cpu.track("broker", self.broker.pid)
        self.cpu.track("benchmark", os.getpid(), descendants=False)  # the harness: ledger reader, commit polls
        self.cpu.track_machine()  # every process of the machine, ours or another job's
        self.settings = Settings(kafka_bootstrap_servers=self.bootstrap, app_id=f"peak-{name}",
                                 data_dir=self.directory / "worker-1", partitions=PARTITIONS,
                                 web_port=free_loopback_port(), tick_interval_seconds=3600, channels=CHANNELS,
                                 log_level="INFO", stages="availability" if topology == "split" else "all")
        create_topics(self.settings, self.bootstrap)
        create_topics(self.settings, self.bootstrap, specs=[TopicSpec(
            BASELINE_OUTPUT_TOPIC, "sku", None, "any", CleanupPolicy.DELETE, ("baseline",), (), "baseline output")])
        self.codec = AvroCodec(self.settings)
        self.ledger = LedgerWriter(self.codec, PARTITIONS)
        self.producer = RecordProducer(self.bootstrap)
        self.ledger_events = [0] * PARTITIONS  # events put on each ledger partition so far (by us or by ingest)
        self.source_records: Counter[str] = Counter()
        self.source_events: Counter[str] = Counter()
        self.source_offsets: Counter[tuple[str, int]] = Counter()  # records sent per source topic partition
        self.workloads = [workload]
        self.sections: dict[str, Section] = {}
        self.workers: list[ServiceWorker] = []
        self.ingest: list[IngestWorker] = []  # `split` only
        self.watcher = CommitWatcher(self.bootstrap, self.settings.app_id, LEDGER.name, PARTITIONS)
        stack.callback(self.watcher.close)
        self.ledger_tail = LedgerTail(self.bootstrap, self.codec.serde(LEDGER), LEDGER.name, PARTITIONS)
        stack.callback(self.ledger_tail.close)
        stack.callback(self.stop_ingest)  # after the workers (callbacks run last in, first out), before the broker
        stack.callback(self.stop_workers)
        self.policy_written = False

    @property
    def workload(self) -> Workload:
        return self._workload

    @workload.setter
    def workload(self, workload: Workload) -> None:
        self._workload = workload
        if workload not in self.workloads:
            self.workloads.append(workload)

    # -- ledger-direct writes ---------------------------------------------------------------------------------

    def write_stock(self, loads) -> None:
        """The policy (once) and the stock loads, straight to the ledger, ahead of the records that need them."""
        now = int(time.time() * 1000)
        if not self.policy_written:
            policy = event_from_record("PolicyChange", self.workload.policy())
            for append in self.ledger.broadcast(self.ledger.entry_value(policy, None, now)):
                self.producer.produce(LEDGER.name, append.key, append.value, append.partition)
                self.ledger_events[append.partition] += 1
            self.policy_written = True
        for load in loads:
            event = event_from_record("StockMovement", self.workload.stock_load_record(load))
            partition = self.workload.partition_of(load.sku)
            self.producer.produce(LEDGER.name, ledger_key(load.sku).encode(),
                                  self.ledger.entry_value(event, None, now), partition)
            self.ledger_events[partition] += 1
        self.producer.flush()

    # -- workers --------------------------------------------------------------------------------------------

    def start_workers(self, count: int, data_dir_suffix: str = "") -> list[ServiceWorker]:
        """`count` workers and, in `split`, `ingest_per_worker` ingest processes for each (their logs in
        `ingest-<n>/ingest.log`, next to the workers' `worker-<n>/worker.log`)."""
        started = []
        for index in range(count):
            settings = self.settings.model_copy(update={
                "data_dir": self.directory / f"worker-{index + 1}{data_dir_suffix}",
                "web_port": free_loopback_port()})
            started.append(ServiceWorker(settings).start())
            self.workers.append(started[-1])
            self.cpu.track(f"worker-{index + 1}{data_dir_suffix}", started[-1].pid)
        for _ in range(count * self.ingest_per_worker):
            settings = self.settings.model_copy(update={
                "data_dir": self.directory / f"ingest-{len(self.ingest) + 1}{data_dir_suffix}",
                "web_port": free_loopback_port()})
            self.ingest.append(IngestWorker(settings).start())
            self.cpu.track(f"ingest-{len(self.ingest)}{data_dir_suffix}", self.ingest[-1].pid)
        self.cpu.sample()
        return started

    def stop_workers(self) -> None:
        """Stops the workers, not the ingest processes (a restart keeps them running)."""
        try:
            stop_all(self.workers)
        finally:
            self.workers = [worker for worker in self.workers if worker.process is not None
                            and worker.process.poll() is None]

    def stop_ingest(self) -> None:
        try:
            stop_all(self.ingest)
        finally:
            self.ingest = [process for process in self.ingest if process.process is not None
                           and process.process.poll() is None]

    def processes(self, workers: int) -> str:
        return processes_label(workers, workers * self.ingest_per_worker)

    def alive(self) -> None:
        for process in [*self.workers, *self.ingest]:
            process.check_alive()

    def wait_until_applied(self, description: str, timeout: float, since: dict[int, int] | None = None,
                           read_seconds: float = 2.0) -> float:
        """Every event sent so far is on the ledger and applied (committed); the bar counts events from `since`
        (events per ledger partition before the step). Returns the seconds waited."""
        expected = list(self.ledger_events)
        done_before = sum(since.values()) if since else 0
        with self.reporter.bar(description, sum(expected) - done_before) as update:
            waited = wait_for_events_applied(self.ledger_tail, self.watcher, expected, timeout,
                                             on_progress=lambda done: update(max(0, done - done_before)),
                                             alive=self.alive_and_sampled, read_seconds=read_seconds)
        self.cpu.sample()
        return waited

    def alive_and_sampled(self) -> None:
        self.alive()
        self.cpu.sample()

    def service_cpu_seconds(self, start_ms: float, end_ms: float) -> dict[str, float | None]:
        """CPU seconds of each worker and ingest process between two times."""
        return self.cpu.window(start_ms, end_ms, [name for name in self.cpu.names
                                                  if name.startswith(("worker-", "ingest-"))])

    def events_applied(self) -> int:
        """Events in the ledger records before the group's committed offsets, as far as the ledger has been read
        (a lower bound while it is being written)."""
        return sum(self.ledger_tail.map.events_before(partition, offset)
                   for partition, offset in enumerate(self.watcher.offsets()))

    def wait_until_ready(self, workers: list[ServiceWorker], timeout: float = 120.0) -> None:
        """Every worker has finished a recovery ("Worker ready") and the ledger so far is applied."""
        deadline = time.monotonic() + timeout
        while any(worker.log_count("Worker ready") == 0 for worker in workers):
            self.alive()
            if time.monotonic() > deadline:
                raise TimeoutError("workers not ready in time")
            time.sleep(0.2)
        self.wait_until_ingest_ready(max(1.0, deadline - time.monotonic()))

    def wait_until_ingest_ready(self, timeout: float = 120.0) -> None:
        """Every ingest consumer holds source partitions (group `<app_id>-ingest`: the ingest processes in `split`,
        the workers' ingest threads in `all`): a backlog sent now is ingested at once, not after the group's first
        join."""
        deadline = time.monotonic() + timeout
        consumers = self.ingest if self.topology == "split" else self.workers
        while not all(process.ingest_assigned() for process in consumers):
            self.alive()
            if time.monotonic() > deadline:
                raise TimeoutError("ingest consumers not assigned source partitions in time")
            time.sleep(0.2)

    # -- sections -------------------------------------------------------------------------------------------

    def new_section(self, name: str, records: list[GeneratedRecord]) -> Section:
        events = sum(record.events for record in records)
        first = min((record.seqs[0] for record in records if record.seqs[0] >= 0), default=0)
        section = Section(name, dict(enumerate(self.ledger_events)), events, first, records)
        section.source_start = dict(self.source_offsets)
        self.sections[name] = section
        return section

    def encode(self, records: list[GeneratedRecord]) -> list[tuple[str, bytes, bytes]]:
        encode = self.codec.encode
        return [(record.topic.name, record.key.encode(), encode(record.topic, record.value)) for record in records]

    def send(self, section: Section, encoded: list[tuple[str, bytes, bytes]], index: int) -> None:
        topic, key, value = encoded[index]
        self.producer.produce(topic, key, value)
        self.account(section, index, topic, key, time.time() * 1000)

    def account(self, section: Section, index: int, topic: str, key: bytes, sent_ms: float) -> None:
        """What sending record `index` of `section` at `sent_ms` puts where (offsets, events per ledger partition)."""
        record = section.records[index]
        section.sent_ms.append(sent_ms)
        # the producer's partitioner (murmur2_random) puts a keyed record where Kafka's default partitioner does
        self.source_offsets[(topic, source_partition(key))] += 1
        self.source_records[topic] += 1
        self.source_events[topic] += record.events
        for partition in record.partitions:
            self.ledger_events[partition] += 1

    def blast(self, section: Section) -> None:
        """Send a section's records as fast as the producer takes them (a backlog)."""
        encoded = self.encode(section.records)
        self.cpu.sample()
        section.started_ms = time.time() * 1000
        for index in range(len(encoded)):
            self.send(section, encoded, index)
            if index % 2000 == 0:
                self.producer.poll()
        self.producer.flush()
        section.end_events = dict(enumerate(self.ledger_events))
        section.source_end = dict(self.source_offsets)


# ----------------------------------------------------------------------------------------------------- the run
class PeakBenchmark:
    def __init__(self, profile: Profile, seed: int, target_rate: float, scratch: Path, reporter: Reporter,
                 py_spy: Path | None = None, topology: str = "all", ingest_per_worker: int = 1,
                 sender_linger_ms: int = DEFAULT_LINGER_MS, memory_census: Path | None = None) -> None:
        self.profile = profile
        self.memory_census = memory_census  # where the main worker writes its memory censuses, if asked
        self.sender_linger_ms = sender_linger_ms
        self.topology = topology
        self.ingest_per_worker = ingest_per_worker if topology == "split" else 0
        self.config = WorkloadConfig(seed=seed, partitions=PARTITIONS)
        self.target_rate = target_rate
        self.scratch = scratch
        self.reporter = reporter
        self.py_spy = py_spy
        self.result: dict = {"throughput": {}, "restart": {}, "resources": {}}

    def run(self) -> dict:
        started = time.monotonic()
        self.result["load_average_at_start"] = _load_average()
        self.reporter.step(f"topology [bold]{self.topology}[/]: one worker = "
                           f"{processes_label(1, self.ingest_per_worker)}")
        self.main_scenario()
        if any(count > 1 for count in self.profile.workers):
            # every worker count on a fresh broker with the same backlog, 1 included: the same conditions
            for count in sorted(set(self.profile.workers) | {1}):
                self.scaling_scenario(count)
        self.result["duration_seconds"] = round(time.monotonic() - started, 1)
        self.result["load_average_at_end"] = _load_average()
        return self.finish()

    # -- scenarios ------------------------------------------------------------------------------------------

    def scenario(self, name: str, workload: Workload, stack: ExitStack) -> Scenario:
        return Scenario(name, self.scratch, workload, self.reporter, stack, self.topology,
                        max(1, self.ingest_per_worker))

    def main_scenario(self) -> None:
        profile = self.profile
        classes = [(mix, events, topics, prefix) for mix, events, topics, prefix in (
            ("single", profile.single_events, SINGLE_TOPICS, "S"), ("bulk", profile.bulk_events, BULK_TOPICS, "B"),
            ("mix", profile.mix_events, MIX_TOPICS, "SKU")) if events]
        self.reporter.step("[bold]main[/]: backlogs of " + ", ".join(f"{events:,} {mix}" for mix, events, _, _
                                                                  in classes)
                           + f" events (each followed by its baselines), a live run with a {BURST_FACTOR:g}x burst, "
                           "restarts")
        with ExitStack() as stack:
            mixed = Workload(self.config, "mixed")
            scenario = self.scenario("main", mixed, stack)
            self.result["ledger_batch_max_entries"] = scenario.settings.ledger_batch_max_entries
            self.result["write_back_interval_seconds"] = scenario.settings.write_back_interval_seconds
            if self.memory_census is None:
                workers = scenario.start_workers(1)
                censuses = None
            else:
                with census_environment(self.memory_census):
                    workers = scenario.start_workers(1)
                # a census every 20 s at most in `peak`, more often in the short profiles' short phases
                censuses = PhaseCensuses(self.memory_census, workers[0].pid,
                                         min_interval_seconds=min(20.0, self.profile.steady_seconds / 2))
            # where the worker's memory is, per phase (the peak resident set says only how much)
            memory = MemorySampler(workers[0].settings.web_port,
                                   on_scrape=None if censuses is None else censuses.scraped).start()
            stack.callback(memory.stop)
            scenario.wait_until_ingest_ready()
            drained = []
            baselines: dict[str, dict] = {}
            profilers = []
            for mix, events, topics, prefix in classes:
                workload = mixed if mix == "mix" else Workload(self.config, mix, prefix=f"p{prefix.lower()}",
                                                               sku_prefix=prefix)
                scenario.workload = workload
                memory.phase = mix
                records = list(workload.records(events))
                before = dict(enumerate(scenario.ledger_events))
                scenario.write_stock(workload.take_stock_loads())
                scenario.wait_until_applied(f"{mix}: stock loads", 300, before)
                section = scenario.new_section(mix, records)
                if mix == "mix":
                    profilers = self.start_py_spy(workers[0], scenario.ingest[:1])
                scenario.blast(section)
                scenario.wait_until_applied(f"{mix}: service drain", profile.drain_timeout_seconds,
                                            section.start_events)
                drained.append((mix, topics, section))
                if profile.baselines:
                    # now, while the section is the last thing on its topics: a baseline reading the section's
                    # range then never competes with records sent after it (the worker idles meanwhile)
                    baselines[mix] = self.baselines(scenario, topics, section)
            outputs = self.read_outputs(scenario)
            for mix, topics, section in drained:
                service = self.section_throughput(scenario, section, outputs, workers=1)
                self.result["throughput"][mix] = {"service": service, "records": len(section.records),
                                                  "events": section.events}
            scenario.workload = mixed
            # the sustained maximum is the mix's whole-section rate (first record sent to last event applied): the
            # slope of the middle 80% leaves out the tail the service leaves behind, and overstates what it sustains
            mix_rate = self.result["throughput"].get("mix", {}).get("service", {}).get(
                "whole_section_events_per_second")
            memory.phase = "live"
            live = self.live_run(scenario, mixed, mix_rate)
            self.stop_py_spy(profilers)
            memory.stop()
            # while the worker still runs: a census asked for last is written before the worker stops
            censuses_by_phase = None if censuses is None else censuses.by_phase()
            workers[0].read_peak_rss()
            ingest_rss = [process.read_peak_rss() for process in scenario.ingest]
            scenario.stop_workers()
            held = sum(len(workload.positions) for workload in scenario.workloads)
            disk = disk_usage_bytes(Path(workers[0].settings.data_dir) / "worker")
            self.result["resources"] = {
                "peak_rss_mib_per_worker": workers[0].peak_rss_mib,
                "peak_rss_mib_per_ingest_process": ingest_rss,  # `split` only
                # the worker's /metrics every 2 s: the parts at the largest resident set of each phase and overall
                "worker_memory_at_peak_mib": memory.overall_peak(),
                "worker_memory_at_peak_by_phase_mib": memory.at_peak,
                "rocksdb_bytes": disk,
                "sku_locations_held": held,
                "rocksdb_mib_per_million_sku_locations": round(disk / 2**20 / (held / 1e6), 1) if held else None,
                "measured_after": "every backlog and the live run, worker stopped cleanly (RocksDB flushed)",
            }
            if censuses_by_phase is not None:
                self.result["resources"]["memory_census_by_phase_mib"] = censuses_by_phase
                self.result["resources"]["memory_census_note"] = (
                    f"censuses in {self.memory_census.name}/ beside these results; each stopped the worker for "
                    "seconds: this run's speed and latency figures are not ones to quote")
            self.restarts(scenario, mixed)
            outputs = self.read_outputs(scenario)
            if live is not None:
                self.result["live"] = self.live_figures(scenario, live, outputs)
            self.result["restart"] = self.restart_figures(scenario, outputs)
            dead_letters, dead_letter_reasons = self.dead_letters(scenario)
            decisions = self.count(scenario, RESERVATION_DECISIONS.name)
            self.result["validity"] = {
                "dead_letters": dead_letters, "dead_letter_reasons": dead_letter_reasons,
                "reservation_decisions": decisions,
                "ledger_repeated_events": scenario.ledger_tail.map.repeated_events,
                "ledger_repeated_examples": scenario.ledger_tail.map.repeated_examples,
                "harness_ledger_decode_seconds": round(scenario.ledger_tail.decode_seconds, 2),
                "note": "the generated events are valid by construction: dead letters here are races between "
                        "source topics (docs/PERFORMANCE.md)"}
            for mix, topics, section in drained:
                entry = self.result["throughput"][mix]
                entry["service"]["peak_rss_mib"] = [workers[0].peak_rss_mib]
                entry["service"]["ingest_peak_rss_mib"] = ingest_rss
                entry["dead_letters"] = dead_letters  # of the whole scenario
                if mix in baselines:
                    entry["baselines"] = baselines[mix]
                    entry["ratios"] = self.ratios(entry["service"], entry["baselines"])

    def scaling_scenario(self, count: int) -> None:
        self.reporter.step(f"[bold]mix x{count}[/]: the same backlog, {count} workers (own data dirs)")
        with ExitStack() as stack:
            workload = Workload(self.config, "mixed")
            scenario = self.scenario(f"mix-{count}", workload, stack)
            section = scenario.new_section("drain", list(workload.records(self.profile.mix_events)))
            scenario.write_stock(workload.take_stock_loads())
            section.start_events = dict(enumerate(scenario.ledger_events))
            workers = scenario.start_workers(count)
            scenario.wait_until_ready(workers)
            scenario.wait_until_applied(f"mix x{count}: stock loads", 300)
            scenario.blast(section)
            scenario.wait_until_applied(f"mix x{count}: service drain", self.profile.drain_timeout_seconds,
                                        section.start_events)
            rss = [worker.read_peak_rss() for worker in workers]
            ingest_rss = [process.read_peak_rss() for process in scenario.ingest]
            scenario.stop_workers()
            scenario.stop_ingest()
            service = self.section_throughput(scenario, section, self.read_outputs(scenario), workers=count)
            service["peak_rss_mib"] = rss
            service["ingest_peak_rss_mib"] = ingest_rss
            service["ready_rebalances"] = [worker.log_count("Worker ready") for worker in workers]
            one = (self.result["throughput"].get("mix_1_workers") or self.result["throughput"]["mix"])["service"]
            # whole-section rates, as the targets and the capacity line
            whole = "whole_section_events_per_second"
            service["scaling_efficiency"] = analysis.ratio(service[whole], count * one[whole] if one[whole] else None)
            # the ingest stage's own scaling (ingest processes in `split`, the workers' ingest threads in `all`)
            one_ingest = one["ingest"].get(whole)
            service["ingest_scaling_efficiency"] = analysis.ratio(service["ingest"].get(whole),
                                                                  count * one_ingest if one_ingest else None)
            entry = {"service": service, "events": section.events}
            baselines = self.result["throughput"]["mix"].get("baselines")
            if baselines:
                entry["ratios"] = self.ratios(service, baselines)
            self.result["throughput"][f"mix_{count}_workers"] = entry

    # -- live run -------------------------------------------------------------------------------------------

    def live_run(self, scenario: Scenario, workload: Workload, max_rate: float | None) -> dict:
        profile = self.profile
        steady_rate = max(50.0, STEADY_FRACTION * (max_rate or 100.0))
        if profile.max_live_rate is not None:
            steady_rate = min(steady_rate, profile.max_live_rate)
        burst = (profile.steady_seconds, profile.burst_seconds, BURST_FACTOR)
        schedule = RateSchedule(steady_rate, (burst,))
        horizon = profile.steady_seconds + profile.burst_seconds + profile.after_max_seconds
        events = int(schedule.events_by(horizon))
        self.reporter.step(f"live: {steady_rate:,.0f} events/s steady, {BURST_FACTOR:g}x for "
                           f"{profile.burst_seconds:g}s after {profile.steady_seconds:g}s (up to {events:,} events)")
        records = list(workload.records(events))
        before = dict(enumerate(scenario.ledger_events))
        scenario.write_stock(workload.take_stock_loads())
        section = scenario.new_section("live", records)
        scenario.wait_until_applied("live: stock loads", 300, before)
        section.start_events = dict(enumerate(scenario.ledger_events))
        # everything the sender needs, before the clock starts: encoded records, their partitions and send times
        encoded = [(topic, key, value, source_partition(key)) for topic, key, value in scenario.encode(records)]
        due, cumulative, total = [], [0], 0
        for record in records:
            total += record.events
            cumulative.append(total)  # events in the first n records
            due.append(schedule.time_of(total))
        burst_end = profile.steady_seconds + profile.burst_seconds
        sender = LiveSender(scenario.directory / "live-sender", scenario.bootstrap, encoded, due,
                            self.sender_linger_ms)
        caught_up_at = None
        try:
            sender.start()
            scenario.cpu.track("sender", sender.pid)
            scenario.cpu.sample()
            section.started_ms = start = time.time() * 1000
            origin = time.monotonic()
            with self.reporter.bar("live: events sent", events) as update:
                while sender.alive():
                    now = time.monotonic() - origin
                    sent_records = sender.sent()
                    sent_events = cumulative[sent_records]
                    update(sent_events)
                    if sent_records == len(records):
                        break
                    scenario.alive()
                    scenario.cpu.sample()
                    # a little at a time, like any consumer of the ledger: not all of it at the end of the burst
                    scenario.ledger_tail.read(max_seconds=0.1)
                    if now > burst_end + 3 and caught_up_at is None:
                        applied = scenario.events_applied() - sum(section.start_events.values())
                        # committed offsets trail by up to a commit interval (2.8 s): within 4 s of events is caught up
                        if sent_events - applied <= steady_rate * 4:
                            caught_up_at = now
                    if caught_up_at is not None and now > caught_up_at + profile.settle_seconds:
                        break
                    sender.wait(0.5)  # the harness checks twice a second; returns early if the sender ends
                sent = sender.stop()
                update(cumulative[len(sent["sent_ms"])])
        finally:
            sender.kill()
        scenario.cpu.sample()
        section.started_ms = start = sent["start_ms"]  # the schedule's origin in the sender
        for index, sent_ms in enumerate(sent["sent_ms"]):
            topic, key, _, _ = encoded[index]
            scenario.account(section, index, topic, key, sent_ms)
        sent_events = cumulative[len(sent["sent_ms"])]
        sending_seconds = round((time.time() * 1000 - start) / 1000, 1)
        section.end_events = dict(enumerate(scenario.ledger_events))
        section.source_end = dict(scenario.source_offsets)
        section.events = sent_events
        del section.records[len(section.sent_ms):]
        # reading the ledger a little at a time, as during the run: the catch-up is measured, the harness's own
        # ledger reading should not compete with it for the cores
        scenario.wait_until_applied("live: service catches up", profile.drain_timeout_seconds,
                                    section.start_events, read_seconds=0.1)
        return {"steady_rate": steady_rate, "burst_rate": steady_rate * BURST_FACTOR, "schedule": schedule,
                "start_ms": start, "section": section, "events_sent": sent_events,
                "sent_seconds": sending_seconds,
                "caught_up_seconds_after_start": round((time.time() * 1000 - start) / 1000, 1)}

    def live_figures(self, scenario: Scenario, live: dict, outputs) -> dict:
        profile = self.profile
        section: Section = live["section"]
        start = live["start_ms"]
        burst_start = start + profile.steady_seconds * 1000
        burst_end = burst_start + profile.burst_seconds * 1000
        record_of = self.record_index(section)
        prefix = scenario.workload.prefix
        samples: list[tuple[float, float]] = []  # (sent ms, latency ms)
        for output in outputs:
            seq = _seq(output.event_id, prefix)
            if seq is None:
                continue
            index = record_of.get(seq)
            if index is not None:
                sent = section.sent_ms[index]
                samples.append((sent, output.timestamp - sent))
        windows = {
            "steady": (start + profile.warmup_seconds * 1000, burst_start),
            "burst": (burst_start, burst_end),
            "after_burst": (burst_end, float("inf")),
        }
        latency = {name: analysis.latency_summary(lat for sent, lat in samples if low <= sent < high)
                   for name, (low, high) in windows.items()}
        produced, total = [], 0
        for index, record in enumerate(section.records):
            total += record.events
            produced.append((section.sent_ms[index], total))
        applied = analysis.progress_series(self.applied_positions(scenario, outputs), section.start_events,
                                           section.end_events)
        ledgered = analysis.progress_series(scenario.ledger_tail.map.ledgered(), section.start_events,
                                            section.end_events)
        end = max(applied[-1][0] if applied else start, produced[-1][0] if produced else start)
        publish_lag = analysis.lag_series(produced, applied, start, end)
        ledger_lag = analysis.lag_series(produced, ledgered, start, end)
        # "lag back to zero": no more than a quarter second of events in flight (the 250 ms latency target's worth)
        threshold = live["steady_rate"] * 0.25
        catch_up = analysis.catch_up_seconds(publish_lag, burst_end, threshold)
        lag_at_burst_start = analysis.count_at(publish_lag, burst_start)
        self.chart_data = {
            "origin_ms": start, "burst": (profile.steady_seconds, profile.steady_seconds + profile.burst_seconds),
            "sent_rate": analysis.rate_over_time(produced, start),
            "applied_rate": analysis.rate_over_time(applied, start),
            "latency": analysis.latency_over_time(samples, start),
            "lag": [((t - start) / 1000, v) for t, v in publish_lag],
            "ledger_lag": [((t - start) / 1000, v) for t, v in ledger_lag],
        }
        sustained = self.result["throughput"]["mix"]["service"]["whole_section_events_per_second"]
        live_rate = analysis.live_rate_while_behind(applied, publish_lag, produced, burst_start, burst_end, threshold)
        rate = live_rate["events_per_second"]
        live_rate["fraction_of_sustained_max"] = round(rate / sustained, 3) if rate is not None and sustained else None
        live_rate["target_fraction_of_sustained_max"] = TARGETS["live_fraction_of_backlog_rate"]
        windows_cpu = {name: (low, high) for name, (low, high) in
                       (("steady", (start, burst_start)), ("burst", (burst_start, burst_end)),
                        ("after_burst", (burst_end, applied[-1][0] if applied else burst_end)))}
        return {
            "steady_events_per_second": round(live["steady_rate"], 1),
            "sender_linger_ms": self.sender_linger_ms,
            "burst_events_per_second": round(live["burst_rate"], 1),
            "sustained_max_events_per_second": sustained,
            "sustained_max_measure": "the mix backlog's whole-section rate (first record sent to last event applied)",
            "steady_fraction_of_sustained_max": round(live["steady_rate"] / sustained, 3) if sustained else None,
            "burst_seconds": profile.burst_seconds,
            "events_sent": live["events_sent"],
            "seconds_sent": live["sent_seconds"],
            "seconds_until_all_applied": live["caught_up_seconds_after_start"],
            "latency": latency,
            "latency_measure": "availability record CreateTime (worker's producer, at send) minus source record "
                               "CreateTime (benchmark's producer, at produce()); one clock; per availability record",
            "max_publish_lag_events": round(max((v for _, v in publish_lag), default=0)),
            "max_ledger_lag_events": round(max((v for _, v in ledger_lag), default=0)),
            "caught_up_lag_events": round(threshold),
            "publish_lag_at_burst_start_events": round(lag_at_burst_start),
            "catch_up_seconds_after_burst": None if catch_up is None else round(catch_up, 1),
            "live_rate_while_behind": live_rate,
            "live_rate_measure": "events applied per second from the burst's start to the earlier of the lag back "
                                 "within a quarter second of events and the last record sent (a live stream with a "
                                 "backlog waiting), over the sustained maximum",
            "burst_backlog_arithmetic": _burst_arithmetic(live["steady_rate"], BURST_FACTOR, profile.burst_seconds,
                                                          sustained),
            "cpu_seconds": {name: self.window_cpu_and_work(scenario, applied, low, high)
                            for name, (low, high) in windows_cpu.items()},
        }

    def window_cpu_and_work(self, scenario: Scenario, applied: list, start_ms: float, end_ms: float) -> dict:
        """`window_cpu`, with the events the service applied in the window and per CPU second of its processes:
        what a CPU second of the service does live, beside its per-core figure from a backlog."""
        figure = self.window_cpu(scenario, start_ms, end_ms)
        return {**figure, **analysis.work_per_cpu_second(applied, start_ms, end_ms,
                                                          figure["workers"] + figure["ingest_processes"])}

    @staticmethod
    def window_cpu(scenario: Scenario, start_ms: float, end_ms: float) -> dict:
        """CPU seconds of each kind of process between two times, and how many of the machine's cores they kept
        busy: whether the service or the machine was the limit."""
        seconds = scenario.cpu.window(start_ms, end_ms)
        kinds = {"sender": ["sender"], "broker": ["broker"], "benchmark": ["benchmark"],
                 "workers": [name for name in seconds if name.startswith("worker-")],
                 "ingest_processes": [name for name in seconds if name.startswith("ingest-")]}
        figure = {kind: round(sum(seconds.get(name) or 0.0 for name in names), 2) for kind, names in kinds.items()}
        wall = max(0.0, (end_ms - start_ms) / 1000)
        figure["total"] = round(sum(figure.values()), 2)
        figure["wall_seconds"] = round(wall, 1)
        figure["cores_busy"] = round(figure["total"] / wall, 2) if wall else None
        machine = seconds.get("machine")  # the run's processes and anything else the machine ran
        figure["machine_cores_busy"] = round(machine / wall, 2) if wall and machine is not None else None
        figure["cores"] = os.cpu_count()
        return figure

    # -- restarts -------------------------------------------------------------------------------------------

    def restarts(self, scenario: Scenario, workload: Workload) -> None:
        kinds = [("warm", scenario.settings.data_dir)]
        if self.profile.cold_restart:
            kinds.append(("cold", scenario.directory / "worker-cold"))
        self.restart_runs = {}
        for kind, data_dir in kinds:
            probes = workload.probe_records(kind)
            section = scenario.new_section(f"probe-{kind}", probes)
            encoded = scenario.encode(probes)
            for index in range(len(probes)):
                scenario.send(section, encoded, index)
            scenario.producer.flush()
            settings = scenario.settings.model_copy(update={"data_dir": data_dir, "web_port": free_loopback_port()})
            worker = ServiceWorker(settings, log_name=f"worker-{kind}.log").start()
            scenario.workers.append(worker)
            timeout = 300 if kind == "warm" else self.profile.cold_restart_timeout_seconds
            try:
                waited = scenario.wait_until_applied(f"restart ({kind} state)", timeout, section.start_events)
                self.restart_runs[kind] = {"started_ms": worker.started_ms, "waited_seconds": round(waited, 1),
                                           "tag": kind}
            except TimeoutError:
                self.restart_runs[kind] = {"started_ms": worker.started_ms, "timed_out_seconds": timeout, "tag": kind}
            worker.read_peak_rss()
            scenario.stop_workers()

    def restart_figures(self, scenario: Scenario, outputs) -> dict:
        figures = {}
        for kind, run in self.restart_runs.items():
            marker = f"{scenario.workload.prefix}-probe{kind}-"
            times = [output.timestamp for output in outputs if output.event_id.startswith(marker)]
            first = (min(times) - run["started_ms"]) / 1000 if times else None
            per_partition: dict[int, int] = {}
            for output in outputs:
                if output.event_id.startswith(marker):
                    partition = int(output.event_id[len(marker):])
                    per_partition[partition] = min(per_partition.get(partition, output.timestamp), output.timestamp)
            figures[kind] = {
                "seconds_to_first_output": None if first is None else round(first, 2),
                "seconds_to_output_on_every_partition": round((max(per_partition.values()) - run["started_ms"]) / 1000,
                                                              2) if len(per_partition) == PARTITIONS else None,
                "timed_out_after_seconds": run.get("timed_out_seconds"),
                "local_state": "RocksDB data dir of the previous run (changelog tail only)" if kind == "warm"
                else "empty data dir: tables restored from the changelog topics",
                "ingest": RESTART_INGEST[self.topology],
            }
        return figures

    # -- baselines ------------------------------------------------------------------------------------------

    def baselines(self, scenario: Scenario, topics: tuple[str, ...], section: Section) -> dict:
        """Every baseline over exactly the section's source records: its offset range in every source partition."""
        records = sum(1 for record in section.records if record.topic.name in topics)
        events = sum(record.events for record in section.records if record.topic.name in topics)
        start = {f"{topic}:{partition}": section.source_start.get((topic, partition), 0)
                 for topic in topics for partition in range(PARTITIONS)}
        end = {f"{topic}:{partition}": section.source_end.get((topic, partition), 0)
               for topic in topics for partition in range(PARTITIONS)}
        if sum(end.values()) - sum(start.values()) != records:
            raise RuntimeError(f"{section.name}: source offsets {start} .. {end} do not hold its {records} records")
        events_per_record = events / records if records else 1.0
        min_seconds = self.profile.baseline_min_seconds
        out = {}
        for kind in BASELINES:
            if kind == "faust" and records < FAUST_MINIMUM_RECORDS and not min_seconds:
                # take_events hands over up to batch_size records at a time: a handful of records is a single batch
                out[kind] = {"events_per_second": None, "records": records,
                             "note": f"not run: {records} records arrive as one take_events batch, which has no rate"}
                continue
            self.reporter.step(f"{section.name}: baseline {kind} over {records:,} records ({events:,} events)")
            result_file = scenario.directory / f"baseline-{section.name}-{kind}.json"
            arguments = [kind, "--bootstrap", scenario.bootstrap, "--topics", ",".join(topics),
                         "--partitions", str(PARTITIONS), "--records", str(records), "--events", str(events),
                         "--start-offsets", json.dumps(start), "--end-offsets", json.dumps(end),
                         "--result", str(result_file), "--data-dir", str(scenario.directory / f"{kind}-{section.name}")]
            if kind == "quix":
                by_sku = f"{SOURCE_KEY_TOPIC}.{section.name}"  # a fresh one per run: its group reads it from the start
                create_topics(scenario.settings, scenario.bootstrap, specs=[TopicSpec(
                    by_sku, "sku", None, "any", CleanupPolicy.DELETE, ("baseline",), (), "Quix baseline, by SKU")])
                arguments += ["--by-sku-topic", by_sku]
            elif min_seconds:
                arguments += ["--min-seconds", str(min_seconds)]
            run_module("benchmarks.baselines", arguments, timeout=900,
                       log_path=scenario.directory / f"baseline-{kind}.log",
                       env=settings_environment(scenario.settings))
            result = json.loads(result_file.read_text())
            scale = events_per_record if kind == "faust" else 1.0  # Faust counts records; the others count events
            series = [(timestamp, done * scale) for timestamp, done in result["series"]]
            done = result["events"] * scale
            figure = analysis.throughput(series, int(done), started_ms=result["first_record_ms"]).as_dict()
            figure["records"] = result["records"]
            figure["passes"] = result["passes"]
            figure["cpu_seconds"] = result["cpu_seconds"]
            figure["events_per_second_per_core"] = analysis.per_core(done, result["cpu_seconds"])
            ran = figure["whole_section_seconds"]
            if min_seconds and (ran is None or ran < min_seconds):
                figure["note"] = (f"ran {ran} s, under the profile's {min_seconds:g} s: a short run, a less steady "
                                  "rate")
            out[kind] = figure
        return out

    @staticmethod
    def ratios(service: dict, baselines: dict) -> dict:
        """Service over each baseline: per worker on the 10%-90% slope and on the whole section, and per core
        (events per CPU second) on the whole section. The headline is the lower of the two whole-section ratios:
        the one less flattering to the service."""
        out = {}
        for kind, figure in baselines.items():
            whole = analysis.ratio(service.get("whole_section_events_per_second_per_worker"),
                                   figure.get("whole_section_events_per_second"))
            core = analysis.ratio(service.get("events_per_second_per_core"), figure.get("events_per_second_per_core"))
            measured = [value for value in (whole, core) if value is not None]
            out[kind] = {"headline": min(measured) if measured else None, "whole_section": whole, "per_core": core,
                         "slope": analysis.ratio(service.get("events_per_second_per_worker"),
                                                 figure.get("events_per_second"))}
        return out

    # -- reading back ---------------------------------------------------------------------------------------

    def read_outputs(self, scenario: Scenario):
        topics = [availability_topic(channel).name for channel in CHANNELS]
        return read_outputs(scenario.bootstrap, scenario.codec, topics)

    @staticmethod
    def count(scenario: Scenario, topic: str) -> int:
        return sum(1 for _ in read_records(scenario.bootstrap, [topic]))

    @staticmethod
    def dead_letters(scenario: Scenario) -> tuple[int, list[dict]]:
        """How many dead letters the scenario produced, and their count per (reason, source topic) with the counts
        of their commonest error texts (cut to 300 characters), so that a run's dead letters can be told apart
        without its scratch directory."""
        tally: Counter = Counter()
        errors: dict[tuple[str, str], Counter] = {}
        for message in read_records(scenario.bootstrap, [DEAD_LETTERS.name]):
            headers = {name: (value or b"").decode("utf-8", "replace") for name, value in message.headers() or ()}
            kind = (headers.get(DEAD_LETTER_REASON_HEADER, "?"), headers.get(DEAD_LETTER_SOURCE_TOPIC_HEADER, "?"))
            tally[kind] += 1
            errors.setdefault(kind, Counter())[headers.get(DEAD_LETTER_ERROR_HEADER, "")[:300]] += 1
        reasons = [{"reason": reason, "source_topic": topic, "count": count,
                    "errors": [{"error": error, "count": n} for error, n in errors[reason, topic].most_common(5)]}
                   for (reason, topic), count in sorted(tally.items())]
        return sum(tally.values()), reasons

    @staticmethod
    def applied_positions(scenario: Scenario, outputs):
        """(CreateTime, ledger partition, events of that partition applied through the causing entry) per output."""
        through = scenario.ledger_tail.map.events_through
        return ((o.timestamp, o.ledger_partition, through(o.ledger_partition, o.ledger_offset, o.ledger_index))
                for o in outputs)

    def section_throughput(self, scenario: Scenario, section: Section, outputs, workers: int) -> dict:
        series = analysis.progress_series(self.applied_positions(scenario, outputs), section.start_events,
                                          section.end_events)
        figure = analysis.throughput(series, section.events, started_ms=section.started_ms or None).as_dict()
        ledger = scenario.ledger_tail.map
        records = sum(ledger.records_between(partition, ledger.end_offset(partition, section.start_events[partition]),
                                             ledger.end_offset(partition, section.end_events[partition]))
                      for partition in range(PARTITIONS))
        figure["ledger_records"] = records
        figure["events_per_ledger_record"] = round(section.events / records, 1) if records else None
        rate = figure["events_per_second"]
        figure["workers"] = workers
        figure["ingest_processes"] = workers * scenario.ingest_per_worker
        figure["processes"] = scenario.processes(workers)
        figure["events_per_second_per_worker"] = None if rate is None else round(rate / workers, 1)
        whole = figure["whole_section_events_per_second"]
        figure["whole_section_events_per_second_per_worker"] = None if whole is None else round(whole / workers, 1)
        figure.update(self.section_cpu(scenario, section, series))
        figure["ingest"] = self.ingest_throughput(scenario, section)
        for rate_key in ("events_per_second", "whole_section_events_per_second"):
            ingest_rate = figure["ingest"].get(rate_key)
            figure["ingest"][f"{rate_key}_per_ingest_process"] = (
                None if ingest_rate is None or not figure["ingest_processes"]
                else round(ingest_rate / figure["ingest_processes"], 1))
        figure["seconds_from_first_send_to_last_output"] = (
            round((series[-1][0] - section.started_ms) / 1000, 2) if series else None)
        return figure

    @staticmethod
    def section_cpu(scenario: Scenario, section: Section, series) -> dict:
        """CPU seconds of the workers and ingest processes from the section's first record sent to its last event
        applied, and the events per CPU second (per core used, whatever the topology)."""
        if not series:
            return {"cpu_seconds": None, "events_per_second_per_core": None}
        start, end = section.started_ms, series[-1][0]
        processes = scenario.service_cpu_seconds(start, end)
        service = round(sum(value for value in processes.values() if value), 3)
        return {"cpu_seconds": {"service": service, "processes": processes,
                                "broker": scenario.cpu.between("broker", start, end),
                                "benchmark": scenario.cpu.between("benchmark", start, end)},
                "events_per_second_per_core": analysis.per_core(series[-1][1], service)}

    @staticmethod
    def ingest_throughput(scenario: Scenario, section: Section) -> dict:
        """The ingest stage alone: the section's events reaching the ledger (CreateTime of its ledger records)."""
        batch_size = scenario.settings.batch_size
        if len(section.records) < MINIMUM_INGEST_BATCHES * batch_size:
            # the ledger records of one micro-batch are produced together, within milliseconds: no rate
            return {"events": section.events, "events_per_second": None, "overall_events_per_second": None,
                    "seconds": None, "note": f"not measured: {len(section.records):,} source records are at most "
                    f"{MINIMUM_INGEST_BATCHES} ingest micro-batches (batch_size {batch_size}), whose ledger records "
                    "are produced at once"}
        ledgered = analysis.progress_series(scenario.ledger_tail.map.ledgered(), section.start_events,
                                            section.end_events)
        return analysis.throughput(ledgered, section.events, started_ms=section.started_ms or None).as_dict()

    @staticmethod
    def record_index(section: Section) -> dict[int, int]:
        index = {}
        for position, record in enumerate(section.records):
            for seq in record.seqs:
                index[seq] = position
        return index

    # -- py-spy ---------------------------------------------------------------------------------------------

    def start_py_spy(self, worker: ServiceWorker, ingest: list[IngestWorker]) -> list:
        """py-spy on the worker into FILE and, in `split`, on the first ingest process into FILE-ingest; with idle
        samples, so that the time the stage waits (on a busy broker, in the live run) shows beside its work."""
        if self.py_spy is None:
            return []
        binary = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if binary is None:
            raise RuntimeError("--py-spy needs py-spy: .venv/bin/pip install py-spy")
        self.py_spy.parent.mkdir(parents=True, exist_ok=True)
        targets = [(worker, self.py_spy)] + [(process, ingest_profile_path(self.py_spy)) for process in ingest[:1]]
        return [(subprocess.Popen([binary, "record", "--pid", str(target.pid), "--rate", "100", "--format",
                                   "speedscope", "--output", str(path), "--nonblocking", "--idle"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT), target.kind, path)
                for target, path in targets]

    def stop_py_spy(self, profilers: list) -> None:
        for profiler, kind, path in profilers:
            profiler.send_signal(signal.SIGINT)
            try:
                profiler.wait(timeout=60)
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait(timeout=10)
            self.reporter.step(f"py-spy profile of the {kind} (mix drain and live run): {path}")

    # -- results --------------------------------------------------------------------------------------------

    def finish(self) -> dict:
        throughput = self.result["throughput"]
        mix = (throughput.get("mix_1_workers") or throughput.get("mix", {})).get("service", {})
        scaled = next((throughput[key]["service"] for key in throughput
                       if key.startswith("mix_") and key != "mix_1_workers"), None)
        self.result["capacity"] = analysis.capacity_line(
            self.target_rate, mix.get("whole_section_events_per_second_per_worker"),
            scaled.get("scaling_efficiency") if scaled else None, PARTITIONS)
        capacity = self.result["capacity"]
        capacity["topology"] = self.topology
        assumptions = (
            "N workers sustain N x (1-worker whole-section rate of the realistic mix, fresh state) x the 2-worker "
            "scaling efficiency measured against it (1.0 when not measured, capped at 1.0: a worker is one Python "
            "process, at most one core, so 2 workers on 2 cores can beat twice one worker that shares its core with "
            "the broker). 'latency load' keeps workers at "
            f"{STEADY_FRACTION:.0%} of their maximum, the load at which the p99 target is stated. One worker per "
            "ledger partition at most.")
        if self.topology == "split":
            capacity["sizes"] = "Faust workers (availability stage) plus ingest processes"
            capacity["ingest"] = analysis.ingest_capacity_line(
                self.target_rate, mix.get("ingest", {}).get("whole_section_events_per_second_per_ingest_process"),
                scaled.get("ingest_scaling_efficiency") if scaled else None, PARTITIONS)
            assumptions += (
                " Split topology: the workers' rate is end to end (source record to availability record), "
                f"measured as {processes_label(1, self.ingest_per_worker)}, which is the availability "
                "stage's rate as long as ingest is the faster stage (compare the two). Ingest processes are sized "
                "the same way from the ingest stage's own rate (events reaching the ledger, per ingest process, "
                "while sharing the machine with the worker and the broker); one ingest process per source topic "
                "partition at most.")
        else:
            capacity["sizes"] = "Faust workers running both stages"
        capacity["assumptions"] = assumptions
        self.result["targets"] = self.targets()
        return self.result

    def targets(self) -> list[dict]:
        """The targets, each on a whole-section figure; each name says what it is measured against."""
        throughput = self.result["throughput"]
        live = self.result.get("live", {})

        def quix_per_core(section: str):
            return ((throughput.get(section) or {}).get("ratios") or {}).get("quix", {}).get("per_core")

        catch_up = live.get("catch_up_seconds_after_burst")
        live_rate = live.get("live_rate_while_behind") or {}
        live_row = {"target": "live stream applied at >= 90% of the backlog rate (from the burst's start, while "
                              "behind)",
                    "measured": live_rate.get("fraction_of_sustained_max"),
                    "threshold": TARGETS["live_fraction_of_backlog_rate"], "higher_is_better": True, "unit": "ratio"}
        rows = [
            {"target": "mix per core, whole section >= 1.0x Quix Streams", "measured": quix_per_core("mix"),
             "threshold": TARGETS["mix_per_core_vs_quix"], "higher_is_better": True, "unit": "ratio"},
            {"target": "single-event per core, whole section >= 1.0x Quix Streams",
             "measured": quix_per_core("single"), "threshold": TARGETS["single_per_core_vs_quix"],
             "higher_is_better": True, "unit": "ratio"},
            {"target": "bulk >= 100,000 events/s per worker, whole section",
             "measured": (throughput.get("bulk") or {}).get("service", {}).get(
                 "whole_section_events_per_second_per_worker"),
             "threshold": TARGETS["bulk_events_per_second_per_worker"], "higher_is_better": True,
             "unit": "events/s"},
            live_row,
            {"target": "p99 < 250 ms at half the sustained maximum (steady window of the live run)",
             "measured": live.get("latency", {}).get("steady", {}).get("p99_ms"),
             "threshold": TARGETS["p99_ms_at_half_max"], "higher_is_better": False, "unit": "ms"},
            {"target": "4x burst drained within 60 s after it ends (lag <= 250 ms of events)",
             "measured": catch_up, "threshold": TARGETS["burst_catch_up_seconds"], "higher_is_better": False,
             "unit": "s"},
        ]
        for row in rows:
            value = row["measured"]
            row["processes"] = processes_label(1, self.ingest_per_worker)  # all from `main`: one worker
            row["met"] = None if value is None else (value >= row["threshold"] if row["higher_is_better"]
                                                     else value < row["threshold"])
        if live and catch_up is None:
            rows[-1]["met"] = False
            rows[-1]["note"] = "lag not back within the run"
        if live_rate.get("kept_up"):  # the burst's rate is a lower bound: it judges the target only if high enough
            live_row["met"] = True if live_row["met"] else None
            live_row["note"] = "kept up with the burst: the figure is the burst's rate, a lower bound"
        return rows


def source_partition(key: bytes) -> int:
    """The source partition of a keyed record: Kafka's default partitioner, as the service's own producers use."""
    return default_partition(key, PARTITIONS)


def processes_label(workers: int, ingest_processes: int) -> str:
    """What ran, for every figure that says "per worker": '1 worker + 1 ingest process', '2 workers (both
    stages)'."""
    label = f"{workers} worker{'s' if workers != 1 else ''}"
    if not ingest_processes:
        return f"{label} (both stages)"
    return f"{label} + {ingest_processes} ingest process{'es' if ingest_processes != 1 else ''}"


def ingest_profile_path(path: Path) -> Path:
    """Where --py-spy FILE puts the ingest process's profile: FILE with `-ingest` before its suffix."""
    return path.with_name(f"{path.stem}-ingest{path.suffix}")


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages: how busy the shared machine was (2 cores: above 2 means contention)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _seq(event_id: str, prefix: str) -> int | None:
    if event_id.startswith(prefix):
        digits = event_id[len(prefix):]
        if digits.isdigit():
            return int(digits)
    return None


def _burst_arithmetic(steady: float, factor: float, seconds: float, capacity: float | None) -> dict | None:
    """What the arithmetic says a burst leaves behind, for reading the measured lag."""
    if not capacity:
        return None
    backlog = max(0.0, (steady * factor - capacity) * seconds)
    spare = capacity - steady
    return {"backlog_events_expected": round(backlog), "drain_seconds_expected": round(backlog / spare, 1)
            if spare > 0 else None}


# ---------------------------------------------------------------------------------------------------------- main
def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of `python -m benchmarks.peak` (SystemExit 2 on a bad one, as argparse)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--seed", type=int, default=WorkloadConfig().seed)
    parser.add_argument("--target-rate", type=float, default=50_000.0,
                        help="peak events/s to size the capacity line for (default 50,000)")
    parser.add_argument("--results-dir", type=Path, default=results_dir(),
                        help=f"default benchmarks/results, or ${RESULTS_DIR_VARIABLE} where it is set")
    parser.add_argument("--topology", choices=TOPOLOGIES, default="all",
                        help="all: each worker runs both stages (default); split: workers run the availability "
                        "stage only and ingest processes (python -m app.service.ingest_worker) feed the ledger")
    parser.add_argument("--ingest-per-worker", type=int, default=None, metavar="K",
                        help="split only: ingest processes started with each worker (default 1)")
    parser.add_argument("--py-spy", type=Path, metavar="FILE",
                        help="record the worker with py-spy (speedscope JSON) into FILE from the mix drain to the "
                        "end of the live run, idle samples included (time the event loop waits shows in its select); "
                        "in split also the first ingest process, into FILE with -ingest before its suffix")
    parser.add_argument("--sender-linger-ms", type=int, default=DEFAULT_LINGER_MS, metavar="MS",
                        help=f"linger of the live run's source producer (default {DEFAULT_LINGER_MS}, librdkafka's): "
                        "on the embedded broker, fewer and larger source batches cost a consumer less "
                        "(python -m benchmarks.broker_fetch_cost)")
    parser.add_argument("--memory-census", action="store_true",
                        help="ask the main worker for a census of its memory (benchmarks/memory_census.py) at each "
                        "phase's new highs; results as <profile>[-split]-memory-census.*, the censuses in the "
                        "directory of that name; each census stops the worker for seconds, so the run's speed and "
                        "latency figures are not ones to quote")
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument("--keep-scratch", action="store_true", help="keep the brokers' logs and data dirs")
    args = parser.parse_args(argv)
    if args.ingest_per_worker is not None and args.topology != "split":
        parser.error("--ingest-per-worker needs --topology split")
    if args.sender_linger_ms < 0:
        parser.error("--sender-linger-ms must be at least 0")
    if args.ingest_per_worker is not None and args.ingest_per_worker < 1:
        parser.error("--ingest-per-worker must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    ingest_per_worker = (args.ingest_per_worker or 1) if args.topology == "split" else 0
    profile = PROFILES[args.profile]
    # SIGTERM unwinds like Ctrl-C, so that every worker and broker this run started is stopped
    previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    console = Console(stderr=True)
    reporter = Reporter(console)
    scratch = Path(tempfile.mkdtemp(prefix=f"peak-{profile.name}-"))
    try:
        with reporter.progress:
            census_dir = None
            if args.memory_census:
                # beside the run's results, named as they are: <profile>[-split]-memory-census/
                census_dir = args.results_dir / results_name(
                    {"profile": profile.name, "topology": args.topology, "memory_census": True})
            benchmark = PeakBenchmark(profile, args.seed, args.target_rate, scratch, reporter, args.py_spy,
                                      args.topology, ingest_per_worker, args.sender_linger_ms, census_dir)
            result = benchmark.run()
        result = {"benchmark": "peak", "profile": profile.name, "topology": args.topology,
                  "memory_census": args.memory_census,
                  "ingest_processes_per_worker": ingest_per_worker, "profile_settings": asdict(profile),
                  "seed": args.seed, "partitions": PARTITIONS, "machine": _machine(),
                  "workload": _workload_description(benchmark.config), **result}
        from benchmarks.report import write_results

        paths = write_results(result, getattr(benchmark, "chart_data", None), args.results_dir, chart=not args.no_chart)
        console.print("\n".join(str(path) for path in paths))
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        if args.keep_scratch:
            console.print(f"scratch kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def _machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
            "broker": "embedded Tansu (memory storage)",
            "note": "one machine runs the broker, the workers and the benchmark; other processes may share it"}


def _workload_description(config: WorkloadConfig) -> dict:
    description = asdict(config)
    description["channels"] = list(CHANNELS)
    return description


if __name__ == "__main__":
    sys.exit(main())
