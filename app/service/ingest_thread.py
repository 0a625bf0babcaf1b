"""The worker's ingest stage in the `all` topology: an IngestProcess (app.service.ingest_process) on a thread of its
own inside the worker process, started and stopped with the Faust worker.

The ingest stage is stateless (no tables), so it needs nothing of Faust: the same confluent-kafka consumer group
`<app_id>-ingest` as the separate ingest process of the `split` topology, with librdkafka doing the per-message
work that cost Faust's agents ~80-110 us per source record. The thread and the event loop share the GIL; the thread
holds it only while it turns a consumed batch into ledger records.

    stage = IngestStage(settings, bootstrap_servers, codec=service.codec, observer=service.observer)
    faust.Worker(app, stage, ...)   # a dependency of the worker: it starts before the app and stops after it

Crash-only, as the ingest process: any exception on the thread ends the whole worker (exit 70) with a CRITICAL
line, without committing; a worker never runs on without its ingest. Stopping (SIGTERM) sets the stop flag, which
the thread reads between two batches (at most `batch_timeout_seconds` apart); the thread is joined for at most
STOP_TIMEOUT_SECONDS and the clients closed. A thread still busy by then is left to the process's exit (it is a
daemon), its batch uncommitted: the next owner of its partitions ingests it again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping

from mode import Service

from app.service.ingest_process import IngestCounters, IngestProcess, run_or_end_process
from app.service.runtime import PipelineObserver
from app.settings import Settings
from app.wire.serialization import AvroCodec

logger = logging.getLogger(__name__)

# Longest a stopping worker waits for the ingest thread to finish its batch (delivery included) before it exits
# without it; below the grace periods supervisors give a SIGTERM (Kubernetes: 30 s).
STOP_TIMEOUT_SECONDS = 15.0


class IngestStage(Service):
    """The ingest thread as a mode Service: `on_start` creates the clients and starts the thread, `on_stop` stops
    it, joins it and closes the clients (both off the event loop)."""

    def __init__(self, settings: Settings, bootstrap_servers: str, *, codec: AvroCodec | None = None,
                 observer: PipelineObserver | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.codec = codec
        self.counters = IngestCounters(observer)
        self.process: IngestProcess | None = None
        self._stop_requested = threading.Event()
        self._thread: threading.Thread | None = None

    def source_lag(self) -> Mapping[tuple[str, int], int]:
        """Consumer lag per assigned source partition (IngestProcess.source_lag); empty before the start."""
        return {} if self.process is None else self.process.source_lag()

    async def on_start(self) -> None:
        self.process = IngestProcess(self.settings, self.bootstrap_servers, codec=self.codec, counters=self.counters)
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        thread, process = self._thread, self.process
        if thread is None or process is None:
            return
        self._stop_requested.set()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, thread.join, STOP_TIMEOUT_SECONDS)
        if thread.is_alive():
            logger.warning("ingest: the ingest thread did not finish its batch within %.0fs; the worker exits "
                           "without it (the batch is not committed and will be ingested again)", STOP_TIMEOUT_SECONDS)
            return
        await loop.run_in_executor(None, process.close)
        counters = self.counters
        logger.info("ingest: stopped after %d source records (%d events, %d dead letters)", counters.records,
                    counters.events, counters.dead_letters)

    def _run(self) -> None:
        run_or_end_process(self.process, self._stop_requested.is_set, "worker")
