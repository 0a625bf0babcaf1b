"""`availability demo` (what `make run` runs): broker, topics, one worker, the demo feed and a live view, together.

Start-up: the embedded broker (unless KAFKA_BOOTSTRAP_SERVERS names one), the topics, one worker subprocess with its
own data directory, the demo feed (app.tools.demo_feed) on a thread, and a view of what the worker publishes. Everything
the demo starts is stopped in a `finally`, in reverse order: feed, view consumer, worker (SIGTERM, then SIGKILL
after a grace period), broker. SIGINT, SIGTERM and SIGHUP all lead there; a second Ctrl-C while stopping is ignored
so the clean-up is not cut short. Files under `<data_dir>/demo/`: broker.log, worker.log, demo.log, processes.json
(the pids, for tools and tests that check nothing is left behind, the broker's address and the worker's HTTP
address, which `availability explain` reads: `running_demo_web_url`) and worker/ (the worker's tables).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import UserError
from app.kafka.broker import EmbeddedBroker, end_child, free_loopback_port
from app.tools.demo_feed import DemoFeed
from app.tools.feed import FeedError, SourceProducer

if TYPE_CHECKING:
    from app.settings import Settings

WORKER_MODULE = "app.service.worker"
WORKER_READY_PATTERN = re.compile(r"\bReady\b|OK \^")  # what Faust's worker prints once it has started
WORKER_CRASH_PATTERN = re.compile(r"Crashed reason=")  # an agent died: the process lives on, doing nothing
DEFAULT_RATE = 3.0
DEFAULT_GRACE_SECONDS = 10.0
_PROJECT_ROOT = Path(__file__).resolve().parents[2]

logger = logging.getLogger(__name__)


class DemoError(UserError):
    """The demo could not start or its worker stopped. The message names the log to read."""


@dataclass(frozen=True)
class DemoOptions:
    view: bool = True
    duration: float | None = None  # seconds; None runs until interrupted
    rate: float = DEFAULT_RATE  # demo events per second
    seed: int | None = None
    grace_seconds: float = DEFAULT_GRACE_SECONDS


class WorkerProcess:
    """One `python -m app.service.worker` child, configured through its environment, output in `log_path`."""

    def __init__(self, settings: Settings, bootstrap_servers: str, data_dir: Path, log_path: Path) -> None:
        self.log_path = log_path
        self._bootstrap_servers = bootstrap_servers
        self._data_dir = data_dir
        self._settings = settings
        # a port of its own, so a demo never collides with another worker's web server on the default port
        self.web_port = free_loopback_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._crashed = False
        self._log_offset = 0
        self.started_at: float | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def web_url(self) -> str:
        """Where this machine reaches the worker's HTTP API (lookups, explain, metrics)."""
        host = self._settings.web_host
        if host in ("0.0.0.0", "::", ""):  # listens everywhere: loopback reaches it
            host = "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.web_port}"

    def start(self) -> None:
        if importlib.util.find_spec(WORKER_MODULE) is None:
            raise DemoError(f"the worker module {WORKER_MODULE} is missing; reinstall the project (make venv)")
        environment = dict(os.environ)
        environment.update({
            "AVAILABILITY_KAFKA_BOOTSTRAP_SERVERS": self._bootstrap_servers,
            "AVAILABILITY_DATA_DIR": str(self._data_dir),
            "AVAILABILITY_WEB_PORT": str(self.web_port),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_PROJECT_ROOT), environment.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
        })
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", WORKER_MODULE],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment,
                # Its own session: Ctrl-C reaches the demo only, which stops the worker before the broker.
                start_new_session=True,
            )
        self.started_at = time.monotonic()

    def state(self) -> str:
        """`starting`, `ready`, or `exited (code N)`."""
        if self._process is None:
            return "not started"
        code = self._process.poll()
        if code is not None:
            return f"exited (code {code})"
        self._scan_log()
        if self._crashed:
            return "running, but an agent crashed (see its log)"
        return "ready" if self._ready else "starting"

    @property
    def has_exited(self) -> bool:
        return self._process is not None and self._process.poll() is not None

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM, then SIGKILL after `grace_seconds`; waits for the process either way. Idempotent."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        end_child(process, signal.SIGTERM, grace_seconds, "worker")

    def _scan_log(self) -> None:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                data = log.read()
        except FileNotFoundError:
            return
        # keep a little overlap so a marker split across two reads is still found
        self._log_offset += max(0, len(data) - 32)
        text = data.decode("utf-8", errors="replace")
        self._ready = self._ready or WORKER_READY_PATTERN.search(text) is not None
        self._crashed = self._crashed or WORKER_CRASH_PATTERN.search(text) is not None


class FeedThread(threading.Thread):
    """Sends the demo feed at about `rate` events per second until stopped."""

    def __init__(self, producer: SourceProducer, feed: DemoFeed, rate: float, limit: int | None = None,
                 wait_for_policy: Callable[[str, threading.Event], bool] | None = None) -> None:
        super().__init__(name="demo-feed", daemon=True)
        self.producer = producer
        self.feed = feed
        self.rate = rate
        self.limit = limit
        # Source topics are read by separate agents, so a stock event could reach the ledger before the policy and
        # be rejected (NO_POLICY). The feed therefore sends the policy, waits until it is on the ledger, then goes on.
        self.wait_for_policy = wait_for_policy
        self.last_event = "-"
        self.error: str | None = None
        self._stop_requested = threading.Event()
        self._jitter = random.Random()

    def run(self) -> None:
        try:
            (policy, policy_description), *opening = self.feed.opening()
            self.producer.send(policy)
            self.producer.flush()
            self.last_event = policy_description
            if self.wait_for_policy is not None:
                self.last_event = f"{policy_description}; waiting until the worker has put it on the ledger"
                if not self.wait_for_policy(policy.value["event_id"], self._stop_requested):
                    logger.warning("policy not seen on the ledger; sending the feed anyway")
                self.last_event = policy_description
            for record, description in opening:
                self.producer.send(record)
                self.last_event = description
            self.producer.flush()
            while not self._stop_requested.is_set() and (self.limit is None or self.producer.sent < self.limit):
                if self._stop_requested.wait(self._jitter.uniform(0.4, 1.6) / self.rate):
                    break
                record, description = self.feed.next_event()
                self.producer.send(record)
                self.last_event = description
            self.producer.flush()
        except FeedError as error:
            self.error = str(error)
            logger.error("demo feed stopped: %s", error)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_requested.set()
        if self.is_alive():
            self.join(timeout)


def policy_waiter(settings: Settings, bootstrap_servers: str, timeout: float | None = None):
    """A `wait_for_policy` for FeedThread: reads the ledger until the policy with the given event id is in every
    partition (ingest writes it to each), the stop event is set, or `timeout` passes. True when seen."""
    def wait(event_id: str, stop: threading.Event) -> bool:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from app.kafka.client_config import client_config
        from app.wire.serialization import AvroCodec
        from app.wire.topics import LEDGER

        codec = AvroCodec(settings)
        consumer = Consumer(client_config(settings, bootstrap_servers, **{
            "group.id": "availability-demo-feed", "enable.auto.commit": False, "logger": logger}))
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            partitions = consumer.list_topics(LEDGER.name, timeout=10).topics[LEDGER.name].partitions
            consumer.assign([TopicPartition(LEDGER.name, p, OFFSET_BEGINNING) for p in partitions])
            seen: set[int] = set()
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                for message in consumer.consume(num_messages=500, timeout=0.5):
                    if message.error() is not None:
                        continue
                    entry = codec.decode(LEDGER, message.value()).value["entry"]
                    body = entry[1] if isinstance(entry, tuple) else entry
                    if body.get("event_id") == event_id:
                        seen.add(message.partition())
                if len(seen) == len(partitions):
                    return True
            return False
        finally:
            consumer.close()

    return wait


@contextmanager
def _stop_signals_raise_keyboard_interrupt() -> Iterator[threading.Event]:
    """SIGTERM and SIGHUP act like Ctrl-C; once the yielded event is set (clean-up started) all three are ignored."""
    stopping = threading.Event()

    def interrupt(signum, frame) -> None:
        if not stopping.is_set():
            raise KeyboardInterrupt

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, interrupt) for signum in handled}
    try:
        yield stopping
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_demo(settings: Settings, options: DemoOptions) -> int:
    """Run the demo until interrupted (or for `options.duration`); returns the exit code."""
    from app.kafka.admin import create_topics

    demo_dir = Path(settings.data_dir) / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    _log_to_file(demo_dir / "demo.log", settings.log_level)
    say = _say
    started = time.monotonic()
    broker: EmbeddedBroker | None = None
    worker: WorkerProcess | None = None
    feed_thread: FeedThread | None = None
    view_consumer = None
    with _stop_signals_raise_keyboard_interrupt() as stopping:
        try:
            if settings.kafka_bootstrap_servers is None:
                say("starting the embedded broker ...")
                broker = EmbeddedBroker(demo_dir / "broker.log")
                bootstrap_servers = broker.start()
                # the broker keeps topics in memory: worker tables from an earlier run would not match them
                shutil.rmtree(demo_dir / "worker", ignore_errors=True)
                say(f"broker {bootstrap_servers} (embedded, pid {broker.pid}, log {broker.log_path})")
            else:
                bootstrap_servers = settings.kafka_bootstrap_servers
                say(f"broker {bootstrap_servers} (from KAFKA_BOOTSTRAP_SERVERS)")
            created = create_topics(settings, bootstrap_servers)
            say(f"topics ready ({len(created)} created)")
            worker = WorkerProcess(settings, bootstrap_servers, demo_dir / "worker", demo_dir / "worker.log")
            worker.start()
            say(f"worker pid {worker.pid} starting (log {worker.log_path})")
            say(f"worker HTTP API {worker.web_url}: `availability explain SKU` finds it, or curl "
                f"{worker.web_url}/availability/SKU")
            _write_processes(demo_dir / "processes.json", bootstrap_servers, broker, worker)

            feed = DemoFeed(seed=options.seed)
            producer = SourceProducer(settings, bootstrap_servers, logger=logging.getLogger("app.tools.demo.producer"))
            feed_thread = FeedThread(producer, feed, options.rate,
                                     wait_for_policy=policy_waiter(settings, bootstrap_servers))
            feed_thread.start()

            from app.tools.live_view import AvailabilityBoard, BoardConsumer

            board = AvailabilityBoard(settings.channels)
            view_consumer = BoardConsumer(
                settings, bootstrap_servers, board, channels=settings.channels, include_decisions=True,
                include_exceptions=True,
                on_decision=lambda d: feed.note_decision(d.reservation_id, d.outcome, list(d.lines)),
                logger=logging.getLogger("app.tools.demo.view"),
            )
            view_consumer.connect(timeout=30)
            view_consumer.start()
            status = DemoStatus(bootstrap_servers, broker, worker, feed_thread, board, view_consumer, demo_dir,
                                started)
            deadline = None if options.duration is None else started + options.duration
            if options.view:
                from app.tools.live_view import show_demo_live

                show_demo_live(status, deadline)
            else:
                _report_headless(status, deadline, say)
            return 0
        except KeyboardInterrupt:
            return 0
        finally:
            stopping.set()
            say(f"stopping (the worker gets up to {options.grace_seconds:g}s to shut down) ...")
            if feed_thread is not None:
                feed_thread.stop()
            if view_consumer is not None:
                view_consumer.stop()
            if worker is not None:
                worker.stop(options.grace_seconds)
            if broker is not None:
                broker.stop()
            if view_consumer is not None:
                say(_summary(board, started))
            say(f"stopped; logs in {demo_dir}")


@dataclass
class DemoStatus:
    """What the view needs to describe the running demo."""

    bootstrap_servers: str
    broker: EmbeddedBroker | None
    worker: WorkerProcess
    feed: FeedThread
    board: object  # AvailabilityBoard
    consumer: object  # BoardConsumer
    demo_dir: Path
    started: float


def _report_headless(status: DemoStatus, deadline: float | None, say) -> None:
    """Plain progress lines for --no-view: the worker's readiness, the first record, then a summary every 10 s."""
    announced_first = announced_ready = False
    next_summary = time.monotonic() + 10
    while deadline is None or time.monotonic() < deadline:
        time.sleep(0.2)
        board = status.board
        if not announced_ready and status.worker.state() == "ready":
            say(f"worker ready; HTTP API {status.worker.web_url}")
            announced_ready = True
        if not announced_first and board.first_record_at is not None:
            say(f"first availability record after {board.first_record_at - status.started:.1f}s")
            announced_first = True
        if status.worker.has_exited:
            raise DemoError(f"the worker {status.worker.state()}; see {status.worker.log_path}")
        if time.monotonic() >= next_summary:
            next_summary += 10
            say(f"worker {status.worker.state()}, sent {status.feed.producer.sent} events, received "
                f"{board.records_received} availability records and {board.decisions_received} decisions")


def _summary(board, started: float) -> str:
    first = "no availability record yet"
    if board.first_record_at is not None:
        first = f"first availability record {board.first_record_at - started:.1f}s after start"
    return f"received {board.records_received} availability records and {board.decisions_received} decisions; {first}"


def _write_processes(path: Path, bootstrap_servers: str, broker: EmbeddedBroker | None,
                     worker: WorkerProcess) -> None:
    document = {"demo": os.getpid(), "broker": broker.pid if broker else None, "worker": worker.pid,
                "bootstrap_servers": bootstrap_servers, "web_url": worker.web_url}
    # written whole and renamed into place: a reader never sees half a file
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(document) + "\n", encoding="utf-8")
    partial.replace(path)


def running_demo_web_url(data_dir: Path) -> tuple[str, Path] | None:
    """(the worker's HTTP address, the file it was read from) of a demo running with this data directory, or None
    when none runs (no file, or its demo process has ended)."""
    path = Path(data_dir) / "demo" / "processes.json"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        demo_pid, web_url = int(document["demo"]), str(document["web_url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(demo_pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, under another user
    return web_url, path


def _say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def _log_to_file(path: Path, level: str) -> None:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
