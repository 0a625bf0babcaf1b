"""Watch availability as it is published: a consumer thread fills an `AvailabilityBoard`, rich renders it.

The board is plain state (latest record per channel and key, recent reservation decisions, counters) so rendering and
its rules are testable without a broker. `BoardConsumer` reads `availability.<channel>` topics (and optionally
`reservation-decisions`) from the beginning with confluent-kafka, by explicit partition assignment: no consumer group
to join, so records show up as soon as they exist. Used by `availability demo` and `availability tail`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from app.errors import UserError
from app.kafka.client_config import client_config
from app.wire.serialization import AvroCodec, SerializationError
from app.wire.topics import AVAILABILITY_TOPIC_PREFIX, INVENTORY_EXCEPTIONS, RESERVATION_DECISIONS, availability_topic

if TYPE_CHECKING:
    from app.settings import Settings

RECENT_CHANGE_SECONDS = 3.0
STATUS_STYLES = {"IN_STOCK": "green", "LOW_STOCK": "yellow", "OUT_OF_STOCK": "bold red"}
OUTCOME_STYLES = {"ACCEPTED": "green", "FULFILLED": "cyan", "RELEASED": "blue", "REJECTED": "bold red",
                  "EXPIRED": "magenta"}


class ViewError(UserError):
    """The view cannot read from the broker. The message says what is wrong and what to do about it."""


@dataclass
class AvailabilityRow:
    channel: str
    key: str
    sku: str
    location: str | None
    quantity: int
    status: str
    version: int
    event_time: int
    changed_at: float  # monotonic time of the last change seen here
    delta: int | None  # quantity change against the previous record of the key; None for its first record


@dataclass(frozen=True)
class DecisionRow:
    reservation_id: str
    channel: str
    sku: str
    outcome: str
    reason: str | None
    requested: int
    reserved: int
    lines: tuple[tuple[str, int], ...]
    event_time: int


class AvailabilityBoard:
    """Latest availability per (channel, key) and the last few reservation decisions. Thread-safe.

    A record whose version is not above the one held is ignored, as the contract tells connectors to do."""

    def __init__(self, channels: Iterable[str], decisions_kept: int = 12,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.channels = tuple(channels)
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, AvailabilityRow]] = {channel: {} for channel in self.channels}
        self._decisions: deque[DecisionRow] = deque(maxlen=decisions_kept)
        self._exceptions: deque[dict[str, Any]] = deque(maxlen=6)  # the latest inventory-exceptions records
        self.exceptions_received = 0
        self.records_received = 0
        self.decisions_received = 0
        self.undecodable = 0
        self.first_record_at: float | None = None
        self.last_message_at: float | None = None

    def apply_availability(self, key: str, value: dict[str, Any]) -> bool:
        """Record one ChannelAvailability value; False when it is stale (version not above the one held)."""
        with self._lock:
            now = self._clock()
            self.records_received += 1
            self.last_message_at = now
            if self.first_record_at is None:
                self.first_record_at = now
            rows = self._rows.setdefault(value["channel"], {})
            previous = rows.get(key)
            if previous is not None and value["version"] <= previous.version:
                return False
            rows[key] = AvailabilityRow(
                channel=value["channel"], key=key, sku=value["sku"], location=value.get("location"),
                quantity=value["quantity"], status=value["status"], version=value["version"],
                event_time=value["event_time"], changed_at=now,
                delta=None if previous is None else value["quantity"] - previous.quantity,
            )
            return True

    def apply_decision(self, value: dict[str, Any]) -> DecisionRow:
        lines = tuple((line["location"], line["quantity"]) for line in value.get("lines") or ())
        row = DecisionRow(
            reservation_id=value["reservation_id"], channel=value["channel"], sku=value["sku"],
            outcome=value["outcome"], reason=value.get("reason"), requested=value["requested_quantity"],
            reserved=value["reserved_quantity"], lines=lines, event_time=value["event_time"],
        )
        with self._lock:
            self.decisions_received += 1
            self.last_message_at = self._clock()
            self._decisions.appendleft(row)
        return row

    def apply_exception(self, value: dict[str, Any]) -> None:
        with self._lock:
            self.exceptions_received += 1
            self.last_message_at = self._clock()
            self._exceptions.appendleft(value)

    def exceptions(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._exceptions)

    def note_undecodable(self) -> None:
        with self._lock:
            self.undecodable += 1

    def rows(self, channel: str) -> list[AvailabilityRow]:
        with self._lock:
            return sorted(self._rows.get(channel, {}).values(), key=lambda row: (row.sku, row.location or ""))

    def decisions(self) -> list[DecisionRow]:
        with self._lock:
            return list(self._decisions)

    def is_recent(self, row: AvailabilityRow) -> bool:
        return self._clock() - row.changed_at < RECENT_CHANGE_SECONDS


class BoardConsumer:
    """Reads availability topics (and reservation decisions) into a board, on a daemon thread.

    `connect()` checks the broker and the topics and assigns every partition from the beginning; it raises ViewError
    with the fix when the broker does not answer or a topic is missing. `on_decision` is called for each decision,
    `on_availability(key, value)` for each availability record that is newer than the one held."""

    def __init__(self, settings: Settings, bootstrap_servers: str, board: AvailabilityBoard, *,
                 channels: Iterable[str], include_decisions: bool = False, include_exceptions: bool = False,
                 on_decision: Callable[[DecisionRow], None] | None = None,
                 on_availability: Callable[[str, dict[str, Any]], None] | None = None,
                 logger: logging.Logger | None = None) -> None:
        self._settings = settings
        self._bootstrap_servers = bootstrap_servers
        self._board = board
        self._topics = [availability_topic(channel).name for channel in channels]
        if include_decisions:
            self._topics.append(RESERVATION_DECISIONS.name)
        if include_exceptions:
            self._topics.append(INVENTORY_EXCEPTIONS.name)
        self._on_decision = on_decision
        self._on_availability = on_availability
        self._logger = logger or _quiet_logger()
        self._consumer: Consumer | None = None
        self._codec: AvroCodec | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ends_at_start = None  # an app.replay.reading.EndsAtStart, with connect(read_through_start=True)
        self._positions: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset after the last record read
        self.error: str | None = None

    def connect(self, timeout: float, read_through_start: bool = False) -> None:
        """`read_through_start`: track when every record the topics held at this moment has been read
        (`caught_up`; app.replay.reading.EndsAtStart says how)."""
        self._codec = AvroCodec(self._settings)
        self._consumer = Consumer(client_config(self._settings, self._bootstrap_servers, **{
            "group.id": f"availability-view-{id(self):x}",  # required by the client; never joined or committed
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "logger": self._logger,
            **({"enable.partition.eof": True, "fetch.wait.max.ms": 100} if read_through_start else {}),
        }))
        try:
            metadata = self._consumer.list_topics(timeout=timeout)
        except KafkaException as error:
            self.close()
            raise ViewError(
                f"cannot reach Kafka at {self._bootstrap_servers} within {timeout:g}s ({_kafka_reason(error)}); "
                "start the broker or point KAFKA_BOOTSTRAP_SERVERS at one that runs"
            ) from None
        missing = [topic for topic in self._topics if topic not in metadata.topics]
        if missing:
            self.close()
            raise ViewError(
                f"topic {', '.join(missing)} does not exist on {self._bootstrap_servers}; "
                "create the topics with `availability topics create` (or start `availability demo`)"
            )
        partitions = [(topic, partition)
                      for topic in self._topics for partition in sorted(metadata.topics[topic].partitions)]
        if read_through_start:
            from app.replay.reading import EndsAtStart

            self._ends_at_start = EndsAtStart(self._consumer, partitions, timeout)
        self._consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for topic, partition in partitions])

    @property
    def caught_up(self) -> bool:
        """With connect(read_through_start=True): every record the topics held at connect() has been read."""
        return self._ends_at_start is not None and self._ends_at_start.done

    @property
    def records_to_go(self) -> int:
        """About how many records are left to read before `caught_up` (0 when not tracked)."""
        ends = self._ends_at_start
        if ends is None:
            return 0
        return sum(max(0, ends.end(*where) - self._positions.get(where, 0)) for where in ends.pending)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="availability-view", daemon=True)
        self._thread.start()

    def poll_once(self, timeout: float = 0.2, max_messages: int = 500) -> int:
        """Poll one batch and apply it to the board; returns the number of messages read."""
        assert self._consumer is not None and self._codec is not None, "connect() first"
        messages = self._consumer.consume(num_messages=max_messages, timeout=timeout)
        for message in messages:
            if self._ends_at_start is not None:
                self._ends_at_start.note(message)
            if message.error() is not None:
                if message.error().code() != KafkaError._PARTITION_EOF:
                    self._logger.warning("view consumer: %s", message.error())
                continue
            self._positions[(message.topic(), message.partition())] = message.offset() + 1
            self._apply(message)
        return len(messages)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.close()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.poll_once()
        except Exception as error:  # the view shows it instead of dying silently
            self.error = f"{type(error).__name__}: {error}"
            self._logger.exception("view consumer stopped")

    def _apply(self, message) -> None:
        topic = message.topic()
        try:
            value = self._codec.decode(topic, message.value()).value
        except SerializationError:
            self._board.note_undecodable()
            return
        if topic.startswith(AVAILABILITY_TOPIC_PREFIX):
            key = message.key().decode() if message.key() is not None else value["sku"]
            if self._board.apply_availability(key, value) and self._on_availability is not None:
                self._on_availability(key, value)
        elif topic == INVENTORY_EXCEPTIONS.name:
            self._board.apply_exception(value)
        else:
            decision = self._board.apply_decision(value)
            if self._on_decision is not None:
                self._on_decision(decision)


def _kafka_reason(error: KafkaException) -> str:
    kafka_error = error.args[0] if error.args else None
    return kafka_error.str() if isinstance(kafka_error, KafkaError) else str(error)


def _quiet_logger() -> logging.Logger:
    # librdkafka logs every refused connection; the view reports reachability itself, in one line.
    logger = logging.getLogger("app.tools.live_view.librdkafka")
    logger.setLevel(logging.CRITICAL)
    logger.propagate = False
    return logger


# ------------------------------------------------------------------------------------------------------- rendering
def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def _delta_text(row: AvailabilityRow) -> Text:
    if row.delta is None or row.delta == 0:
        return Text("new" if row.delta is None else "=", style="dim")
    return Text(f"{row.delta:+d}", style="green" if row.delta > 0 else "red")


def network_table(board: AvailabilityBoard, channel: str, title: str | None = None) -> Table:
    """One row per key: SKU (and location), quantity, status, version, last change; fresh rows highlighted."""
    rows = board.rows(channel)
    has_location = any(row.location for row in rows)
    table = Table(title=title, title_justify="left", expand=False, pad_edge=False, header_style="bold",
                  box=box.SIMPLE_HEAD)
    table.add_column("SKU", no_wrap=True)
    if has_location:
        table.add_column("location", no_wrap=True)
    table.add_column("qty", justify="right", no_wrap=True, min_width=3)
    table.add_column("status", no_wrap=True)
    table.add_column("ver", justify="right", style="dim", no_wrap=True, min_width=3)
    table.add_column("chg", justify="right", no_wrap=True, min_width=3)
    for row in rows:
        cells: list[RenderableType] = [row.sku]
        if has_location:
            cells.append(row.location or "")
        cells += [str(row.quantity), status_text(row.status), str(row.version), _delta_text(row)]
        table.add_row(*cells, style="reverse" if board.is_recent(row) else None)
    return table


def location_matrix(board: AvailabilityBoard, channel: str, title: str | None = None) -> Table:
    """A LOCATION channel as SKU x location: each cell `quantity` coloured by status, `vN` its version."""
    rows = board.rows(channel)
    locations = sorted({row.location for row in rows if row.location})
    prefix = _common_prefix(locations)
    table = Table(title=title, title_justify="left", pad_edge=False, header_style="bold", box=box.SIMPLE_HEAD)
    table.add_column("SKU", no_wrap=True)
    for location in locations:
        table.add_column(location[len(prefix):], justify="right", no_wrap=True)
    by_sku: dict[str, dict[str, AvailabilityRow]] = {}
    for row in rows:
        by_sku.setdefault(row.sku, {})[row.location or ""] = row
    for sku in sorted(by_sku):
        cells: list[RenderableType] = [sku]
        for location in locations:
            row = by_sku[sku].get(location)
            if row is None:
                cells.append(Text("-", style="dim"))
                continue
            cell = Text(f"{row.quantity:>3}", style=STATUS_STYLES.get(row.status, ""))
            cell.append(f" v{row.version:<3}", style="dim")
            if board.is_recent(row):
                cell.stylize("reverse")
            cells.append(cell)
        table.add_row(*cells)
    return table


def decisions_table(decisions: list[DecisionRow], limit: int) -> Table:
    table = Table(title="recent reservation decisions", title_justify="left", pad_edge=False,
                  header_style="bold", box=box.SIMPLE_HEAD)
    for name, justify in (("time", "left"), ("reservation", "left"), ("channel", "left"), ("sku", "left"),
                          ("outcome", "left"), ("qty", "right"), ("detail", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for decision in decisions[:limit]:
        when = time.strftime("%H:%M:%S", time.localtime(decision.event_time / 1000))
        if decision.outcome == "REJECTED":
            detail = decision.reason or ""
        else:
            detail = ", ".join(f"{location} {quantity}" for location, quantity in decision.lines)
        if decision.outcome in ("ACCEPTED", "REJECTED"):
            quantity = f"{decision.reserved}/{decision.requested}"
        else:
            quantity = str(decision.reserved)
        table.add_row(when, decision.reservation_id, decision.channel, decision.sku,
                      Text(decision.outcome, style=OUTCOME_STYLES.get(decision.outcome, "")), quantity, detail)
    return table


def exceptions_table(exceptions: list[dict[str, Any]]) -> Table:
    """The latest inventory-exceptions records: facts applied below zero, silent feeds and their recovery."""
    table = Table(title="recent inventory exceptions (inventory-exceptions)", title_justify="left", pad_edge=False,
                  header_style="bold", box=box.SIMPLE_HEAD)
    for name in ("time", "kind", "where", "detail"):
        table.add_column(name, no_wrap=name != "detail", overflow="ellipsis")
    for value in exceptions:
        when = time.strftime("%H:%M:%S", time.localtime(value["event_time"] / 1000))
        where = "/".join(part for part in (value.get("sku"), value.get("location")) if part)
        style = "green" if value["kind"] == "FEED_RECOVERED" else "bold yellow"
        table.add_row(when, Text(value["kind"], style=style), where, value["detail"])
    return table


def channel_view(board: AvailabilityBoard, channel: str, granularity_hint: str | None = None) -> RenderableType:
    """The best table for a channel: a matrix for per-location channels, a list otherwise."""
    rows = board.rows(channel)
    if not rows:
        return Group(Text(channel, style="bold"), Text("  no records yet", style="dim italic"))
    is_location = any(row.location for row in rows) or granularity_hint == "LOCATION"
    if is_location:
        title = f"{channel} (per location)"
        return location_matrix(board, channel, title)
    return network_table(board, channel, f"{channel} (network)")


def _common_prefix(names: list[str]) -> str:
    if len(names) < 2:
        return ""
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    cut = prefix.rfind("-") + 1  # strip whole words only: STORE-LONDON -> LONDON
    return prefix[:cut]


# ---------------------------------------------------------------------------------------------- the demo's screen
def demo_screen(status, width: int, height: int) -> RenderableType:
    """Status panel, one table per channel (network channels side by side), recent reservation decisions.

    `status` is an app.tools.demo.DemoStatus (duck-typed here to keep the view independent of the demo)."""
    board: AvailabilityBoard = status.board
    elapsed = time.monotonic() - status.started
    worker_state = status.worker.state()
    parts: list[RenderableType] = [_status_panel(status, board, worker_state, elapsed)]
    if board.records_received == 0:
        parts.append(_waiting_message(status, worker_state, elapsed))
    used = 8  # the status panel
    network = [channel for channel in board.channels if board.rows(channel) and not _is_location(board, channel)]
    located = [channel for channel in board.channels if channel not in network]
    if network:
        tables = [network_table(board, channel, f"{channel} (network)") for channel in network]
        if width >= 50 * len(tables):  # side by side when they fit, else one under the other
            grid = Table.grid(padding=(0, 3))
            grid.add_row(*tables)
            parts.append(grid)
            used += 4 + max(len(board.rows(channel)) for channel in network)
        else:
            parts.extend(tables)
            used += sum(4 + len(board.rows(channel)) for channel in network)
    waiting = [channel for channel in located if not board.rows(channel)]
    if waiting and board.records_received:
        parts.append(Text(f"no records yet on: {', '.join(waiting)}", style="dim italic"))
    for channel in located:
        if board.rows(channel):
            parts.append(location_matrix(board, channel, f"{channel} (per location: quantity vVersion)"))
            used += 4 + len({row.sku for row in board.rows(channel)})
    if board.exceptions_received:
        exceptions = board.exceptions()
        parts.append(exceptions_table(exceptions))
        used += 4 + len(exceptions)
    decision_rows = max(3, height - used - 5)
    if board.decisions_received:
        parts.append(decisions_table(board.decisions(), decision_rows))
    parts.append(Text("highlighted: changed in the last 3 s · green IN_STOCK, yellow LOW_STOCK, red OUT_OF_STOCK",
                      style="dim"))
    return Group(*parts)


def show_demo_live(status, deadline: float | None) -> None:
    """Redraw the demo screen four times a second until the deadline (or KeyboardInterrupt)."""
    from rich.console import Console
    from rich.live import Live

    console = Console()
    with Live(console=console, screen=True, auto_refresh=False, transient=False) as live:
        while deadline is None or time.monotonic() < deadline:
            live.update(demo_screen(status, console.width, console.height), refresh=True)
            time.sleep(0.25)


def _status_panel(status, board: AvailabilityBoard, worker_state: str, elapsed: float) -> RenderableType:
    from rich.panel import Panel

    broker = f"embedded, pid {status.broker.pid}" if status.broker is not None else "external"
    worker_style = {"ready": "green", "starting": "yellow"}.get(worker_state, "bold red")
    lines = Text()
    lines.append(f"up {_duration(elapsed)}   broker {status.bootstrap_servers} ({broker})   worker pid "
                 f"{status.worker.pid}: ")
    lines.append(worker_state, style=worker_style)
    lines.append("\n")
    lines.append(f"feed: {status.feed.producer.sent} events sent, last: ")
    lines.append(status.feed.last_event, style="cyan")
    if status.feed.error:
        lines.append(f"  feed error: {status.feed.error}", style="bold red")
    lines.append(f"\nview: {board.records_received} availability records, {board.decisions_received} decisions")
    if board.first_record_at is not None:
        lines.append(f"   first record after {board.first_record_at - status.started:.1f}s")
    if status.consumer.error:
        lines.append(f"   view error: {status.consumer.error}", style="bold red")
    lines.append("\nworker HTTP API: ")
    lines.append(status.worker.web_url, style="bold")
    lines.append(f"   curl {status.worker.web_url}/availability/SKU", style="dim")
    lines.append(f"\nlogs: {status.worker.log_path}  {status.demo_dir / 'broker.log'}   Ctrl-C stops everything\n"
                 f"another terminal: availability -b {status.bootstrap_servers} tail ecommerce; availability "
                 "explain SKU (finds this demo's worker)", style="dim")
    return Panel(lines, title="inventory availability demo", title_align="left", border_style="blue")


def _waiting_message(status, worker_state: str, elapsed: float) -> RenderableType:
    spinner = "|/-\\"[int(elapsed * 4) % 4]
    if worker_state == "starting":
        text = (f"{spinner} worker starting for {_duration(elapsed)}: loading, joining its consumer group, "
                "recovering tables. Availability appears here as soon as it publishes (usually within a minute).")
    elif worker_state == "ready":
        text = f"{spinner} worker ready; waiting for its first availability records ..."
    else:
        text = f"worker {worker_state}: read {status.worker.log_path}"
    return Text(text, style="yellow" if worker_state in ("starting", "ready") else "bold red")


def _is_location(board: AvailabilityBoard, channel: str) -> bool:
    return any(row.location for row in board.rows(channel))


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
