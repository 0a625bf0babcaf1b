"""`python -m app.connectors --channel ecommerce --sink log|webhook [--url URL]`: run the reference connector.

Settings (broker, registry, channels, app id, webhook headers) come from the environment like every other command;
the options below are the connector's own. Stops on Ctrl-C or SIGTERM, after committing what the sink accepted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m app.connectors",
        description="Feed one channel's availability changes to a sink; resumes from committed offsets.",
    )
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
    parser.add_argument("--bootstrap-servers", help="host:port of Kafka (default: KAFKA_BOOTSTRAP_SERVERS)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from app.connectors.connector import ChannelConnector, ConnectorError
    from app.connectors.sinks import LogSink, WebhookSink
    from app.settings import Settings

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sink == "webhook" and not args.url:
        parser.error("--sink webhook needs --url")
    try:
        settings = Settings()
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if args.sink == "webhook":
            headers = {name: value.get_secret_value() for name, value in settings.webhook_headers.items()}
            sink = WebhookSink(args.url, timeout_seconds=args.webhook_timeout, headers=headers)
        else:
            sink = LogSink()
        connector = ChannelConnector(
            settings, args.channel, sink, bootstrap_servers=args.bootstrap_servers, group_id=args.group_id,
            view_path=args.view_file, failure_threshold=args.failure_threshold, cooldown_seconds=args.cooldown,
            bootstrap_from_snapshot=args.from_snapshot,
        )
    except (ConnectorError, ValidationError, ValueError) as error:
        print(f"connector: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    connector.run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
