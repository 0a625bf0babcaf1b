"""Run one availability worker: `python -m app.service.worker` (the `availability worker` command calls this).

Settings come from the environment (app.settings). Without KAFKA_BOOTSTRAP_SERVERS the worker starts the embedded
broker for its own lifetime. It waits for the broker to answer (failing at once, in one line, if it refuses the
credentials), creates the topics from the registry (idempotent; with AVAILABILITY_CREATE_TOPICS=false it only checks
that they exist and names the missing ones), then the Faust worker runs on uvloop until SIGTERM or SIGINT, which stop
it cleanly: the current batch finishes, offsets are committed, RocksDB is closed. With AVAILABILITY_STAGES=all (the
default) the worker also runs the ingest stage, on a thread of its own (app.service.ingest_thread), which starts
before the Faust app and stops after it.

Several workers with the same app id share the partitions; each needs its own `data_dir` (RocksDB locks every
table directory) and its own `web_port`.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import faust

from app.errors import EXIT_CONFIGURATION_ERROR
from app.http.web import register_web
from app.kafka.admin import TopicAdminError, prepare_broker
from app.kafka.broker import bootstrap_servers_for
from app.kafka.client_config import BrokerAccessError
from app.service import gc_pauses
from app.service.app import (
    BROKER_HEARTBEAT_INTERVAL_SECONDS,
    BROKER_SESSION_TIMEOUT_SECONDS,
    build_service,
    faust_datadir,
)
from app.service.freeze_guard import start_process_freeze_guard
from app.service.ingest_thread import IngestStage
from app.service.metrics import ServiceMetrics
from app.settings import Settings

logger = logging.getLogger(__name__)

def _freeze_bound() -> float:
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


def run_worker(settings: Settings) -> int:
    """Run a worker until it is told to stop; returns the exit status."""
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
        gc_pauses.install()  # full collections of a worker's many objects stopped the loop for 240-390 ms
        register_web(service)
        stages = []
        if settings.stages == "all":  # "availability": separate ingest processes feed the ledger (ingest_worker)
            ingest = IngestStage(settings, bootstrap_servers, codec=service.codec, observer=service.observer, loop=loop)
            service.source_lag = ingest.source_lag
            stages.append(ingest)
        worker = faust.Worker(service.app, *stages, loglevel=settings.log_level.lower(), loop=loop, quiet=True)
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
