"""The reference channel connector: one channel's availability topic in, one sink out, nothing lost.

    connector = ChannelConnector(settings, "marketplace", WebhookSink("https://..."), view_path=Path("view.json"))
    connector.run(stop_event)  # until stop_event is set; commits and closes on the way out

How it keeps "a sink that is down costs no update":
- offsets are committed only past records the sink accepted (or that the version rule skipped), never before;
- on a sink failure the change is kept, every assigned partition is paused (the consumer keeps polling, so the
  group membership stays alive) and the same change is retried after a backoff delay;
- after `failure_threshold` consecutive failures the circuit opens: no attempt until its cool-down has passed,
  then one probe with that same change; on success, consumption resumes exactly at the record after it (each
  partition is sought back to its first unprocessed record, since a paused consumer may already hold later ones).
A stop or a rebalance while paused loses nothing: the change was never committed, so it is read again.

Known gaps: a change is delivered at least once, not exactly once (a crash after the sink accepted it but before
the commit repeats it; receivers dedupe on `change.identity`). Changes are delivered one at a time, in offset
order across all partitions, so a slow sink bounds throughput; a connector per partition subset scales it out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from app.connectors.resilience import Backoff, CircuitBreaker, CircuitState, Clock
from app.connectors.sinks import Sink, SinkError
from app.connectors.view import AvailabilityChange, LocalView
from app.errors import UserError
from app.kafka.client_config import client_config
from app.replay.snapshot import load_snapshot  # the one reader of snapshot topics
from app.wire.serialization import AvroCodec, SerializationError
from app.wire.topics import availability_snapshot_topic, availability_topic

if TYPE_CHECKING:
    from app.settings import Settings

logger = logging.getLogger(__name__)

# Not the client's 45 s: the embedded Tansu broker completes a group join after about half the session timeout, so a
# first `availability connect` sat silent for 23 s. 10 s (heartbeats come from librdkafka's own thread, so a slow
# sink does not count against it) joins in about 5 s there and notices a dead connector sooner everywhere.
DEFAULT_SESSION_TIMEOUT_MS = 10_000
COMMITTED_LOOKUP_TIMEOUT_SECONDS = 10.0


class ConnectorError(UserError):
    """The connector cannot start: the message names the setting or argument to fix."""


@dataclass
class ConnectorStats:
    """Counters of one connector run, for logs, metrics and tests."""

    delivered: int = 0  # changes the sink accepted
    stale_ignored: int = 0  # records whose version was not newer than the one held (repeats, old records)
    version_gaps: int = 0  # changes that skipped versions while following the topic live
    compaction_gaps: int = 0  # the same during bootstrap, where compaction explains them
    snapshots_applied: int = 0  # snapshot records that were newer and were delivered
    rebuilt: int = 0  # records read back into the view, without delivery, when rebuilding it from the topic
    tombstones_ignored: int = 0
    undecodable_skipped: int = 0
    sink_failures: int = 0
    circuit_opened: int = 0
    pauses: int = 0
    resumes: int = 0
    commits: int = 0


@dataclass
class _PendingChange:
    change: AvailabilityChange
    attempts: int  # failed attempts so far
    next_attempt_at: float


class ChannelConnector:
    """Consumes `availability.<channel>` in a consumer group and hands each newer value to `sink`.

    `view_path`: where the local view is kept (JSON, written before each commit). Without it the view is
    rebuilt on every start by reading each assigned partition from the beginning up to the committed offset
    without delivering; the topic is compacted, so that costs one pass over the current keys.
    `consumer_factory` and `clock` exist for tests (a fake consumer, a fake clock)."""

    def __init__(
        self,
        settings: Settings,
        channel: str,
        sink: Sink,
        *,
        bootstrap_servers: str | None = None,
        group_id: str | None = None,
        view_path: Path | str | None = None,
        backoff: Backoff | None = None,
        failure_threshold: int = 5,
        cooldown_seconds: float = 30.0,
        session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
        poll_timeout_seconds: float = 0.2,
        batch_size: int = 500,
        codec: AvroCodec | None = None,
        consumer_factory: Callable[[dict[str, Any]], Any] = Consumer,
        clock: Clock = time.monotonic,
        bootstrap_from_snapshot: bool = False,
    ) -> None:
        if channel not in settings.channels:
            raise ConnectorError(f"channel {channel!r} is not configured; known: {', '.join(settings.channels)} "
                                 "(set AVAILABILITY_CHANNELS)")
        servers = bootstrap_servers or settings.kafka_bootstrap_servers
        if not servers:
            raise ConnectorError("no Kafka broker configured; set KAFKA_BOOTSTRAP_SERVERS or pass bootstrap_servers")
        self.channel = channel
        self.topic = availability_topic(channel).name
        self.group_id = group_id or f"{settings.app_id}.connector.{channel}"
        self.sink = sink
        self.stats = ConnectorStats()
        self.backoff = backoff or Backoff()
        self.circuit = CircuitBreaker(failure_threshold, cooldown_seconds, clock)
        self._view_path = Path(view_path) if view_path is not None else None
        self.view = LocalView.load(self._view_path) if self._view_path is not None else LocalView()
        self._codec = codec
        self._settings = settings
        self._clock = clock
        self._poll_timeout = poll_timeout_seconds
        self._batch_size = batch_size
        self._consumer_factory = consumer_factory
        self._config = client_config(settings, servers, **{
            "group.id": self.group_id,
            "enable.auto.commit": False,  # commits follow the sink's acceptance, see _commit
            "auto.offset.reset": "earliest",  # a new group bootstraps from the compacted topic
            "enable.partition.eof": True,  # marks the end of bootstrap per partition
            "session.timeout.ms": session_timeout_ms,
            "logger": logger,
        })
        self._consumer: Any = None
        self._assigned: set[int] = set()
        self._positions: dict[int, int] = {}  # partition -> first offset not processed yet (known ones)
        self._to_commit: dict[int, int] = {}  # partition -> offset to commit (processed, not committed yet)
        self._rebuild_until: dict[int, int] = {}  # partition -> committed offset the view is rebuilt up to
        self._bootstrapping: set[int] = set()  # partitions read from the beginning, not at their end yet
        self._pending: _PendingChange | None = None
        self._paused = False
        self._servers = servers
        self._bootstrap_from_snapshot = bootstrap_from_snapshot
        self._snapshot_starts: dict[int, int] = {}  # partition -> channel offset the snapshot covers up to

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._codec is None:
            self._codec = AvroCodec(self._settings)
        self._consumer = self._consumer_factory(dict(self._config))
        if self._bootstrap_from_snapshot:
            self._load_snapshot()
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        logger.info("connector %s: consuming %s as group %s", self.channel, self.topic, self.group_id)

    def _load_snapshot(self) -> None:
        """A group without committed offsets starts from `availability.<channel>.snapshot` instead of the channel
        topic's history (docs/CONTRACT.md, "Bootstrapping a connector"): every newer snapshot value goes to the
        sink, then the channel topic is read from the offsets the snapshot covers. Partitions that have committed
        offsets, or that no snapshot covers, are read as usual."""
        topic = self._consumer.list_topics(self.topic, timeout=COMMITTED_LOOKUP_TIMEOUT_SECONDS).topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise ConnectorError(f"topic {self.topic} does not exist; create topics first (availability topics create)")
        asked = [TopicPartition(self.topic, partition) for partition in sorted(topic.partitions)]
        committed = self._consumer.committed(asked, timeout=COMMITTED_LOOKUP_TIMEOUT_SECONDS)
        fresh = {tp.partition for tp in committed if tp.offset < 0}
        if not fresh:
            logger.info("connector %s: group %s has committed offsets; no snapshot needed", self.channel, self.group_id)
            return
        snapshot_topic = availability_snapshot_topic(self.channel).name
        listed = self._consumer.list_topics(snapshot_topic, timeout=COMMITTED_LOOKUP_TIMEOUT_SECONDS).topics
        if snapshot_topic not in listed or listed[snapshot_topic].error is not None:
            logger.warning("connector %s: no snapshot topic %s (run `availability snapshot %s`); reading %s from "
                           "the beginning", self.channel, snapshot_topic, self.channel, self.topic)
            return
        snapshot = load_snapshot(self._settings, self._servers, self.channel, codec=self._codec)
        for key in sorted(snapshot.values):
            partition, offset = snapshot.positions[key]
            value = snapshot.values[key]
            assessment = self.view.assess(key, value["version"], snapshot=True)
            if partition not in fresh or not assessment.is_newer:
                continue
            change = AvailabilityChange(
                channel=self.channel, key=key, sku=value["sku"], location=value.get("location"),
                quantity=value["quantity"], status=value["status"], version=value["version"],
                previous_version=assessment.held_version, snapshot=True, event_id=value["event_id"],
                event_time=value["event_time"], topic=snapshot_topic, partition=partition, offset=offset,
            )
            self._deliver_with_retries(change)
        self._snapshot_starts = {p: o for p, o in snapshot.channel_offsets.items() if p in fresh}
        logger.info("connector %s: bootstrapped %d keys from %s; continuing %s at %s", self.channel,
                    len(snapshot.values), snapshot_topic, self.topic, self._snapshot_starts)

    def _deliver_with_retries(self, change: AvailabilityChange) -> None:
        """Bootstrap delivery: nothing is committed yet, so block until the sink takes the change."""
        attempts = 0
        while True:
            try:
                self.sink.deliver(change)
                break
            except SinkError as error:
                attempts += 1
                self.stats.sink_failures += 1
                delay = self.backoff.delay(attempts)
                logger.warning("connector %s: sink failed for snapshot value %s (attempt %d, retry in %.2fs): %s",
                               self.channel, change.identity, attempts, delay, error)
                time.sleep(delay)  # a retry delay, not synchronisation
        self.view.apply(change.key, change.version, change.quantity, change.status)
        self.stats.delivered += 1
        self.stats.snapshots_applied += 1

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set, then commit what the sink accepted and leave the group."""
        if self._consumer is None:
            self.start()
        try:
            while not stop.is_set():
                self.run_once()
        finally:
            self.close()

    def close(self) -> None:
        if self._consumer is None:
            return
        try:
            self._commit()
        finally:
            self._consumer.close()
            self._consumer = None

    @property
    def is_paused(self) -> bool:
        return self._paused

    @property
    def pending_change(self) -> AvailabilityChange | None:
        return None if self._pending is None else self._pending.change

    # -- the loop --------------------------------------------------------------------------------------------

    def run_once(self) -> None:
        """One step: retry the pending change when its time has come, otherwise poll one batch."""
        pending = self._pending
        if pending is not None:
            now = self._clock()
            if now >= pending.next_attempt_at and self.circuit.allows_attempt():
                self._deliver(pending.change)
                if self._pending is None:
                    self._resume()
                    self._commit()
                return
            wait = min(self._poll_timeout, max(0.0, pending.next_attempt_at - now))
            # Paused partitions return nothing new, but polling serves rebalances and keeps the member alive.
            for message in self._consumer.consume(num_messages=self._batch_size, timeout=wait):
                self._handle(message)
            return
        for message in self._consumer.consume(num_messages=self._batch_size, timeout=self._poll_timeout):
            self._handle(message)
        self._commit()

    def _handle(self, message: Any) -> None:
        error = message.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                if message.partition() in self._bootstrapping:
                    self._bootstrapping.discard(message.partition())
                    logger.info("connector %s: %s[%d] bootstrapped (%d keys in view)", self.channel, self.topic,
                                message.partition(), len(self.view))
                return
            if error.fatal():
                raise KafkaException(error)
            logger.warning("connector %s: consumer: %s", self.channel, error)
            return
        partition, offset = message.partition(), message.offset()
        if partition not in self._assigned:
            return  # fetched before a revocation; the new owner reads it
        if self._pending is not None:
            # Consumption is stopped behind the pending change: remember where to resume, process nothing.
            self._positions.setdefault(partition, offset)
            return
        where = f"{self.topic}[{partition}]@{offset}"
        rebuild_until = self._rebuild_until.get(partition)
        if rebuild_until is not None and offset >= rebuild_until:
            del self._rebuild_until[partition]
            rebuild_until = None
        if message.value() is None:
            self.stats.tombstones_ignored += 1
            self._done(partition, offset)
            return
        try:
            if message.key() is None:
                raise SerializationError("record without a key")
            key = message.key().decode("utf-8")
            value = self._codec.decode(self.topic, message.value()).value
        except (SerializationError, UnicodeDecodeError) as error:
            # Not ours to dead-letter (the topic belongs to the service): log it, count it, keep going.
            self.stats.undecodable_skipped += 1
            logger.error("connector %s: skipped undecodable record %s: %s", self.channel, where, error)
            self._done(partition, offset)
            return
        version, snapshot = value["version"], bool(value.get("snapshot", False))
        assessment = self.view.assess(key, version, snapshot=snapshot)
        if not assessment.is_newer:
            if rebuild_until is None:
                self.stats.stale_ignored += 1
            self._done(partition, offset)
            return
        if rebuild_until is not None:
            # Already delivered before the last commit: back into the view, not to the sink again.
            self.view.apply(key, version, value["quantity"], value["status"])
            self.stats.rebuilt += 1
            self._done(partition, offset, commit=False)
            return
        if assessment.missing_versions:
            if partition in self._bootstrapping:
                self.stats.compaction_gaps += 1
                logger.debug("connector %s: %s v%d after v%d at %s (compacted away)", self.channel, key, version,
                             assessment.held_version, where)
            else:
                self.stats.version_gaps += 1
                logger.warning("connector %s: version gap on %s: v%d after v%d, %d version(s) missing, at %s",
                               self.channel, key, version, assessment.held_version, assessment.missing_versions,
                               where)
        change = AvailabilityChange(
            channel=self.channel, key=key, sku=value["sku"], location=value.get("location"),
            quantity=value["quantity"], status=value["status"], version=version,
            previous_version=assessment.held_version, snapshot=snapshot, event_id=value["event_id"],
            event_time=value["event_time"], topic=self.topic, partition=partition, offset=offset,
        )
        self._deliver(change)

    def _deliver(self, change: AvailabilityChange) -> None:
        try:
            self.sink.deliver(change)
        except SinkError as error:
            self._delivery_failed(change, error)
            return
        was_open = self.circuit.state is not CircuitState.CLOSED
        self.circuit.record_success()
        if was_open:
            logger.warning("connector %s: sink accepts changes again; circuit closed", self.channel)
        self._pending = None
        self.view.apply(change.key, change.version, change.quantity, change.status)
        self.stats.delivered += 1
        if change.snapshot:
            self.stats.snapshots_applied += 1
        self._done(change.partition, change.offset)

    def _delivery_failed(self, change: AvailabilityChange, error: SinkError) -> None:
        self.stats.sink_failures += 1
        attempts = 1 if self._pending is None else self._pending.attempts + 1
        opened_before = self.circuit.times_opened
        state = self.circuit.record_failure()
        now = self._clock()
        if state is CircuitState.OPEN:
            next_attempt_at = self.circuit.reopens_at
        else:
            next_attempt_at = now + self.backoff.delay(attempts)
        self._pending = _PendingChange(change, attempts, next_attempt_at)
        self._positions[change.partition] = change.offset  # resume AT the failed change
        where = f"{change.topic}[{change.partition}]@{change.offset}"
        if self.circuit.times_opened > opened_before:
            self.stats.circuit_opened += 1
            logger.error("connector %s: circuit open after %d failure(s); consumption paused, next probe in %.1fs "
                         "(%s at %s): %s", self.channel, self.circuit.consecutive_failures, next_attempt_at - now,
                         change.identity, where, error)
        else:
            logger.warning("connector %s: sink failed for %s at %s (attempt %d, retry in %.2fs): %s", self.channel,
                           change.identity, where, attempts, next_attempt_at - now, error)
        self._pause()

    def _done(self, partition: int, offset: int, *, commit: bool = True) -> None:
        self._positions[partition] = offset + 1
        if commit:
            self._to_commit[partition] = offset + 1

    # -- pause, resume, commit ---------------------------------------------------------------------------------

    def _pause(self) -> None:
        if self._paused:
            return
        self._consumer.pause(self._assignment())
        self._paused = True
        self.stats.pauses += 1

    def _resume(self) -> None:
        if not self._paused:
            return
        # Records fetched while paused (or after the failed one in its batch) were not processed: go back to the
        # first unprocessed record of every partition, then fetch again.
        for partition in sorted(self._assigned):
            if partition in self._positions:
                self._consumer.seek(TopicPartition(self.topic, partition, self._positions[partition]))
        if self._assigned:
            self._consumer.resume(self._assignment())
        self._paused = False
        self.stats.resumes += 1

    def _commit(self, partitions: set[int] | None = None) -> None:
        """Commit the offsets past what the sink accepted (saving the view first, so a restart never holds a
        view older than its offsets). A failed commit is retried with the next one."""
        offsets = {p: o for p, o in self._to_commit.items() if partitions is None or p in partitions}
        if not offsets or self._consumer is None:
            return
        if self._view_path is not None:
            self.view.save(self._view_path)
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in sorted(offsets.items())], asynchronous=False
            )
        except KafkaException as error:
            logger.warning("connector %s: commit failed, will retry: %s", self.channel, error)
            return
        for partition, offset in offsets.items():
            if self._to_commit.get(partition) == offset:
                del self._to_commit[partition]
        self.stats.commits += 1

    def _assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, partition) for partition in sorted(self._assigned)]

    # -- rebalance callbacks -----------------------------------------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=COMMITTED_LOOKUP_TIMEOUT_SECONDS)
        for partition in committed:
            number = partition.partition
            self._assigned.add(number)
            self._positions.pop(number, None)
            if partition.offset < 0:  # no committed offset: read the compacted topic from the beginning
                self._bootstrapping.add(number)
                if number in self._snapshot_starts:  # ... or from where the snapshot it started from ends
                    partition.offset = self._snapshot_starts.pop(number)
            elif self._view_path is None:
                self._rebuild_until[number] = partition.offset
                partition.offset = OFFSET_BEGINNING
        consumer.assign(committed)
        if self._paused:  # the sink is still down: new partitions wait too
            consumer.pause(partitions)
        logger.info("connector %s: assigned %s", self.channel, sorted(p.partition for p in partitions))

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        revoked = {partition.partition for partition in partitions}
        self._commit(revoked)
        self._forget(revoked)

    def _on_lost(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        self._forget({partition.partition for partition in partitions})

    def _forget(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._assigned.discard(partition)
            self._positions.pop(partition, None)
            self._to_commit.pop(partition, None)
            self._rebuild_until.pop(partition, None)
            self._bootstrapping.discard(partition)
        if self._pending is not None and self._pending.change.partition in partitions:
            # Never committed: the partition's next owner (maybe this connector again) reads the change again.
            self._pending = None
        if self._pending is None and self._paused:
            self._resume()  # nothing to wait for any more; partitions still held go on from where they stopped
