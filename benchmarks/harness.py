"""Broker-side plumbing of the peak benchmark: worker processes, producing, committed offsets, reading results back.

Completion is judged from counts and committed offsets, never from high watermarks (the embedded broker reports a
partition's high watermark as the start of its last batch): the harness knows how many events it put on each ledger
partition, reads the ledger until they are all there (a ledger record holds one event or a batch of them, so the
ledger read also tells at which offset each partition's last event sits), then waits for the consumer group's
committed ledger offsets (which a worker commits only after the outputs of those entries are acknowledged) to pass
those offsets.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from app.kafka.producing import produce_or_wait
from app.replay.reading import PartitionsReader
from app.settings import Settings
from benchmarks.analysis import LedgerMap
from benchmarks.cpu import peak_rss_mib
from benchmarks.ledger_projection import LedgerEventIds

REPO_ROOT = Path(__file__).resolve().parents[1]

# librdkafka logs a disconnect when a scenario's broker stops under an idle client: expected, so kept quiet.
QUIET_LIBRDKAFKA = logging.getLogger("benchmarks.librdkafka")
QUIET_LIBRDKAFKA.setLevel(logging.CRITICAL)
QUIET_LIBRDKAFKA.propagate = False


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment that makes `Settings()` in a child process equal to `settings`."""
    environment = {key: value for key, value in os.environ.items()
                   if not key.upper().startswith("AVAILABILITY_") and key.upper() != "KAFKA_BOOTSTRAP_SERVERS"}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        environment[f"AVAILABILITY_{name.upper()}"] = json.dumps(list(value)) if isinstance(value, tuple) else str(value)
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


class ServiceWorker:
    """One `python -m app.service.worker` process (the real worker, uvloop, metrics, web) with its log in its data
    dir. `started_ms` is the wall-clock time of the spawn, for restart-to-first-output."""

    module = "app.service.worker"
    kind = "worker"

    def __init__(self, settings: Settings, log_name: str = "worker.log") -> None:
        self.settings = settings
        self.log_path = Path(settings.data_dir) / log_name
        self.process: subprocess.Popen | None = None
        self.started_ms: float | None = None
        self.peak_rss_mib: float | None = None
        self._log_offset = 0  # where this run's lines start in a log that a previous run may have begun

    def start(self) -> ServiceWorker:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.started_ms = time.time() * 1000
            self.process = subprocess.Popen([sys.executable, "-m", self.module], cwd=REPO_ROOT,
                                            env=settings_environment(self.settings), stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.kind} exited with status {self.process.returncode}; log tail:\n{tail}")

    def log_count(self, text: str) -> int:
        try:
            return self.log_path.read_text(errors="replace").count(text)
        except FileNotFoundError:
            return 0

    def ingest_assigned(self) -> bool:
        """Its ingest consumer (group `<app_id>-ingest`: the thread of an `all` worker, or an ingest process) holds
        source partitions: since this start, its last assignment or revocation line is an assignment naming some."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return False
        lines = [line for line in text.splitlines()
                 if "ingest process: assigned " in line or "ingest process: revoked " in line]
        return bool(lines) and "ingest process: assigned " in lines[-1] and not lines[-1].rstrip().endswith(
            "no partitions")

    def read_peak_rss(self) -> float | None:
        """VmHWM (peak resident set) from /proc, in MiB; kept after the process ends."""
        measured = peak_rss_mib(self.pid) if self.pid is not None else None
        if measured is not None:
            self.peak_rss_mib = measured
        return self.peak_rss_mib

    def stop(self, grace_seconds: float = 30.0) -> None:
        if self.process is None:
            return
        self.read_peak_rss()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class IngestWorker(ServiceWorker):
    """One `python -m app.service.ingest_worker` process (the ingest stage alone, on confluent-kafka; the `split`
    topology), started with the same settings environment as the workers: it needs `kafka_bootstrap_servers` (it
    starts no broker) and writes its log in a data dir of its own, which it uses for nothing else."""

    module = "app.service.ingest_worker"
    kind = "ingest process"

    def __init__(self, settings: Settings, log_name: str = "ingest.log") -> None:
        if settings.kafka_bootstrap_servers is None:
            raise ValueError("an ingest process needs kafka_bootstrap_servers: it starts no broker of its own")
        super().__init__(settings, log_name)


def stop_all(processes: Iterable[ServiceWorker], grace_seconds: float = 30.0) -> None:
    """Stop every process (SIGTERM, then kill after the grace period), each even if stopping another failed."""
    failures = []
    for process in processes:
        try:
            process.stop(grace_seconds)
        except Exception as error:  # noqa: BLE001 - stop the others first, then report
            failures.append(f"{process.kind} {process.pid}: {error!r}")
    if failures:
        raise RuntimeError("could not stop: " + "; ".join(failures))


def run_module(module: str, arguments: list[str], timeout: float, log_path: Path,
               env: dict[str, str] | None = None) -> None:
    """Run `python -m module arguments` to completion (baselines), output to `log_path`; `env` replaces the
    environment (a scenario's `settings_environment`, so that the child's `Settings()` are the scenario's)."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", module, *arguments], cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=subprocess.STDOUT,
                                   env={**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"})
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise RuntimeError(f"{module} {arguments[0]} did not finish within {timeout:.0f}s (log {log_path})")
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): the child goes with the run
            process.kill()
            process.wait(timeout=10)
            raise
    if process.returncode != 0:
        raise RuntimeError(f"{module} {arguments[0]} failed ({process.returncode}):\n"
                           + log_path.read_text(errors="replace")[-3000:])


class RecordProducer:
    """A batching confluent-kafka producer for pre-encoded records; `sent_ms` keeps each record's send time."""

    def __init__(self, bootstrap_servers: str) -> None:
        self._producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 5,
                                   "partitioner": "murmur2_random", "batch.num.messages": 10_000,
                                   "queue.buffering.max.messages": 1_000_000,
                                   "queue.buffering.max.kbytes": 2 * 1024 * 1024, "logger": QUIET_LIBRDKAFKA})
        self.failures: list[str] = []

    def produce(self, topic: str, key: bytes | None, value: bytes, partition: int | None = None) -> None:
        produce_or_wait(self._producer, topic, value, key, partition=partition, on_delivery=self._on_delivery)

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float = 120.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining or self.failures:
            raise RuntimeError(f"{remaining} records not delivered; failures: {self.failures[:3]}")

    def _on_delivery(self, error, message) -> None:
        if error is not None:
            self.failures.append(str(error))


class CommitWatcher:
    """Polls a group's committed ledger offsets; reuses one consumer (cheap enough to poll a few times a second)."""

    def __init__(self, bootstrap_servers: str, group: str, topic: str, partitions: int) -> None:
        self._consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group,
                                   "enable.auto.commit": False, "logger": QUIET_LIBRDKAFKA})
        self._partitions = [TopicPartition(topic, partition) for partition in range(partitions)]

    def offsets(self) -> list[int]:
        try:
            committed = self._consumer.committed(self._partitions, timeout=10)
        except Exception:  # a transient broker hiccup: report no progress this time
            return [0] * len(self._partitions)
        return [max(0, tp.offset) for tp in committed]

    def close(self) -> None:
        self._consumer.close()


class LedgerTail:
    """Reads the ledger from its beginning as it grows, into a `LedgerMap`: how many events each partition holds up
    to every ledger position. One consumer (assigned, no group, nothing committed) for a whole scenario; each
    `read` decodes only what arrived since the last one, and of each record only its entries' event ids
    (benchmarks/ledger_projection.py): the tail runs on the cores the workers use, during the run it measures."""

    def __init__(self, bootstrap_servers: str, serde, topic: str, partitions: int) -> None:
        self._event_ids = LedgerEventIds(serde)
        self._consumer = Consumer({"bootstrap.servers": bootstrap_servers,
                                   "group.id": f"bench-ledger-{time.monotonic_ns()}", "enable.auto.commit": False,
                                   "fetch.max.bytes": 32 * 1024 * 1024, "logger": QUIET_LIBRDKAFKA})
        self._consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in range(partitions)])
        self.map = LedgerMap(partitions)
        self.decode_seconds = 0.0  # CPU time of the harness's own decoding on the shared cores (thread time, so
        # not the time it waits for a core the workers hold)

    def read(self, max_seconds: float = 2.0) -> int:
        """Takes in the records the broker has for us now (for at most `max_seconds`); returns how many."""
        deadline = time.monotonic() + max_seconds
        taken = 0
        add, event_ids = self.map.add, self._event_ids.event_ids
        while True:
            messages = self._consumer.consume(num_messages=10_000, timeout=0.05)
            decode_started = time.thread_time()
            for message in messages:
                if message.error() is None:
                    add(message.partition(), message.offset(), message.timestamp()[1], event_ids(message.value()))
                    taken += 1
            self.decode_seconds += time.thread_time() - decode_started
            if not messages or time.monotonic() > deadline:
                return taken

    def close(self) -> None:
        self._consumer.close()


def wait_for_events_applied(tail: LedgerTail, watcher: CommitWatcher, expected: list[int], timeout: float,
                            on_progress: Callable[[int], None] | None = None,
                            alive: Callable[[], None] | None = None, read_seconds: float = 2.0) -> float:
    """Wait until every ledger partition p holds `expected[p]` events (counted entry by entry from the ledger) and
    the group's committed offset has passed the record that holds the last of them; returns the seconds waited.
    `on_progress` gets the events applied so far (those in the records before each committed offset). Each round
    reads the ledger for at most `read_seconds`: less leaves more of the machine to the workers while they work."""
    started = time.monotonic()
    partitions = range(len(expected))
    while True:
        tail.read(max_seconds=read_seconds)
        ledger = tail.map
        ledgered = [ledger.events(partition) for partition in partitions]
        if any(have > want for have, want in zip(ledgered, expected)):
            raise RuntimeError(f"the ledger holds {ledgered} events per partition, more than the {expected} sent")
        ends = [ledger.end_offset(partition, expected[partition]) for partition in partitions]
        committed = watcher.offsets()
        if on_progress is not None:
            on_progress(sum(min(ledger.events_before(partition, committed[partition]), expected[partition])
                            for partition in partitions))
        if all(end is not None and offset >= end for offset, end in zip(committed, ends)):
            return time.monotonic() - started
        if alive is not None:
            alive()
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"within {timeout:.0f}s: ledger events per partition {ledgered} of {expected}; "
                               f"committed ledger offsets {committed}, needed {ends} (None: not all on the ledger)")
        time.sleep(0.25)


@dataclass(frozen=True, slots=True)
class OutputRecord:
    timestamp: int  # CreateTime, ms
    event_id: str
    ledger_partition: int
    ledger_offset: int
    ledger_index: int  # of the causing entry inside its ledger record


def read_records(bootstrap_servers: str, topics: Iterable[str]):
    """Every record `topics` hold when this is called (the writers are done: their acknowledged records are all
    there), topic after topic. Yields confluent-kafka messages.

    The end of each partition is its end when reading starts (`PartitionsReader(through_start_ends=True)`, exact on
    Tansu and on Apache Kafka), never a quiet spell: a reader that stopped after 2 s without a record lost the tail
    of a big topic whenever the broker took that long to answer a fetch, and a run then looked as if its last
    sections had published nothing."""
    for topic in topics:
        with PartitionsReader(bootstrap_servers, topic, through_start_ends=True) as reader:
            for batch in reader.batches():
                yield from batch


def read_outputs(bootstrap_servers: str, codec, topics: list[str]) -> list[OutputRecord]:
    """The availability records of `topics`: timestamp, causing event id and ledger position of each."""
    serdes = {topic: codec.serde(topic) for topic in topics}
    out = []
    for message in read_records(bootstrap_servers, topics):
        value = serdes[message.topic()].decode(message.value()).value
        out.append(OutputRecord(message.timestamp()[1], value["event_id"], value["ledger_partition"],
                                value["ledger_offset"], value["ledger_index"]))
    return out



def start_positions(topics: list[str], partitions: int, start_offsets: dict[str, int]) -> list[TopicPartition]:
    """Where a baseline starts reading: `start_offsets` maps "topic:partition" to an offset (0 when absent)."""
    return [TopicPartition(topic, partition, start_offsets.get(f"{topic}:{partition}", 0))
            for topic in topics for partition in range(partitions)]


def commit_start_positions(bootstrap: str, group: str, topics: list[str], partitions: int,
                           start_offsets: dict[str, int]) -> None:
    """Where a group-based baseline starts: its group's committed offsets, written before it joins (a commit needs
    no membership)."""
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    committer.commit(offsets=start_positions(topics, partitions, start_offsets), asynchronous=False)
    committer.close()
