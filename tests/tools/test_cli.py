"""The `availability` command line: help for every subcommand, one-line errors, JSON Lines input, and tail/produce
against the broker."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from rich.console import Console

from app.kafka.broker import free_loopback_port
from app.tools.cli import build_parser, main
from app.tools.feed import FeedError, record_from_json, records_from_jsonl
from app.tools.live_view import AvailabilityBoard, location_matrix, network_table
from app.wire.serialization import AvroCodec
from app.wire.topics import RESERVATION_COMMANDS, STOCK_MOVEMENTS, STORE_TRANSACTIONS, availability_topic
from tests.commands import run_cli

SUBCOMMANDS = (
    [], ["worker"], ["topics"], ["topics", "create"], ["topics", "list"], ["demo"], ["tail"], ["produce"],
)


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("availability: error: ")
    for text in expected:
        assert text in lines[0]


# --------------------------------------------------------------------------------------------------------- help
@pytest.mark.parametrize("subcommand", SUBCOMMANDS, ids=lambda words: " ".join(words) or "availability")
def test_every_subcommand_has_help(subcommand: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*subcommand, "--help"])
    assert exit_info.value.code == 0
    assert "usage: availability" in capsys.readouterr().out


def test_help_lists_every_subcommand() -> None:
    text = build_parser().format_help()
    for name in ("worker", "topics", "demo", "tail", "produce"):
        assert name in text


def test_console_entry_point_runs_as_a_module() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "tail" in result.stdout


# ------------------------------------------------------------------------------------------------------- errors
def test_tail_against_an_unreachable_broker_is_one_line() -> None:
    address = f"127.0.0.1:{free_loopback_port()}"  # nothing listens there
    started = time.monotonic()
    result = run_cli("tail", "ecommerce", "--bootstrap-servers", address, "--timeout", "2")
    assert_one_line_error(result, "cannot reach Kafka", address)
    assert time.monotonic() - started < 30


def test_commands_that_need_a_broker_say_how_to_configure_one() -> None:
    assert_one_line_error(run_cli("topics", "create"), "KAFKA_BOOTSTRAP_SERVERS")
    assert_one_line_error(run_cli("produce", "--demo"), "KAFKA_BOOTSTRAP_SERVERS")


def test_unknown_channel_names_the_configured_ones() -> None:
    assert_one_line_error(run_cli("tail", "telephone"), "ecommerce, marketplace, store-pickup")


def test_invalid_setting_names_the_variable() -> None:
    assert_one_line_error(run_cli("topics", "list", env={"AVAILABILITY_PARTITIONS": "0"}), "AVAILABILITY_PARTITIONS")


def test_topics_list_needs_no_broker() -> None:
    result = run_cli("topics", "list")
    assert result.returncode == 0
    assert "availability.store-pickup" in result.stdout


# ------------------------------------------------------------------------------------------------ JSON Lines in
def test_json_lines_route_each_record_to_its_source_topic(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join([
        "# opening stock",
        json.dumps({"type": "StockMovement", "movement_type": "RECEIPT", "sku": "TSHIRT-BLUE-M",
                    "location": "STORE-LEEDS", "quantity": 5}),
        "",
        json.dumps({"type": "SALE", "sku": "TSHIRT-BLUE-M", "location": "STORE-LEEDS", "quantity": 1,
                    "event_id": "sale-1", "event_time": 1_700_000_000_000, "source": "pos"}),
        json.dumps({"type": "StockMovementBatch", "movements": [
            {"movement_type": "RECEIPT", "sku": "CAP-BLACK", "location": "DC-NORTH", "quantity": 10}]}),
        json.dumps({"type": "ReservationCommand", "command": "RESERVE", "reservation_id": "EC-1", "sku": "CAP-BLACK",
                    "channel": "ecommerce", "quantity": 2}),
    ]))
    records = list(records_from_jsonl(path))
    assert [record.topic for record in records] == [STORE_TRANSACTIONS, STORE_TRANSACTIONS, STOCK_MOVEMENTS,
                                                    RESERVATION_COMMANDS]
    assert records[1].value["type"] == "SALE" and records[1].value["event_id"] == "sale-1"
    assert records[1].key == "STORE-LEEDS" and records[3].key == "EC-1"
    assert records[2].value["movements"][0]["type"] == "RECEIPT"


def test_json_lines_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"type": "SALE", "sku": "A", "location": "B", "quantity": 1}\n{not json\n')
    with pytest.raises(FeedError, match=r"broken.jsonl:2: not valid JSON"):
        list(records_from_jsonl(path))
    with pytest.raises(FeedError, match="must be one of"):
        record_from_json({"type": "Telegram"})


# ------------------------------------------------------------------------------------------------------- board
def availability_value(channel: str, sku: str, quantity: int, version: int, location: str | None = None) -> dict:
    status = "OUT_OF_STOCK" if quantity == 0 else ("LOW_STOCK" if quantity < 5 else "IN_STOCK")
    return {"channel": channel, "sku": sku, "location": location, "quantity": quantity, "status": status,
            "version": version, "event_id": f"e-{version}", "ledger_partition": 0, "ledger_offset": version,
            "policy_version": 1, "event_time": 1_700_000_000_000 + version, "snapshot": False}


def test_board_keeps_the_highest_version_per_key() -> None:
    board = AvailabilityBoard(["ecommerce"])
    assert board.apply_availability("CAP-BLACK", availability_value("ecommerce", "CAP-BLACK", 9, 2))
    assert not board.apply_availability("CAP-BLACK", availability_value("ecommerce", "CAP-BLACK", 3, 1))
    assert board.apply_availability("CAP-BLACK", availability_value("ecommerce", "CAP-BLACK", 4, 3))
    [row] = board.rows("ecommerce")
    assert (row.quantity, row.status, row.version, row.delta) == (4, "LOW_STOCK", 3, -5)
    assert board.records_received == 3


def test_tables_render_quantity_status_and_version() -> None:
    board = AvailabilityBoard(["ecommerce", "store-pickup"])
    board.apply_availability("CAP-BLACK", availability_value("ecommerce", "CAP-BLACK", 0, 7))
    board.apply_availability("CAP-BLACK/STORE-YORK",
                             availability_value("store-pickup", "CAP-BLACK", 3, 2, location="STORE-YORK"))
    console = Console(width=120, record=True)
    console.print(network_table(board, "ecommerce"))
    console.print(location_matrix(board, "store-pickup"))
    text = console.export_text()
    assert "CAP-BLACK" in text and "OUT_OF_STOCK" in text and " 7 " in text
    assert "3 v2" in text


# --------------------------------------------------------------------------------------------- against a broker
@pytest.mark.integration
def test_produce_file_then_tail_once(bootstrap_servers: str, settings_factory, tmp_path: Path) -> None:
    settings = settings_factory()
    broker = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}
    created = run_cli("topics", "create", env=broker)
    assert created.returncode == 0, created.stderr
    assert "availability.ecommerce" in created.stdout
    *listed, summary = created.stdout.strip().splitlines()
    counts = re.fullmatch(r"(\d+) created, (\d+) already existed on .*", summary)
    assert counts and int(counts[1]) + int(counts[2]) == len(listed), created.stdout  # no "-3 already existed"

    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps({"type": "RECEIPT", "sku": "CLI-SKU-1", "location": "DC-NORTH", "quantity": 4}))
    produced = run_cli("produce", "--file", "events.jsonl", env=broker, cwd=tmp_path)  # as README writes it
    assert produced.returncode == 0, produced.stderr
    assert "sent 1 records" in produced.stdout
    assert records_on(bootstrap_servers, STORE_TRANSACTIONS.name, key=b"DC-NORTH", containing=b"CLI-SKU-1")

    # What the worker would publish, written directly: tail needs no worker to show a channel topic.
    topic = availability_topic("ecommerce")
    codec = AvroCodec(settings)
    producer = Producer({"bootstrap.servers": bootstrap_servers})
    for version, quantity in ((1, 12), (2, 11)):
        value = availability_value("ecommerce", "CLI-TAIL-SKU", quantity, version)
        producer.produce(topic.name, codec.encode(topic, value), key=b"CLI-TAIL-SKU")
    assert producer.flush(10) == 0

    tailed = run_cli("tail", "ecommerce", "--once", env=broker)
    assert tailed.returncode == 0, tailed.stderr
    row = next(line for line in tailed.stdout.splitlines() if "CLI-TAIL-SKU" in line)
    assert "11" in row and "IN_STOCK" in row and " 2 " in row


@pytest.mark.integration
def test_produce_reports_every_bad_line_in_one_line_each_and_sends_nothing(bootstrap_servers: str,
                                                                           tmp_path: Path) -> None:
    broker = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}
    assert run_cli("topics", "create", env=broker).returncode == 0
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join([
        json.dumps({"type": "RECEIPT", "sku": "CLI-NOT-SENT", "location": "DC-NORTH", "quantity": 4}),
        json.dumps({"type": "SALE", "sku": "X"}),
        json.dumps({"type": "ReservationCommand", "command": "RESERVE", "sku": "X", "channel": "ecommerce",
                    "quantity": 1}),
        json.dumps({"type": "SALE", "sku": "CLI-SKU-2", "location": "STORE-YORK", "quantity": "three"}),
        "{not json",
    ]) + "\n")
    result = run_cli("produce", "--file", "events.jsonl", env=broker, cwd=tmp_path)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and "KeyError" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[:2] == [
        'availability: error: events.jsonl:2: missing field "location" (a StockMovement needs it)',
        'availability: error: events.jsonl:3: missing field "reservation_id" (a ReservationCommand needs it)',
    ]
    assert lines[2].startswith("availability: error: events.jsonl:4: record does not fit StockMovement: ")
    assert lines[3].startswith("availability: error: events.jsonl:5: not valid JSON (")
    assert lines[4:] == ["availability: error: 4 of 5 records in events.jsonl are not valid; nothing was sent: fix "
                         "the lines above and run again"]
    assert "sent" not in result.stdout
    assert not records_on(bootstrap_servers, STORE_TRANSACTIONS.name, key=b"DC-NORTH", containing=b"CLI-NOT-SENT")


def records_on(bootstrap_servers: str, topic: str, *, key: bytes, containing: bytes) -> list[bytes]:
    """The values of `topic` (every record there now) with this key whose bytes contain `containing`."""
    from app.replay.reading import PartitionsReader

    with PartitionsReader(bootstrap_servers, topic, through_start_ends=True) as reader:
        return [message.value() for batch in reader.batches() for message in batch
                if message.key() == key and containing in message.value()]


# ----------------------------------------------------------------------------- snapshot and tail --once on a live topic
class ContinuousWriter:
    """Writes ChannelAvailability records to availability.ecommerce without pause, on a thread, until stopped:
    20 keys of a prefix of its own, each record one version above the key's last. Knows what was acknowledged."""

    KEYS = 20

    def __init__(self, bootstrap_servers: str, settings) -> None:
        self.prefix = f"LIVE-{settings.app_id}"
        self.topic = availability_topic("ecommerce")
        self.codec = AvroCodec(settings)
        self.producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 2})
        self.acknowledged: dict[str, int] = {}  # key -> highest version acknowledged by the broker
        self.condition = threading.Condition()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._write, name="continuous-writer", daemon=True)

    def _acknowledged(self, version: int, error, message) -> None:
        if error is None:
            with self.condition:
                key = message.key().decode()
                self.acknowledged[key] = max(self.acknowledged.get(key, 0), version)
                self.condition.notify_all()

    def _write(self) -> None:
        version = 0
        while not self.stop.is_set():
            version += 1
            for index in range(self.KEYS):
                key = f"{self.prefix}-{index:02d}"
                value = availability_value("ecommerce", key, 100 - version % 90, version)
                self.producer.produce(self.topic.name, self.codec.encode(self.topic, value), key=key.encode(),
                                      on_delivery=functools.partial(self._acknowledged, version))
            self.producer.poll(0)
            self.stop.wait(0.01)  # pacing: about 2,000 records a second, many small batches per partition
        self.producer.flush(10)

    def wait_for(self, records_per_key: int, timeout: float = 30) -> dict[str, int]:
        """Once every key has that many versions acknowledged: a copy of what is acknowledged now."""
        with self.condition:
            assert self.condition.wait_for(
                lambda: len(self.acknowledged) == self.KEYS and min(self.acknowledged.values()) >= records_per_key,
                timeout), f"the writer got {self.acknowledged} acknowledged within {timeout}s"
            return dict(self.acknowledged)

    def __enter__(self) -> ContinuousWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


@pytest.mark.integration
def test_snapshot_of_a_topic_being_written_returns_within_seconds_with_everything_there_at_its_start(
        bootstrap_servers: str, settings_factory) -> None:
    """docs/REPLAY.md and README: `availability snapshot ecommerce`, while records keep arriving."""
    from app.kafka.admin import create_topics
    from app.replay.reading import PartitionsReader
    from app.wire.topics import SNAPSHOT_ID_HEADER, availability_snapshot_topic

    settings = settings_factory()
    create_topics(settings, bootstrap_servers)
    with ContinuousWriter(bootstrap_servers, settings) as writer:
        there_at_start = writer.wait_for(records_per_key=10)
        started = time.monotonic()
        result = run_cli("snapshot", "ecommerce", env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers})
        seconds = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert writer.thread.is_alive()  # still writing when the snapshot ended
    assert seconds < 20, f"snapshot took {seconds:.1f}s on a topic being written"
    assert result.stderr == ""  # not a terminal: no progress bar
    snapshot_id = re.match(r"snapshot (\S+):", result.stdout)[1]

    snapshot: dict[str, int] = {}
    with PartitionsReader(bootstrap_servers, availability_snapshot_topic("ecommerce").name,
                          through_start_ends=True) as reader:
        for batch in reader.batches():
            for message in batch:
                if (SNAPSHOT_ID_HEADER, snapshot_id.encode()) in (message.headers() or []):
                    value = AvroCodec(settings).decode(availability_topic("ecommerce"), message.value()).value
                    snapshot[message.key().decode()] = value["version"]
    for key, version in there_at_start.items():
        assert snapshot.get(key, 0) >= version, f"{key}: v{version} was there at the start, snapshot has {snapshot.get(key)}"


@pytest.mark.integration
def test_tail_once_on_a_topic_being_written_returns_within_seconds_with_everything_there_at_its_start(
        bootstrap_servers: str, settings_factory) -> None:
    from app.kafka.admin import create_topics

    settings = settings_factory()
    create_topics(settings, bootstrap_servers)
    with ContinuousWriter(bootstrap_servers, settings) as writer:
        there_at_start = writer.wait_for(records_per_key=10)
        started = time.monotonic()
        result = run_cli("tail", "ecommerce", "--once", env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers})
        seconds = time.monotonic() - started
        assert result.returncode == 0, result.stderr
    assert seconds < 20, f"tail --once took {seconds:.1f}s on a topic being written"
    shown = {}
    for line in result.stdout.splitlines():
        cells = line.split()
        if cells and cells[0].startswith(writer.prefix):
            shown[cells[0]] = int(cells[3])  # SKU qty status ver chg
    for key, version in there_at_start.items():
        assert shown.get(key, 0) >= version, f"{key}: v{version} was there at the start, tail shows {shown.get(key)}"


@pytest.mark.integration
def test_tail_piped_into_head_ends_quietly_when_head_has_read_enough(bootstrap_servers: str, settings_factory) -> None:
    """`availability tail ecommerce | head -5`, built as the shell builds it."""
    import signal
    import subprocess as sp

    from app.kafka.admin import create_topics
    from tests.commands import CLI, cli_environment

    settings = settings_factory()
    create_topics(settings, bootstrap_servers)
    topic = availability_topic("ecommerce")
    codec = AvroCodec(settings)
    producer = Producer({"bootstrap.servers": bootstrap_servers})

    def publish(key: str) -> None:
        producer.produce(topic.name, codec.encode(topic, availability_value("ecommerce", key, 7, 1)), key=key.encode())
        assert producer.flush(10) == 0

    for index in range(6):
        publish(f"PIPE-{settings.app_id}-{index}")
    tail = sp.Popen([*CLI, "tail", "ecommerce"], env=cli_environment({"KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers}),
                    stdout=sp.PIPE, stderr=sp.PIPE)
    try:
        head = sp.Popen(["head", "-5"], stdin=tail.stdout, stdout=sp.PIPE, text=True)
        tail.stdout.close()  # head holds the only reading end now, as in a shell pipeline
        shown, _ = head.communicate(timeout=60)
        assert len(shown.splitlines()) == 5
        publish(f"PIPE-{settings.app_id}-after-head")  # tail has something to write to the closed pipe
        assert tail.wait(timeout=30) == 128 + signal.SIGPIPE
        assert tail.stderr.read() == b""  # no BrokenPipeError traceback, no "Exception ignored" either
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
        tail.stderr.close()


def test_benchmark_offers_no_broker_option_and_refuses_one_given_before_it(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    assert "--bootstrap-servers" not in capsys.readouterr().out
    assert_one_line_error(run_cli("-b", "127.0.0.1:9092", "benchmark"), "starts its own embedded brokers")


@pytest.mark.integration
def test_snapshot_on_a_terminal_shows_progress(bootstrap_servers: str, settings_factory) -> None:
    import os
    import pty

    from app.kafka.admin import create_topics
    from tests.commands import CLI, cli_environment

    create_topics(settings_factory(), bootstrap_servers)
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [*CLI, "snapshot", "ecommerce"], stdin=subprocess.DEVNULL, stdout=terminal, stderr=terminal,
            env=cli_environment({"KAFKA_BOOTSTRAP_SERVERS": bootstrap_servers, "TERM": "xterm", "COLUMNS": "120"}))
        os.close(terminal)
        terminal = None
        shown = b""
        while True:  # until the process closes its side of the terminal
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: no writer left
                break
            if not chunk:
                break
            shown += chunk
        assert process.wait(timeout=60) == 0, shown
    finally:
        os.close(controller)
        if terminal is not None:
            os.close(terminal)
    text = shown.decode(errors="replace")
    assert "reading availability.ecommerce" in text, text  # the bar's label, drawn while it reads
    assert "snapshot ecommerce-" in text
