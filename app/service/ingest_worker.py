"""Run the ingest stage on its own: `python -m app.service.ingest_worker` (the `availability ingest` command).

The `split` topology (docs/OPERATIONS.md, "A separate ingest stage"): this process runs an IngestProcess
(app.service.ingest_process: group `<app_id>-ingest`, consume, ingest, deliver, commit) in its main thread, and the
workers run with AVAILABILITY_STAGES=availability. In the `all` topology the worker runs the same IngestProcess on a
thread of its own (app.service.ingest_thread) instead.

SIGTERM or SIGINT finish the current batch, commit it, close the clients and exit 0; any failure exits 70 without
committing, so that the supervisor's restart ingests the batch again. The process needs a running broker
(KAFKA_BOOTSTRAP_SERVERS): it starts none of its own. Refused credentials, missing topics (with creation off) or no
broker within AVAILABILITY_BROKER_WAIT_SECONDS stop it at start with one line and exit 78, as the worker does.

Several ingest processes with the same app id share the source partitions; more processes than the source
topics' partitions leave the extra ones idle.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from prometheus_client import start_http_server

from app.errors import EXIT_CONFIGURATION_ERROR
from app.kafka.admin import TopicAdminError, prepare_broker
from app.kafka.client_config import BrokerAccessError
from app.service.ingest_process import IngestCounters, IngestProcess, run_or_end_process
from app.service.metrics import IngestMetrics
from app.settings import Settings

logger = logging.getLogger(__name__)

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"  # the shape of the Faust worker's lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="availability ingest",
        description="Run the ingest stage alone on confluent-kafka: source topics -> ledger and dead-letters. "
        "Settings come from the environment; workers then run with AVAILABILITY_STAGES=availability.")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics on AVAILABILITY_WEB_HOST:PORT (default: none)")
    return parser


def run_ingest(settings: Settings, metrics_port: int | None = None,
               install_signals: bool = True) -> int:
    """Run until SIGTERM or SIGINT; returns the exit status."""
    servers = settings.kafka_bootstrap_servers
    if servers is None:
        print("availability ingest: error: no Kafka broker configured; set KAFKA_BOOTSTRAP_SERVERS to the workers' "
              "broker (the ingest process starts no embedded broker of its own)", file=sys.stderr, flush=True)
        return EXIT_CONFIGURATION_ERROR
    try:
        prepare_broker(settings, servers)
    except (BrokerAccessError, TopicAdminError) as error:
        print(f"availability ingest: error: {error}", file=sys.stderr, flush=True)
        return EXIT_CONFIGURATION_ERROR

    metrics = None
    if metrics_port is not None:
        metrics = IngestMetrics()
        start_http_server(metrics_port, addr=settings.web_host, registry=metrics.registry)
        logger.info("ingest process: metrics on http://%s:%d/metrics", settings.web_host, metrics_port)

    stop_requested: list[int] = []
    if install_signals:
        def request_stop(signum: int, frame: Any) -> None:
            if not stop_requested:
                logger.info("ingest process: %s: finishing the current batch", signal.Signals(signum).name)
            stop_requested.append(signum)

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)

    process = IngestProcess(settings, servers, counters=IngestCounters(metrics))
    run_or_end_process(process, lambda: bool(stop_requested), "ingest process")
    process.close()
    logger.info("ingest process: stopped after %d source records (%d events, %d dead letters)",
                process.counters.records, process.counters.events, process.counters.dead_letters)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    logging.basicConfig(level=settings.log_level, format=LOG_FORMAT, stream=sys.stderr)
    return run_ingest(settings, args.metrics_port)


if __name__ == "__main__":
    sys.exit(main())
