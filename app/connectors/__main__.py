"""`python -m app.connectors --channel ecommerce --sink log|webhook [--url URL]`: run the reference connector.

`availability connect` takes the same options: both parsers get them from `add_connector_arguments`, and both run
`run_connector`. Settings (broker, registry, channels, app id, webhook headers) come from the environment like every
other command; the options below are the connector's own. Stops on Ctrl-C or SIGTERM, after committing what the
sink accepted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings

EXIT_USER_ERROR = 2


def add_connector_arguments(parser: argparse.ArgumentParser) -> None:
    """The connector's own options (not the broker address: each command line has its own way to give it)."""
    parser.add_argument("--channel", required=True, help="channel whose topic availability.<channel> is read")
    parser.add_argument("--sink", choices=("log", "webhook"), default="log",
                        help="log: one log line per change; webhook: POST each change as JSON to --url")
    parser.add_argument("--url", help="webhook endpoint (required with --sink webhook); keep credentials out of "
                        "it: headers come from AVAILABILITY_WEBHOOK_HEADERS")
    parser.add_argument("--webhook-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="seconds before a webhook request counts as failed (default 10)")
    parser.add_argument("--group-id", help="consumer group (default <app_id>.connector.<channel>)")
    parser.add_argument("--view-file", type=Path, metavar="PATH",
                        help="keep the local view in this JSON file; without it the view is rebuilt from the "
                             "topic on every start")
    parser.add_argument("--failure-threshold", type=int, default=5,
                        help="consecutive sink failures that open the circuit (default 5)")
    parser.add_argument("--cooldown", type=float, default=30.0, metavar="SECONDS",
                        help="seconds an open circuit waits before probing the sink again (default 30)")
    parser.add_argument("--from-snapshot", action="store_true",
                        help="a new consumer group starts from availability.<channel>.snapshot (written by "
                             "`availability snapshot`) instead of the channel topic's history; a group with "
                             "committed offsets resumes from them as always")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.connectors",
        description="Feed one channel's availability changes to a sink; resumes from committed offsets.",
    )
    add_connector_arguments(parser)
    parser.add_argument("--bootstrap-servers", help="host:port of Kafka (default: KAFKA_BOOTSTRAP_SERVERS)")
    return parser


def connector_from_arguments(args: argparse.Namespace, settings: Settings, bootstrap_servers: str | None = None):
    """The ChannelConnector the parsed options describe. Raises ConnectorError for bad options."""
    from app.connectors.connector import ChannelConnector, ConnectorError
    from app.connectors.sinks import LogSink, WebhookSink

    if args.sink == "webhook":
        if not args.url:
            raise ConnectorError("--sink webhook needs --url")
        headers = {name: value.get_secret_value() for name, value in settings.webhook_headers.items()}
        try:
            sink = WebhookSink(args.url, timeout_seconds=args.webhook_timeout, headers=headers)
        except ValueError as error:  # the message is already redacted
            raise ConnectorError(str(error)) from None
    else:
        sink = LogSink()
    return ChannelConnector(
        settings, args.channel, sink, bootstrap_servers=bootstrap_servers, group_id=args.group_id,
        view_path=args.view_file, failure_threshold=args.failure_threshold, cooldown_seconds=args.cooldown,
        bootstrap_from_snapshot=args.from_snapshot,
    )


def log_to_stderr(settings: Settings) -> None:
    # force: `availability connect` has set up a WARNING-level handler already, and the connector logs at INFO
    # (LogSink writes every change that way).
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)


def run_until_stopped(connector) -> int:
    """Run the connector until SIGINT or SIGTERM; it then commits what its sink accepted and leaves its group."""
    logging.getLogger(__name__).info("connector %s: sink %r", connector.channel, connector.sink)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    connector.run(stop)
    return 0


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from app.connectors.connector import ConnectorError
    from app.settings import Settings

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sink == "webhook" and not args.url:
        parser.error("--sink webhook needs --url")
    try:
        settings = Settings()
        log_to_stderr(settings)
        connector = connector_from_arguments(args, settings, args.bootstrap_servers)
    except (ConnectorError, ValidationError, ValueError) as error:
        print(f"connector: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    return run_until_stopped(connector)


if __name__ == "__main__":
    sys.exit(main())
