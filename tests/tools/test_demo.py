"""The demo: its feed builds valid, plausible records; `availability demo` shows availability within 90 s, prints its
worker's HTTP address, which `availability explain` finds by itself, and leaves no process behind after SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from app.settings import DEFAULT_CHANNELS
from app.tools.demo_feed import CATALOGUE, DISTRIBUTION_CENTRES, QUIET_STORE, STORES, DemoFeed
from app.wire.serialization import AvroCodec
from app.wire.topics import POLICY_CHANGES, availability_topic
from tests.commands import cli_environment, run_cli

FIRST_RECORD_DEADLINE_SECONDS = 90
STOP_DEADLINE_SECONDS = 45


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------------------ the feed
def test_feed_opens_with_the_policy_then_stock(settings_factory) -> None:
    codec = AvroCodec(settings_factory())
    (policy, policy_text), (opening, _), (first_pos, _) = DemoFeed(seed=1).opening()
    assert policy.topic is POLICY_CHANGES
    channels = {rule["channel"]: rule for rule in policy.value["channels"]}
    assert set(channels) == set(DEFAULT_CHANNELS)
    assert channels["ecommerce"]["priority"] == 0 and channels["ecommerce"]["granularity"] == "NETWORK"
    assert channels["marketplace"]["share_bp"] == 5000 and channels["marketplace"]["buffer"] > 0
    assert channels["store-pickup"]["granularity"] == "LOCATION" and channels["store-pickup"]["location_types"] == [
        "STORE"]
    types = Counter(location["location_type"] for location in policy.value["locations"])
    assert types == {"DISTRIBUTION_CENTRE": 2, "STORE": 6}
    stocked = {(movement["sku"], movement["location"]) for movement in opening.value["movements"]}
    assert {sku for sku, _ in stocked} == {product.sku for product in CATALOGUE}
    assert {location for _, location in stocked} == set(DISTRIBUTION_CENTRES + STORES)
    assert all(movement["quantity"] > 0 for movement in opening.value["movements"])  # a zero receipt is invalid
    assert first_pos.key == QUIET_STORE and first_pos.value["type"] == "CYCLE_COUNT"  # its POS is watched from now
    for record in (policy, opening, first_pos):
        codec.encode(record.topic, record.value)


def test_the_demo_shows_a_fact_below_zero_and_a_silent_feed_with_its_fallback() -> None:
    """The demo's two scripted moments, through the engine as the service runs it (events in order on one ledger
    partition, the ingest stage's feed activity after each event, a clock tick a second)."""
    from app.engine import ClockTick, ExceptionKind, InventoryException, event_from_record, run_ledger
    from app.engine.positions import ledger_position
    from app.service.ingest import FeedActivityReporter

    clock = FakeClock()
    start_ms = 1_800_000_000_000
    feed = DemoFeed(seed=5, clock=clock, event_time=lambda: start_ms + int(clock.now * 1000))
    reporter = FeedActivityReporter()
    entries, next_tick = [], 1.0

    def append(event) -> None:
        entries.append((0, ledger_position(len(entries)), event))

    records = [record for record, _ in feed.opening()]
    while clock.now < 150:
        for record in records:
            name = {"StockMovementBatch": "StockMovement"}.get(record.topic.value_record, record.topic.value_record)
            for value in record.value.get("movements", [record.value]):
                event = event_from_record(name, value)
                append(event)
                if name == "StockMovement":
                    reporter.observe(record.topic.name, event)
            for activity in reporter.activities():
                append(activity)
        clock.now += 0.33
        if clock.now >= next_tick:
            append(ClockTick(start_ms + int(next_tick * 1000)))
            next_tick += 1.0
        records = [feed.next_event()[0]]
    kinds = [(o.kind, o.location) for o in run_ledger(entries, DEFAULT_CHANNELS) if isinstance(o, InventoryException)]
    assert (ExceptionKind.NEGATIVE_STOCK, "STORE-LEEDS") in kinds
    stale = kinds.index((ExceptionKind.STALE_FEED, QUIET_STORE))
    assert (ExceptionKind.FEED_RECOVERED, QUIET_STORE) in kinds[stale:]


def test_feed_events_encode_and_cover_every_kind(settings_factory) -> None:
    codec = AvroCodec(settings_factory())
    clock = FakeClock()
    feed = DemoFeed(seed=7, clock=clock)
    feed.opening()
    kinds: Counter[str] = Counter()
    for _ in range(600):
        clock.now += 0.33
        record, description = feed.next_event()
        codec.encode(record.topic, record.value)  # raises if the record does not fit its schema
        value = record.value.get("movements", [record.value])[0]
        kinds[value.get("type") or value.get("command")] += 1
        assert description
    for kind in ("SALE", "RETURN", "RECEIPT", "CYCLE_COUNT", "TRANSFER_SHIPPED", "TRANSFER_RECEIVED", "RESERVE",
                 "FULFIL", "RELEASE"):
        assert kinds[kind] > 0, kinds
    assert all(quantity >= 0 for quantity in feed.on_hand.values())  # the late return has arrived


def test_feed_lets_a_scarce_sku_run_out(settings_factory) -> None:
    clock = FakeClock()
    feed = DemoFeed(seed=3, clock=clock)
    feed.opening()
    scarce = "SNEAKER-WHITE-42"
    ran_out = False
    for _ in range(400):
        clock.now += 0.33
        feed.next_event()
        ran_out = ran_out or all(feed.on_hand.get((scarce, store), 0) == 0 for store in STORES)
    assert ran_out


# ------------------------------------------------------------------------------------------------ the whole demo
def _pid_is_gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        pass
    else:
        return "State:\tZ" in status  # exited, waiting to be reaped by its new parent
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _availability_seen(bootstrap_servers: str, settings, deadline: float) -> dict[str, int]:
    """Records per channel topic (and `sku`: a SKU seen), read independently of the demo's own view; returns once
    any is seen."""
    codec = AvroCodec(settings)
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "test-demo-check",
                         "enable.auto.commit": False})
    try:
        topics = [availability_topic(channel).name for channel in settings.channels]
        metadata = consumer.list_topics(timeout=10)
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)
                         for topic in topics for partition in metadata.topics[topic].partitions])
        seen: Counter[str] = Counter()
        while time.monotonic() < deadline:
            for message in consumer.consume(num_messages=100, timeout=0.5):
                if message.error() is None:
                    value = codec.decode(message.topic(), message.value()).value
                    assert message.topic() == f"availability.{value['channel']}"
                    seen[message.topic()] += 1
                    sku = value["sku"]
            if seen:
                return {**seen, "sku": sku}
        return {}
    finally:
        consumer.close()


@pytest.mark.integration
def test_demo_shows_availability_and_its_worker_url_which_explain_finds_and_stops_cleanly_on_sigint(
        tmp_path: Path, settings_factory) -> None:
    # As `make run` in a fresh clone: the demo starts its own embedded broker, its state goes to ./.data; a second
    # terminal in the same directory runs `availability explain SKU` with nothing else.
    started = time.monotonic()
    demo = subprocess.Popen(  # exactly what `make run` runs; piped, it prints progress lines instead of the view
        [sys.executable, "-m", "app.tools.cli", "demo"],
        cwd=tmp_path, env=cli_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(demo.stdout.readline, "")), daemon=True)
    reader.start()
    processes_file = tmp_path / ".data" / "demo" / "processes.json"
    pids: dict = {}
    try:
        while not processes_file.exists():  # written whole, then renamed into place
            assert demo.poll() is None, "".join(output)
            assert time.monotonic() - started < 60, "demo did not start its worker within 60s:\n" + "".join(output)
            time.sleep(0.2)
        pids = json.loads(processes_file.read_text())
        assert pids["broker"] and pids["worker"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", pids["web_url"])
        assert any(f"worker HTTP API {pids['web_url']}" in line for line in output), "".join(output)

        seen = _availability_seen(pids["bootstrap_servers"], settings_factory(),
                                  started + FIRST_RECORD_DEADLINE_SECONDS)
        assert seen, f"no availability record within {FIRST_RECORD_DEADLINE_SECONDS}s:\n" + "".join(output)
        print(f"first availability records after {time.monotonic() - started:.1f}s: {seen}")

        # README: `.venv/bin/availability explain SNEAKER-WHITE-42` in a second terminal (the demo stocks it first).
        explained = _explain_until_answered("SNEAKER-WHITE-42", tmp_path, deadline=time.monotonic() + 30)
        assert explained.returncode == 0, explained.stderr
        assert "SNEAKER-WHITE-42" in explained.stdout and "Last ledger entries" in explained.stdout

        demo.send_signal(signal.SIGINT)
        demo.wait(timeout=STOP_DEADLINE_SECONDS)
        reader.join(timeout=5)
        assert demo.returncode == 0, "".join(output)
        assert "Traceback" not in "".join(output)
        for name in ("worker", "broker"):
            assert _pid_is_gone(pids[name]), f"{name} pid {pids[name]} still runs after the demo stopped"
        # Once the demo is gone its file no longer names a worker to ask.
        assert "the default" in run_cli("explain", seen["sku"], "--timeout", "2", cwd=tmp_path).stderr
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        for name in ("worker", "broker"):  # only processes this test's demo started
            pid = pids.get(name)
            if pid and not _pid_is_gone(pid):
                os.kill(pid, signal.SIGKILL)


def _explain_until_answered(sku: str, directory: Path, deadline: float) -> subprocess.CompletedProcess:
    """`availability explain SKU` from `directory`, again while the worker answers "not ready" (503, a rebalance)
    or does not know the SKU yet (404: its opening stock is on another ledger partition than the first record's)."""
    while True:
        result = run_cli("explain", sku, cwd=directory)
        waiting = "retry in a moment" in result.stderr or "(HTTP 404)" in result.stderr
        if result.returncode == 0 or not waiting or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def test_the_live_view_shows_the_worker_url_and_the_latest_exceptions(tmp_path: Path) -> None:
    from rich.console import Console

    from app.tools.live_view import AvailabilityBoard, demo_screen

    class Worker:
        pid, log_path, web_url = 4242, tmp_path / "worker.log", "http://127.0.0.1:40123"

        def state(self) -> str:
            return "ready"

    class Feed:
        producer, last_event, error = type("Producer", (), {"sent": 3})(), "RECEIPT", None

    board = AvailabilityBoard(["ecommerce"])
    board.apply_exception({"kind": "STALE_FEED", "sku": None, "location": "STORE-YORK", "event_time": 1_800_000_000_000,
                           "detail": "POS silent for 31 s (rule: 30 s): BUFFER_UNITS 1 applies until it speaks again"})
    status = type("Status", (), {"board": board, "started": time.monotonic(),
                                 "worker": Worker(), "feed": Feed(), "broker": None, "bootstrap_servers": "b:9092",
                                 "consumer": type("Consumer", (), {"error": None})(), "demo_dir": tmp_path})()
    console = Console(width=160, record=True)
    console.print(demo_screen(status, 160, 40))
    text = console.export_text()
    assert "worker HTTP API: http://127.0.0.1:40123" in text
    assert "availability explain SKU" in text
    assert "recent inventory exceptions" in text and "STALE_FEED" in text and "STORE-YORK" in text
