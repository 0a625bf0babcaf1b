"""Integration harness for the streaming service: workers as subprocesses, a source producer, topic readers.

Completion is always judged from the records themselves (counts, contents), never from watermarks: the embedded
broker reports a partition's high watermark as the start of its last batch.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from pydantic import SecretStr

from app.kafka.broker import free_loopback_port
from app.replay.reading import EndsAtStart
from app.settings import Settings
from app.wire.serialization import AvroCodec

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_READY = "Worker ready"


def settings_environment(settings: Settings) -> dict[str, str]:
    """The AVAILABILITY_* variables that make `Settings()` in a subprocess equal to `settings`."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("AVAILABILITY_") and key.upper() != "KAFKA_BOOTSTRAP_SERVERS"
    }
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, (tuple, list)):
            value = json.dumps(list(value))
        elif isinstance(value, SecretStr):
            value = value.get_secret_value()  # str() of a SecretStr is '**********'
        environment[f"AVAILABILITY_{name.upper()}"] = str(value)
    environment["PYTHONUNBUFFERED"] = "1"
    return environment


class WorkerProcess:
    """`python -m app.service.worker` for `settings`, with its output in `<data_dir>/worker.log`; or, with
    `program`, `python -c program` (a worker built differently, e.g. with a stage removed)."""

    def __init__(self, settings: Settings, program: str | None = None) -> None:
        self.settings = settings
        self.arguments = ["-m", "app.service.worker"] if program is None else ["-c", program]
        self.log_path = Path(settings.data_dir) / "worker.log"
        self.process: subprocess.Popen | None = None
        self._log_offset = 0

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it; closed when we drop it below
        try:
            self.process = subprocess.Popen(
                [sys.executable, *self.arguments],
                cwd=REPO_ROOT,
                env=settings_environment(self.settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        return self

    def log_text(self, since_start: bool = True) -> str:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return ""
        return data[self._log_offset if since_start else 0 :].decode("utf-8", "replace")

    def wait_for_log(self, pattern: str, timeout: float, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        compiled = re.compile(pattern)
        while len(compiled.findall(self.log_text())) < count:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in the worker log after {timeout}s:\n{self.log_text()[-4000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to commit or flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self, grace_seconds: float = 20.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace_seconds`; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


INGEST_PROGRAM = "import sys; from app.service.ingest_worker import main; sys.exit(main([]))"
INGEST_ASSIGNED = r"ingest process: assigned source\."


def ingest_settings(settings: Settings) -> Settings:
    """The same deployment (app id, partitions, broker); a data dir of its own, so its log is its own."""
    return settings.model_copy(update={"data_dir": settings.data_dir / "ingest"})


def ingest_process(settings: Settings) -> WorkerProcess:
    """`availability ingest` for the deployment of `settings` (not started)."""
    return WorkerProcess(ingest_settings(settings), program=INGEST_PROGRAM)


def worker_settings(settings_factory: Callable[..., Settings], **overrides) -> Settings:
    values = {"web_port": free_loopback_port(), "tick_interval_seconds": 3600.0, "partitions": 4}
    values.update(overrides)
    return settings_factory(**values)


class SourceProducer:
    """Writes source records (Avro, Confluent framing) or raw bytes to the source topics."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.codec = codec
        self._producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 5})

    def send(self, topic: str, record: dict, key: str = "k", partition: int | None = None) -> None:
        self.send_raw(topic, self.codec.encode(topic, record), key, partition)

    def send_raw(self, topic: str, value: bytes, key: str = "k", partition: int | None = None) -> None:
        kwargs = {} if partition is None else {"partition": partition}
        self._producer.produce(topic, value=value, key=key.encode(), **kwargs)
        self._producer.poll(0)

    def flush(self) -> None:
        remaining = self._producer.flush(30)
        assert remaining == 0, f"{remaining} source records not delivered"


@dataclass(frozen=True)
class ReadRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


def read_topic(
    bootstrap_servers: str,
    topic: str,
    partitions: int,
    until: Callable[[list[ReadRecord]], bool] = lambda records: True,
    timeout: float = 60.0,
    idle_seconds: float = 1.0,
) -> list[ReadRecord]:
    """Every record of `topic` from the start, once the records it held at the start are read, `until(records)`
    holds and nothing new arrived for `idle_seconds`. Raises AssertionError at `timeout` with what was read."""
    records: list[ReadRecord] = []

    def keep(message) -> None:
        records.append(ReadRecord(message.topic(), message.partition(), message.offset(), message.key(),
                                  message.value(), tuple(message.headers() or ())))

    if not feed_topic(bootstrap_servers, topic, keep, done=lambda: until(records), partitions=range(partitions),
                      timeout=timeout, idle_seconds=idle_seconds):
        raise AssertionError(f"{topic}: condition not met after {timeout}s ({len(records)} records read)")
    return records


def feed_topic(bootstrap_servers: str, topic: str, on_message: Callable, done: Callable[[], bool] = lambda: True,
               partitions: Iterable[int] | None = None, timeout: float = 60.0, idle_seconds: float = 1.0,
               **consumer_config: object) -> bool:
    """Feed every record of `topic` (`partitions`, or all, from the beginning) to `on_message(message)` until the
    records it held at the start are read, `done()` holds and nothing arrived for `idle_seconds`. Returns False if
    `timeout` passed first."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": f"reader-{time.monotonic_ns()}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest", **consumer_config})
    deadline = time.monotonic() + timeout
    try:
        if partitions is None:
            partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        partitions = list(partitions)
        there_at_start = records_there_at_start(consumer, topic, partitions)
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
        last_arrival = time.monotonic()
        while True:
            for message in consumer.consume(num_messages=10_000, timeout=0.2):
                there_at_start.note(message)
                if message.error() is None:
                    on_message(message)
                    last_arrival = time.monotonic()
            now = time.monotonic()
            if now - last_arrival >= idle_seconds and there_at_start.done and done():
                return True
            if now > deadline:
                return False
    finally:
        consumer.close()


def records_there_at_start(consumer: Consumer, topic: str, partitions: Iterable[int]) -> EndsAtStart:
    """What a reader from the beginning must read before a quiet moment may end it: every record the partitions
    hold now (app.replay.reading.EndsAtStart). A quiet second alone is no end: on a loaded machine the first fetch,
    or the one bringing a partition's last batch, can take that long. A topic not created yet holds nothing."""
    try:
        return EndsAtStart(consumer, [(topic, partition) for partition in partitions])
    except KafkaException:
        return EndsAtStart(consumer, [])


def wait_for_ledger_entries(bootstrap_servers: str, codec: AvroCodec, partitions: int, record_name: str,
                            count_per_partition: int = 1, timeout: float = 60.0) -> list[ReadRecord]:
    """Wait until every ledger partition holds `count_per_partition` entries of `record_name` (e.g. PolicyChange):
    sources are ingested by independent agents, so a test orders topics by waiting, as a real feed would."""
    from app.wire.ledger import ledger_items
    from app.wire.serialization import AVRO_NAMESPACE
    from app.wire.topics import LEDGER

    wanted = f"{AVRO_NAMESPACE}.{record_name}"

    def done(records: list[ReadRecord]) -> bool:
        counts = [0] * partitions
        for record in records:
            for item in ledger_items(codec.decode(LEDGER.name, record.value).value):
                counts[record.partition] += item.record_name == wanted
        return min(counts) >= count_per_partition

    return read_topic(bootstrap_servers, LEDGER.name, partitions, until=done, timeout=timeout, idle_seconds=0)


def committed_offsets(bootstrap_servers: str, group_id: str, topics: list[str],
                      partitions: int) -> dict[tuple[str, int], int]:
    """The group's committed offset of every (topic, partition); negative (librdkafka's -1001) where none is."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": group_id, "enable.auto.commit": False})
    try:
        wanted = [TopicPartition(topic, partition) for topic in topics for partition in range(partitions)]
        return {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(wanted, timeout=30)}
    finally:
        consumer.close()


def poll(fetch: Callable, until: Callable, timeout: float, what: str):
    """Call `fetch()` until `until(result)` holds; AssertionError with the last result at the deadline. HTTP errors
    (a worker not listening yet) count as results that do not hold."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = fetch()
        except httpx.HTTPError as error:
            result = error
        if not isinstance(result, Exception) and until(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout}s; last: {result!r}")
        time.sleep(0.2)
