"""The `availability` command: run the worker, create topics, run the demo, tail a channel, produce events.

Every subcommand has `--help`. A failure the user can fix (no broker, missing topic, bad input file, bad setting)
is printed as ONE line, `availability: error: <what>; <fix>`, with exit code 2; tracebacks are for bugs. Output
piped into a reader that stops early (`| head`) ends the command quietly with status 141, as SIGPIPE ends a filter.
Settings come from the environment (app.settings); `--bootstrap-servers` overrides KAFKA_BOOTSTRAP_SERVERS.
Each subcommand imports what it runs when it runs (Faust, the Avro codec, the demo), so `--help` and the small commands
start fast; no import here breaks a cycle.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import UserError

if TYPE_CHECKING:
    from app.settings import Settings

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a filter ended by SIGPIPE
NO_BROKER_FIX = (
    "set KAFKA_BOOTSTRAP_SERVERS=host:port or pass --bootstrap-servers (`availability demo` prints its broker's address)"
)


class CommandError(UserError):
    """A command cannot do its work; the message says what to do instead."""


# ------------------------------------------------------------------------------------------------------ commands
def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    import importlib.util

    from app.tools.demo import WORKER_MODULE

    if importlib.util.find_spec(WORKER_MODULE) is None:
        raise CommandError(f"the worker module {WORKER_MODULE} is missing; reinstall the project (make venv)")
    if settings.kafka_bootstrap_servers is not None:
        os.environ["AVAILABILITY_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", WORKER_MODULE])
    return 0  # not reached


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    module = "app.service.ingest_worker"
    if settings.kafka_bootstrap_servers is not None:
        os.environ["AVAILABILITY_KAFKA_BOOTSTRAP_SERVERS"] = settings.kafka_bootstrap_servers
    options = [] if args.metrics_port is None else ["--metrics-port", str(args.metrics_port)]
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", module, *options])
    return 0  # not reached


def cmd_topics_create(args: argparse.Namespace, settings: Settings) -> int:
    from app.kafka.admin import create_topics, faust_internal_topics
    from app.wire.topics import all_topics

    bootstrap_servers = require_broker(settings, args.timeout)
    created = set(create_topics(settings, bootstrap_servers, timeout=args.timeout))
    for topic in all_topics(settings):
        state = "created" if topic.name in created else "exists"
        print(f"{state:8} {topic.name} ({topic.partitions(settings)} partitions, {topic.cleanup_policy.value})")
    for topic in faust_internal_topics(settings):  # the workers' changelogs and leader topic
        state = "created" if topic.topic in created else "exists"
        print(f"{state:8} {topic.topic} ({topic.num_partitions} partitions, worker-internal)")
    considered = len(all_topics(settings)) + len(faust_internal_topics(settings))
    print(f"{len(created)} created, {considered - len(created)} already existed on {bootstrap_servers}")
    return 0


def cmd_topics_list(args: argparse.Namespace, settings: Settings) -> int:
    from app.wire.topics import all_topics

    for topic in all_topics(settings):
        print(f"{topic.name:32} {topic.cleanup_policy.value:8} {topic.value_record or 'raw bytes':20} {topic.key}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from app.tools.demo import DemoOptions, run_demo

    options = DemoOptions(view=args.view and sys.stdout.isatty(), duration=args.duration, rate=args.rate,
                          seed=args.seed, grace_seconds=args.grace)
    return run_demo(settings, options)


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from app.tools.live_view import AvailabilityBoard, BoardConsumer, network_table

    if args.channel not in settings.channels:
        raise CommandError(
            f"unknown channel {args.channel!r} (configured: {', '.join(settings.channels)}); "
            "name one of those, or add it with AVAILABILITY_CHANNELS"
        )
    bootstrap_servers = require_broker(settings, args.timeout)
    board = AvailabilityBoard([args.channel])
    console = Console()
    stream_lines = not (args.once or args.limit or console.is_terminal)

    def print_line(key: str, value: dict) -> None:
        print(f"{key}\t{value['quantity']}\t{value['status']}\tv{value['version']}", flush=True)

    consumer = BoardConsumer(settings, bootstrap_servers, board, channels=[args.channel],
                             on_availability=print_line if stream_lines else None)
    consumer.connect(timeout=args.timeout, read_through_start=args.once)
    title = f"availability.{args.channel} on {bootstrap_servers}"
    try:
        if args.once or args.limit:
            from app.replay.commands import reading_progress

            with reading_progress(Console(stderr=True), f"reading availability.{args.channel}",
                                  enabled=args.once and console.is_terminal) as update:
                while not (args.limit and board.records_received >= args.limit):
                    if args.once and consumer.caught_up:  # every record there at the start has been read
                        break
                    consumer.poll_once(0.2, max_messages=(args.limit - board.records_received) if args.limit else 500)
                    if update is not None:
                        update(board.records_received, board.records_received + consumer.records_to_go)
            console.print(title, style="bold")
            console.print(network_table(board, args.channel) if board.rows(args.channel) else "no records yet")
            console.print(f"{board.records_received} records read", style="dim")
        elif stream_lines:
            while True:
                consumer.poll_once(0.5)
        else:
            from rich.console import Group
            from rich.live import Live
            from rich.text import Text

            heading = Text(f"{title}   Ctrl-C to stop", style="bold")
            with Live(console=console, auto_refresh=False) as live:
                while True:
                    consumer.poll_once(0.25)
                    live.update(Group(heading, network_table(board, args.channel)), refresh=True)
    finally:
        consumer.close()
    return 0


def cmd_connect(args: argparse.Namespace, settings: Settings) -> int:
    from app.connectors.__main__ import connector_from_arguments, log_to_stderr, run_until_stopped

    bootstrap_servers = require_broker(settings, args.timeout)
    connector = connector_from_arguments(args, settings, bootstrap_servers)
    log_to_stderr(settings)
    return run_until_stopped(connector)


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from app.tools.feed import SourceProducer

    bootstrap_servers = require_broker(settings, args.timeout)
    require_source_topics(settings, bootstrap_servers, args.timeout)
    quiet = logging.getLogger("app.tools.cli.librdkafka")
    quiet.setLevel(logging.CRITICAL)
    producer = SourceProducer(settings, bootstrap_servers, logger=quiet)
    if args.file is not None:
        return _produce_file(Path(args.file), producer)
    return _produce_demo_feed(args, settings, bootstrap_servers, producer)


def _produce_file(path: Path, producer) -> int:
    """Check every line first, and send only a file without a bad line: a partial send could not be repeated after
    the fix without sending the good lines twice (their generated event ids would differ, so nothing dedups them)."""
    from app.tools.feed import FeedError, records_from_jsonl

    bad_lines: list[FeedError] = []
    good = 0
    for record in records_from_jsonl(path, bad_lines=bad_lines):
        try:
            producer.encode(record)
            good += 1
        except FeedError as error:
            bad_lines.append(error)
    if bad_lines:
        for error in bad_lines:  # one line each, in file order
            print(f"availability: error: {error}", file=sys.stderr)
        raise CommandError(f"{len(bad_lines)} of {good + len(bad_lines)} records in {path} are not valid; nothing "
                           "was sent: fix the lines above and run again")
    per_topic: Counter[str] = Counter()
    for record in records_from_jsonl(path):
        producer.send(record)
        per_topic[record.topic.name] += 1
    producer.flush()
    summary = ", ".join(f"{count} to {topic}" for topic, count in sorted(per_topic.items())) or "nothing"
    print(f"sent {sum(per_topic.values())} records from {path}: {summary}")
    return 0


def _produce_demo_feed(args: argparse.Namespace, settings: Settings, bootstrap_servers: str, producer) -> int:
    from app.tools.demo import FeedThread, policy_waiter
    from app.tools.demo_feed import DemoFeed

    waiter = policy_waiter(settings, bootstrap_servers, timeout=args.policy_wait) if args.policy_wait else None
    if waiter is not None:
        print(f"sending the policy; waiting up to {args.policy_wait:g}s for a worker to put it on the ledger",
              flush=True)
    feed = FeedThread(producer, DemoFeed(seed=args.seed), args.rate, limit=args.count, wait_for_policy=waiter)
    feed.start()
    deadline = None if args.duration is None else time.monotonic() + args.duration
    reported = 0
    try:
        while feed.is_alive() and (deadline is None or time.monotonic() < deadline):
            feed.join(0.5)
            if producer.sent - reported >= 10 or not feed.is_alive():
                reported = producer.sent
                print(f"sent {producer.sent} events; last: {feed.last_event}", flush=True)
    finally:
        feed.stop()
    if feed.error:
        raise CommandError(f"demo feed stopped: {feed.error}")
    print(f"sent {producer.sent} demo events ({producer.delivered} acknowledged)")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from app.replay.commands import run_replay_command

    return run_replay_command(args, settings, require_broker(settings, args.timeout))


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from app.replay.commands import run_verify_command

    return run_verify_command(args, settings, require_broker(settings, args.timeout))


def cmd_benchmark(args: argparse.Namespace, settings: Settings) -> int:
    if getattr(args, "bootstrap_servers", None):  # given before the subcommand: `availability -b X benchmark`
        raise CommandError("the benchmark starts its own embedded brokers and uses no other; "
                           "drop -b/--bootstrap-servers")
    # The benchmarks live in the source tree (benchmarks/), next to app/; an installed wheel has no copy of them.
    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "peak.py").is_file():
        raise CommandError("the benchmarks are part of the source tree; run this from a checkout of the project")
    argv = (["--profile", args.profile, "--target-rate", str(args.target_rate), "--topology", args.topology]
            + (["--ingest-per-worker", str(args.ingest_per_worker)] if args.topology == "split" else [])
            + (["--results-dir", os.path.abspath(args.results_dir)] if args.results_dir else []))
    return run_benchmark_module(root, argv)


def run_benchmark_module(root: Path, argv: list[str]) -> int:
    """`python -m benchmarks.peak ARGV` from the checkout at `root`, with this interpreter; its exit status."""
    return subprocess.call([sys.executable, "-m", "benchmarks.peak", *argv], cwd=root)


def cmd_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    from app.replay.commands import run_snapshot_command

    return run_snapshot_command(args, settings, require_broker(settings, args.timeout))


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from app.operations.commands import run_reconcile_command

    return run_reconcile_command(args, settings, require_broker)


def cmd_preview(args: argparse.Namespace, settings: Settings) -> int:
    from app.operations.commands import run_preview_command

    return run_preview_command(args, settings, require_broker)


def cmd_explain(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from app.tools.explain_view import ExplainError, fetch_explanation, render_explanation

    url, origin = worker_url(args.url, settings)
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    try:
        document = fetch_explanation(url, args.sku, channel=args.channel, location=args.location, token=token,
                                     timeout=args.timeout)
    except ExplainError as error:
        raise CommandError(f"{error} (worker address from {origin})") from None
    console = Console()
    if not console.is_terminal:  # piped: no terminal width to respect, and wrapped table cells are hard to grep
        console = Console(width=200)
    console.print(render_explanation(document))
    return 0


# ------------------------------------------------------------------------------------------------------- helpers
def worker_url(given: str | None, settings: Settings) -> tuple[str, str]:
    """(a worker's HTTP address, where it came from): --url; else AVAILABILITY_WEB_HOST/_PORT when set; else the
    worker of the `availability demo` running with this data directory; else the default 127.0.0.1:6066."""
    from app.tools.demo import running_demo_web_url

    if given:
        return given, "--url"
    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "::", "") else settings.web_host
    configured = f"http://{host}:{settings.web_port}"
    if {"web_host", "web_port"} & settings.model_fields_set:
        return configured, "AVAILABILITY_WEB_HOST/AVAILABILITY_WEB_PORT"
    demo = running_demo_web_url(settings.data_dir)
    if demo is not None:
        return demo[0], f"the running demo's {demo[1]}"
    return configured, "the default: no AVAILABILITY_WEB_PORT set, no demo running here"


def require_broker(settings: Settings, timeout: float) -> str:
    """The configured broker's address, once it has answered a metadata request within `timeout` seconds. Refused
    credentials fail at the first refusal, in one line (app.kafka.client_config.check_broker_access)."""
    from app.kafka.client_config import BrokerAccessError, check_broker_access

    if settings.kafka_bootstrap_servers is None:
        raise CommandError(f"no Kafka broker configured; {NO_BROKER_FIX}")
    servers = settings.kafka_bootstrap_servers
    try:
        check_broker_access(settings, servers, timeout=timeout)
    except BrokerAccessError as error:
        raise CommandError(str(error)) from None
    return servers


def require_source_topics(settings: Settings, bootstrap_servers: str, timeout: float) -> None:
    from confluent_kafka.admin import AdminClient

    from app.kafka.client_config import client_config
    from app.wire.topics import SOURCE_TOPICS

    metadata = AdminClient(client_config(settings, bootstrap_servers, logger=_quiet_logger())).list_topics(
        timeout=timeout)
    missing = [topic.name for topic in SOURCE_TOPICS if topic.name not in metadata.topics]
    if missing:
        raise CommandError(f"topics {', '.join(missing)} do not exist on {bootstrap_servers}; "
                           "run `availability topics create` first")


def _quiet_logger():
    import logging

    logger = logging.getLogger("app.tools.cli.librdkafka")
    logger.setLevel(logging.CRITICAL)  # unreachable brokers are reported once, by the command
    logger.propagate = False
    return logger


def load_settings(args: argparse.Namespace) -> Settings:
    from pydantic import ValidationError

    from app.settings import Settings

    overrides = {}
    if getattr(args, "bootstrap_servers", None):
        overrides["kafka_bootstrap_servers"] = args.bootstrap_servers
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = "; ".join(f"{_variable_name(problem['loc'])}: {problem['msg']}" for problem in error.errors())
        raise SettingsError(f"invalid setting ({problems}); fix the environment variable") from None


class SettingsError(UserError):
    """The environment holds a setting the service cannot use; the message names it and why."""


def one_line(error: BaseException) -> str:
    """An error as one line: the first line of its message (multi-line messages end with a log excerpt)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if type(error).__name__ == "KafkaException":
        return f"Kafka: {text}; check that the broker at KAFKA_BOOTSTRAP_SERVERS runs"
    return text.rstrip(":")


def _variable_name(location: tuple) -> str:
    field = str(location[0]) if location else "settings"
    if field == "kafka_bootstrap_servers":
        return "KAFKA_BOOTSTRAP_SERVERS"
    return f"AVAILABILITY_{field.upper()}"


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "the user can fix this": the service's UserError (app.errors), and the Kafka client's
    errors (a broker that refuses or does not answer). Everything else is a bug and keeps its traceback."""
    from confluent_kafka import KafkaException

    return (UserError, KafkaException)


# -------------------------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="availability",
        description="Omnichannel inventory availability on Kafka: run the worker, watch channels, feed events.",
        epilog="Settings come from AVAILABILITY_* environment variables and KAFKA_BOOTSTRAP_SERVERS "
        "(see docs/). Start with `availability demo`.",
    )
    parser.add_argument("-b", "--bootstrap-servers", metavar="HOST:PORT",
                        help="Kafka to use (overrides KAFKA_BOOTSTRAP_SERVERS)")
    # the same option after the subcommand; SUPPRESS keeps a value given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-b", "--bootstrap-servers", metavar="HOST:PORT", default=argparse.SUPPRESS,
                        help="Kafka to use (overrides KAFKA_BOOTSTRAP_SERVERS)")
    commands = _Subcommands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), common)

    worker = commands.add_parser("worker", help="run the streaming worker (Faust) for the current settings",
                                 description="Replace this process with the Faust worker (python -m "
                                 "app.service.worker), configured from the environment.")
    worker.set_defaults(handler=cmd_worker)

    ingest = commands.add_parser(
        "ingest", help="run the ingest stage alone on confluent-kafka (workers: AVAILABILITY_STAGES=availability)",
        description="Replace this process with the ingest process (python -m app.service.ingest_worker): consumer "
        "group <app_id>-ingest on the source topics, writing the ledger and dead-letters. Needs a running broker. "
        "Run workers with AVAILABILITY_STAGES=availability beside it (docs/OPERATIONS.md).")
    ingest.add_argument("--metrics-port", type=_port, metavar="PORT",
                        help="serve Prometheus metrics on AVAILABILITY_WEB_HOST:PORT (default: none)")
    ingest.set_defaults(handler=cmd_ingest)

    topics = commands.add_parser("topics", help="create or list the service's topics",
                                 description="Topics of the registry in app/wire/topics.py.")
    topic_commands = _Subcommands(topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True),
                                  common)
    create = topic_commands.add_parser("create", help="create every topic that does not exist yet",
                                       description="Create the topics on the configured broker (idempotent) and "
                                       "print which were created.")
    create.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the broker (default 30)")
    create.set_defaults(handler=cmd_topics_create)
    listing = topic_commands.add_parser("list", help="print the topic registry (no broker needed)",
                                        description="Print every topic: name, cleanup policy, value record, key.")
    listing.set_defaults(handler=cmd_topics_list)

    demo = commands.add_parser(
        "demo", help="broker + topics + worker + demo feed + live view (what `make run` runs)",
        description="Start the embedded broker (unless KAFKA_BOOTSTRAP_SERVERS is set), create the topics, start a "
        "worker and a realistic demo feed, and show availability per channel as it is published. Ctrl-C stops "
        "everything. Logs and pids go to <data_dir>/demo/.")
    demo.add_argument("--no-view", dest="view", action="store_false",
                      help="print progress lines instead of the live view (for scripts and tests)")
    demo.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this many seconds")
    demo.add_argument("--rate", type=_positive_float, default=3.0, help="demo events per second (default 3)")
    demo.add_argument("--seed", type=int, help="seed of the demo feed's choices")
    demo.add_argument("--grace", type=_positive_float, default=10.0, metavar="SECONDS",
                      help="time the worker gets to stop before it is killed (default 10)")
    demo.set_defaults(handler=cmd_demo)

    tail = commands.add_parser(
        "tail", help="show a channel's availability as a table that updates in place",
        description="Read availability.<CHANNEL> from the beginning and show the latest quantity, status and "
        "version per key. Piped output prints one line per record instead.")
    tail.add_argument("channel", metavar="CHANNEL", help="channel name, e.g. ecommerce")
    tail.add_argument("--once", action="store_true",
                      help="read every record there is when it starts (not what arrives meanwhile), print the "
                      "table and exit")
    tail.add_argument("--limit", type=_positive_int, metavar="N", help="stop after N records and print the table")
    tail.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                      help="seconds to wait for the broker (default 10)")
    tail.set_defaults(handler=cmd_tail)

    produce = commands.add_parser(
        "produce", help="send events: a JSON Lines file, or the demo feed",
        description="Encode events as Avro (Confluent wire format) and send them to their source topic. JSON "
        "Lines: one object per line, {\"type\": \"StockMovement\"|\"StockMovementBatch\"|\"ReservationCommand\"|"
        "\"PolicyChange\", ...fields}; a StockMovement gives its movement type as \"movement_type\" (or use "
        "{\"type\": \"SALE\", ...}). event_id, event_time and source get defaults. Every line is checked before "
        "anything is sent: each bad line is reported on one line (FILE:LINE: what is wrong, e.g. a missing field), "
        "and a file with any bad line sends nothing and exits with status 2.")
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", metavar="FILE", help="JSON Lines file of events")
    source.add_argument("--demo", action="store_true", help="the demo feed (policy, opening stock, then live events)")
    produce.add_argument("--rate", type=_positive_float, default=3.0, help="--demo: events per second (default 3)")
    produce.add_argument("--count", type=_positive_int, metavar="N", help="--demo: stop after N events")
    produce.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="--demo: stop after SECONDS")
    produce.add_argument("--seed", type=int, help="--demo: seed of the feed's choices")
    produce.add_argument("--policy-wait", type=float, default=60.0, metavar="SECONDS",
                         help="--demo: wait this long for a worker to put the policy on the ledger before sending "
                         "stock events (default 60; 0: do not wait)")
    produce.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                         help="seconds to wait for the broker (default 10)")
    produce.set_defaults(handler=cmd_produce)

    from app.connectors.__main__ import add_connector_arguments  # the one definition of the connector's options

    connect = commands.add_parser(
        "connect", help="run the reference channel connector (options: availability connect --help)",
        description="Consume a channel's availability topic in a consumer group and hand each change to a sink "
        "(docs/CONNECTORS.md), the same as python -m app.connectors. Runs until Ctrl-C or SIGTERM, then commits "
        "what the sink accepted. Webhook headers (e.g. Authorization) come from AVAILABILITY_WEBHOOK_HEADERS.",
        epilog="Example: availability connect --channel ecommerce --sink log")
    add_connector_arguments(connect)
    connect.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                         help="seconds to wait for the broker at start (default 10)")
    connect.set_defaults(handler=cmd_connect)

    replay = commands.add_parser(
        "replay", help="reprocess the ledger on fresh state into replay topics (availability.<channel>.replay-NAME)",
        description="Read the ledger with a consumer of its own (no group: it runs beside the live service), apply "
        "it with the engine on fresh in-memory state and write the outputs to the live topic names with the suffix "
        "`.replay-NAME` (created like the originals). Shows progress and ends with a summary. From the earliest "
        "offset (the default) the records equal, per key and byte for byte, what the live service published. "
        "--from-time and --from-offsets also start from FRESH state (no stock, no reservations, no policy, "
        "version 1): their output equals the live one only if the ledger before the start holds nothing.",
        epilog="Examples: availability replay --name audit1; availability verify live audit1")
    replay.add_argument("--name", dest="namespace", default="replay", metavar="NAME",
                        help="namespace of the output topics: suffix replay-NAME (default: replay)")
    start = replay.add_mutually_exclusive_group()
    start.add_argument("--from-time", metavar="TIME",
                       help="start each ledger partition at its first record at or after TIME (ms since the epoch, "
                       "or ISO-8601)")
    start.add_argument("--from-offsets", metavar="P:O,...",
                       help="replay only these ledger partitions, from these offsets (e.g. 0:120,3:0)")
    replay.add_argument("--to-live", action="store_true",
                        help="write the LIVE output topics instead (asks to type `live`, or needs --yes)")
    replay.add_argument("--yes", action="store_true", help="with --to-live: confirm without asking")
    replay.add_argument("--without-clock-ticks", dest="clock_ticks", action="store_false",
                        help="skip the ledger's clock ticks (stamped with the wall clock when they were appended): "
                        "partition clocks then follow event times alone, so a historical stream does not expire "
                        "reservations that were live at the time; the output then differs from the live one")
    replay.add_argument("--idle", type=_positive_float, default=2.0, metavar="SECONDS",
                        help="quiet time at the end of the ledger that counts as the end (default 2)")
    replay.add_argument("--processes", type=_positive_int, default=1, metavar="N",
                        help="replay with N processes, the ledger partitions shared among them: up to N times as "
                        "fast where N cores are free; each key's records are the same, in the same order "
                        "(default 1)")
    replay.add_argument("--quiet", action="store_true", help="no progress bar, only the summary")
    replay.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                        help="seconds to wait for the broker (default 10)")
    replay.set_defaults(handler=cmd_replay)

    verify = commands.add_parser(
        "verify", help="compare two namespaces of output topics key by key (live, or a replay NAME)",
        description="Read every output topic of namespaces A and B and compare them per key: the sequence of "
        "records, deduplicated by version (reservation decisions: by ledger position), must be byte-identical, "
        "and any repeated version must be a byte-identical copy. Prints the first differences (topic, key, "
        "version, fields) and exits 1 if there is any, 0 if none. Ingest-stage dead letters are not compared.",
        epilog="Examples: availability verify live audit1; availability verify audit1 audit2 --topic "
        "availability.ecommerce")
    verify.add_argument("a", metavar="A", help="namespace: `live` or a replay NAME")
    verify.add_argument("b", metavar="B", help="namespace: `live` or a replay NAME")
    verify.add_argument("--topic", action="append", metavar="TOPIC",
                        help="live name of a topic to compare (repeatable; default: every output topic)")
    verify.add_argument("--limit", type=_positive_int, default=20, metavar="N",
                        help="differences to print (default 20)")
    verify.add_argument("--idle", type=_positive_float, default=2.0, metavar="SECONDS",
                        help="quiet time that counts as the end of a topic (default 2)")
    verify.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                        help="seconds to wait for the broker (default 10)")
    verify.set_defaults(handler=cmd_verify)

    snapshot = commands.add_parser(
        "snapshot", help="publish every key's current availability of a channel to availability.<CHANNEL>.snapshot",
        description="Read every record availability.<CHANNEL> holds when it starts (progress on a terminal; a "
        "topic the service keeps writing does not hold it up), keep the highest version of every key and publish it "
        "again with snapshot=true and the same version to the compacted topic availability.<CHANNEL>.snapshot; "
        "each record's `channel-offset` header says where a connector continues on the channel topic "
        "(docs/CONTRACT.md, Bootstrapping a connector).")
    snapshot.add_argument("channel", metavar="CHANNEL", help="channel name, e.g. ecommerce")
    snapshot.add_argument("--from", dest="namespace", default="live", metavar="NAMESPACE",
                          help="read the channel topic of this namespace (default: live)")
    snapshot.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                          help="seconds to wait for the broker (default 10)")
    snapshot.set_defaults(handler=cmd_snapshot)

    benchmark = commands.add_parser(
        "benchmark", common_options=False,  # no -b: it starts brokers of its own
        help="run the peak-season benchmark (embedded brokers, real workers, baselines)",
        description="python -m benchmarks.peak: throughput, latency, lag, memory, disk and restart figures of the "
        "service on a seeded peak-season workload, each against baselines measured in the same run; results in "
        "benchmarks/results/<profile>.json/.md/.png (docs/PERFORMANCE.md). Always starts its own embedded brokers.")
    benchmark.add_argument("--profile", choices=("smoke", "quick", "peak"), default="quick",
                           help="quick: under 2 minutes; peak: the real run, about 16 minutes (default quick)")
    benchmark.add_argument("--target-rate", type=_positive_float, default=50_000.0, metavar="EVENTS_PER_SECOND",
                           help="peak rate the capacity line sizes workers for (default 50000)")
    benchmark.add_argument("--results-dir", metavar="DIR", help="where to write the results (default "
                           "benchmarks/results)")
    benchmark.add_argument("--topology", choices=("all", "split"), default="all",
                           help="all: workers run both stages; split: workers run the availability stage "
                           "(AVAILABILITY_STAGES=availability) beside `availability ingest` processes")
    benchmark.add_argument("--ingest-per-worker", type=int, default=1, metavar="K",
                           help="with --topology split: ingest processes per worker (default 1)")
    benchmark.set_defaults(handler=cmd_benchmark)

    explain = commands.add_parser(
        "explain", help="show how each channel's number for a SKU was reached (asks a worker's HTTP API)",
        description="GET /availability/SKU/explain from a worker and print it as tables: stock per location (with "
        "the safety-stock rule that applied), each channel's rule and its steps from pool to advertised quantity "
        "next to the last published record, active reservations, and the SKU's last ledger entries. The token, if "
        "the worker needs one, comes from AVAILABILITY_API_TOKEN.")
    explain.add_argument("sku", metavar="SKU", help="SKU id")
    explain.add_argument("--channel", metavar="CHANNEL", help="only this channel")
    explain.add_argument("--location", metavar="LOCATION", help="only this location")
    explain.add_argument("--url", metavar="URL",
                         help="a worker's HTTP address (default: http://AVAILABILITY_WEB_HOST:AVAILABILITY_WEB_PORT "
                         "when either is set, else the worker of an `availability demo` running from this "
                         "directory, else http://127.0.0.1:6066)")
    explain.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                         help="seconds to wait for the answer (default 10)")
    explain.set_defaults(handler=cmd_explain)

    reconcile = commands.add_parser(
        "reconcile", help="compare a system of record's on-hand export with the service's positions as of a time",
        description="Rebuild every position as of --as-of from the ledger (each entry stamped at or before it, in "
        "ledger order, on fresh in-memory state; channel values under the latest policy on the ledger), compare "
        "the export's rows with them and report the drift (export minus service) per SKU, location and bucket, "
        "largest first, with what each channel's availability would move by if corrected. Every drift is "
        "published to inventory-exceptions as RECONCILIATION_DRIFT. Positions the export does not list are not "
        "compared, so a partial export is safe. With --apply the SELLABLE drifts are corrected by cycle counts "
        "at --as-of written to source.stock-movements (source `reconcile`, ids reconcile-<run id>-<line>); "
        "DAMAGED and QUARANTINE drifts are reported only. Exit status: 0 all agree, 1 drifts found, plus 4 when "
        "some rows could not be compared, 2 when the run could not be done.",
        epilog="Export: CSV with a header row, or JSON Lines; columns sku, location, on_hand, optional bucket "
        "(SELLABLE, DAMAGED, QUARANTINE; default SELLABLE). Example: availability reconcile --snapshot "
        "docs/examples/onhand.csv --as-of 2026-01-05T06:00:00+00:00 --json drift.json")
    reconcile.add_argument("--snapshot", required=True, metavar="FILE",
                           help="the system of record's on-hand export (CSV or JSON Lines)")
    reconcile.add_argument("--as-of", required=True, metavar="TIME",
                           help="event time the export was taken at (ms since the epoch, or ISO-8601; naive: UTC)")
    reconcile.add_argument("--apply", action="store_true",
                           help="write the SELLABLE corrections as cycle counts to source.stock-movements")
    reconcile.add_argument("--json", metavar="FILE", help="write the whole report as JSON")
    reconcile.add_argument("--csv", metavar="FILE", help="write every drift as a CSV row")
    reconcile.add_argument("--limit", type=_positive_int, default=20, metavar="N",
                           help="drifts and bad rows printed on the terminal (default 20)")
    reconcile.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                           help="seconds to wait for the broker (default 10)")
    reconcile.set_defaults(handler=cmd_reconcile)

    preview = commands.add_parser(
        "preview", help="show what a candidate policy would change on every channel, publishing nothing",
        description="Check a candidate policy (JSON: the PolicyChange record of avro/PolicyChange.avsc, field by "
        "field, then the policy rules), then run it through the engine over every SKU's current state, read from "
        "the table changelogs (up to the write-back interval behind the workers), exactly as the service would "
        "apply it as the next version. Reports per channel the keys whose availability would change, units "
        "gained and lost, keys that would go out of stock, and the largest changes. Publishes nothing and "
        "changes no state. A worker answers the same from its own states: POST /policy/preview "
        "(docs/HTTP_API.md).",
        epilog="Example: availability preview --policy docs/examples/candidate-policy.json --limit 5 --json "
        "preview.json")
    preview.add_argument("--policy", required=True, metavar="FILE", help="the candidate policy, a JSON object")
    preview.add_argument("--json", metavar="FILE", help="write the preview as JSON")
    preview.add_argument("--limit", type=_positive_int, default=10, metavar="N",
                         help="largest changes shown per channel (default 10)")
    preview.add_argument("--timeout", type=_positive_float, default=10.0, metavar="SECONDS",
                         help="seconds to wait for the broker (default 10)")
    preview.set_defaults(handler=cmd_preview)
    return parser


class _Subcommands:
    """add_subparsers() whose subcommands all accept the common options."""

    def __init__(self, action, common: argparse.ArgumentParser) -> None:
        self._action = action
        self._common = common

    def add_parser(self, name: str, common_options: bool = True, **kwargs) -> argparse.ArgumentParser:
        return self._action.add_parser(name, parents=[self._common] if common_options else [], **kwargs)


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (1-65535), got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "demo":  # the demo logs to a file: its terminal belongs to the live view
        import logging

        logging.basicConfig(level=logging.WARNING, format="availability: %(message)s")
    errors = user_errors()
    try:
        settings = load_settings(args)
        return args.handler(args, settings)
    except KeyboardInterrupt:  # how `tail` and `produce --demo` are meant to end
        return 0 if getattr(args, "command", None) in ("tail", "produce") else EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`availability tail ecommerce | head -5`): end quietly, as a Unix filter does. Python
        # ignores SIGPIPE, so the write failed instead of ending the process; stdout goes to /dev/null so that the
        # interpreter's last flush does not fail again and print a second complaint.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except errors as error:
        print(f"availability: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
