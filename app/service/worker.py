"""Run one availability worker: `python -m app.service.worker` (the `availability worker` command calls this).

Settings come from the environment (app.settings). Without KAFKA_BOOTSTRAP_SERVERS the worker starts the embedded
broker for its own lifetime. It waits for the broker to answer (failing at once, in one line, if it refuses the
credentials), creates the topics from the registry (idempotent; with AVAILABILITY_CREATE_TOPICS=false it only checks
that they exist and names the missing ones), then the Faust worker runs
on uvloop until SIGTERM or SIGINT, which stop it cleanly: the current batch finishes, offsets are committed,
RocksDB is closed.

Several workers with the same app id share the partitions; each needs its own `data_dir` (RocksDB locks every
table directory) and its own `web_port`.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import faust

from app.kafka.admin import TopicAdminError, create_topics, require_topics
from app.kafka.broker import bootstrap_servers_for
from app.kafka.client_config import BrokerAccessError, check_broker_access
from app.settings import Settings

logger = logging.getLogger(__name__)

# Exit status of a worker that cannot start because of its configuration: refused credentials, missing topics,
# no broker within AVAILABILITY_BROKER_WAIT_SECONDS (EX_CONFIG).
EXIT_CONFIGURATION_ERROR = 78


def _freeze_bound() -> float:
    from app.service.app import BROKER_HEARTBEAT_INTERVAL_SECONDS, BROKER_SESSION_TIMEOUT_SECONDS

    # Frozen longer than this, the worker may already be evicted (its last heartbeat can precede the freeze by one
    # interval): see app.service.freeze_guard.
    return BROKER_SESSION_TIMEOUT_SECONDS - BROKER_HEARTBEAT_INTERVAL_SECONDS - 0.5


FREEZE_BOUND_SECONDS = _freeze_bound()


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; plain asyncio still works
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def prepare_broker(settings: Settings, bootstrap_servers: str) -> None:
    """Wait for the broker (it may start after the worker), failing fast if it refuses our credentials; then create
    the topics, or with AVAILABILITY_CREATE_TOPICS=false check that they all exist."""
    def say_waiting() -> None:
        print(f"waiting up to {settings.broker_wait_seconds:g}s for Kafka at {bootstrap_servers}", file=sys.stderr,
              flush=True)

    check_broker_access(settings, bootstrap_servers, timeout=settings.broker_wait_seconds, on_unreachable=say_waiting)
    if settings.create_topics:
        create_topics(settings, bootstrap_servers)
    else:
        require_topics(settings, bootstrap_servers)


def run_worker(settings: Settings) -> int:
    """Run a worker until it is told to stop; returns the exit status."""
    from app.http.web import register_web
    from app.service.app import build_service, faust_datadir
    from app.service.freeze_guard import start_process_freeze_guard
    from app.service.metrics import ServiceMetrics

    loop = _new_event_loop()
    asyncio.set_event_loop(loop)
    with bootstrap_servers_for(settings) as bootstrap_servers:
        try:
            prepare_broker(settings, bootstrap_servers)
        except (BrokerAccessError, TopicAdminError) as error:
            # One line, no traceback: the operator has something to fix, not a bug to report.
            print(f"availability worker: error: {error}", file=sys.stderr, flush=True)
            return EXIT_CONFIGURATION_ERROR
        faust_datadir(settings).mkdir(parents=True, exist_ok=True)
        service = build_service(settings, bootstrap_servers, observer=ServiceMetrics())
        start_process_freeze_guard(FREEZE_BOUND_SECONDS)
        register_web(service)
        worker = faust.Worker(service.app, loglevel=settings.log_level.lower(), loop=loop, quiet=True)
        logger.info("worker %s starting on %s (data dir %s)", settings.app_id, bootstrap_servers, settings.data_dir)
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            return int(exit_.code or 0)
    return 0


def main() -> int:
    return run_worker(Settings())


if __name__ == "__main__":
    sys.exit(main())
