"""In-memory stand-ins for the connector's unit tests: a topic log with committed offsets, a consumer that reads it
with confluent-kafka's method names, a scriptable sink and a clock the test moves by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from app.connectors.sinks import SinkUnavailableError
from app.connectors.view import AvailabilityChange


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeMessage:
    _topic: str
    _partition: int
    _offset: int
    _key: bytes | None
    _value: bytes | None
    _error: Any = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> Any:
        return self._error


class FakeTopic:
    """One topic's partitions and the committed offsets of every group."""

    def __init__(self, name: str, partitions: int = 2) -> None:
        self.name = name
        self.logs: list[list[tuple[bytes | None, bytes | None]]] = [[] for _ in range(partitions)]
        self.committed: dict[tuple[str, int], int] = {}

    def append(self, partition: int, key: str | None, value: bytes | None) -> int:
        self.logs[partition].append((None if key is None else key.encode(), value))
        return len(self.logs[partition]) - 1


class FakeConsumer:
    """Assigns every partition on the first consume; honours pause, resume, seek and synchronous commits."""

    def __init__(self, topic: FakeTopic, config: dict[str, Any]) -> None:
        self.topic = topic
        self.config = config
        self.group = config["group.id"]
        self.positions: dict[int, int] = {}
        self.paused: set[int] = set()
        self.eof_sent: set[int] = set()
        self.callbacks: dict[str, Callable] = {}
        self.closed = False
        self.consume_calls = 0

    def subscribe(self, topics: list[str], on_assign=None, on_revoke=None, on_lost=None) -> None:
        assert topics == [self.topic.name]
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def committed(self, partitions: list[TopicPartition], timeout: float = 0) -> list[TopicPartition]:
        return [TopicPartition(p.topic, p.partition, self.topic.committed.get((self.group, p.partition), -1001))
                for p in partitions]

    def assign(self, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self.positions[p.partition] = 0 if p.offset in (OFFSET_BEGINNING, -1001) else p.offset

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[FakeMessage]:
        self.consume_calls += 1
        if not self.positions:
            self.callbacks["assign"](self, [TopicPartition(self.topic.name, p) for p in range(len(self.topic.logs))])
        batch: list[FakeMessage] = []
        for partition in sorted(self.positions):
            if partition in self.paused:
                continue
            log = self.topic.logs[partition]
            while self.positions[partition] < len(log) and len(batch) < num_messages:
                key, value = log[self.positions[partition]]
                batch.append(FakeMessage(self.topic.name, partition, self.positions[partition], key, value))
                self.positions[partition] += 1
                self.eof_sent.discard(partition)
            if self.positions[partition] >= len(log) and partition not in self.eof_sent and len(batch) < num_messages:
                self.eof_sent.add(partition)
                batch.append(FakeMessage(self.topic.name, partition, self.positions[partition], None, None,
                                         KafkaError(KafkaError._PARTITION_EOF)))
        return batch

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {p.partition for p in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {p.partition for p in partitions}

    def seek(self, partition: TopicPartition) -> None:
        self.positions[partition.partition] = partition.offset

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        assert not asynchronous
        for p in offsets:
            self.topic.committed[(self.group, p.partition)] = p.offset

    def close(self) -> None:
        self.closed = True


@dataclass
class ScriptedSink:
    """Accepts changes unless `down` is set; records what it accepted and every attempt."""

    down: bool = False
    accepted: list[AvailabilityChange] = field(default_factory=list)
    attempts: list[AvailabilityChange] = field(default_factory=list)

    def deliver(self, change: AvailabilityChange) -> None:
        self.attempts.append(change)
        if self.down:
            raise SinkUnavailableError("channel API answered 503")
        self.accepted.append(change)

    def accepted_versions(self) -> list[tuple[str, int]]:
        return [(change.key, change.version) for change in self.accepted]
