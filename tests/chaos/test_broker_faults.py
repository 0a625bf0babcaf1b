"""Broker faults: paused (SIGSTOP) longer than the session timeout then resumed, and absent when the worker starts.
In both the worker recovers on its own, without a restart, and the output equals the engine run on the ledger."""

from __future__ import annotations

import time

import pytest

from app.kafka.admin import create_topics
from app.kafka.broker import EmbeddedBroker, free_loopback_port
from app.service.app import BROKER_SESSION_TIMEOUT_SECONDS
from app.wire.serialization import AvroCodec
from app.wire.topics import availability_topic
from tests.chaos.checker import check_against_engine
from tests.chaos.results import record_figures
from tests.chaos.test_worker_crashes import start_flowing
from tests.chaos.workload import CHAOS_CHANNELS, Workload, wait_for_outputs
from tests.service.harness import WORKER_READY, SourceProducer, worker_settings

pytestmark = [pytest.mark.chaos]

PAUSE_SECONDS = 2 * BROKER_SESSION_TIMEOUT_SECONDS
ECOMMERCE = availability_topic("ecommerce").name


@pytest.mark.timeout(600)
def test_broker_paused_longer_than_the_session_timeout(chaos_settings, source_for, workers, broker):
    settings = chaos_settings()
    source = source_for(settings)
    workload = Workload(seed=31, sku_count=400)
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=90)
    start_flowing(workload, source, settings, broker.bootstrap_servers)
    workload.send_wave(source, 6_000)
    seen = len(wait_for_outputs(broker.bootstrap_servers, ECOMMERCE, settings.partitions, 500))

    broker.pause()
    try:
        time.sleep(PAUSE_SECONDS)  # the fault: a hung broker for two session timeouts
        assert worker.process.poll() is None, "the worker gave up while the broker was paused"
    finally:
        broker.resume()
    resumed = time.monotonic()
    workload.send_wave(source, 4_000)
    wait_for_outputs(broker.bootstrap_servers, ECOMMERCE, settings.partitions, seen + 1, timeout=180)
    resume_to_output = time.monotonic() - resumed

    report = check_against_engine(broker.bootstrap_servers, settings, source.codec, workload.sent.values())
    record_figures("broker_paused", {
        "pause_seconds": PAUSE_SECONDS, "session_timeout_seconds": BROKER_SESSION_TIMEOUT_SECONDS,
        "resume_to_next_output_seconds": round(resume_to_output, 1), "worker_restarts": 0,
        "events_sent": workload.sent_events, **report.figures(),
    })
    assert worker.process.poll() is None, "the worker exited"
    report.assert_holds()


@pytest.mark.timeout(600)
def test_broker_absent_when_the_worker_starts(settings_factory, workers, tmp_path):
    port = free_loopback_port()
    settings = worker_settings(settings_factory, kafka_bootstrap_servers=f"127.0.0.1:{port}", channels=CHAOS_CHANNELS)
    worker = workers(settings)
    worker.wait_for_log("waiting up to", timeout=60)
    absent_for = 5.0
    time.sleep(absent_for)  # the fault: nothing listens for a while
    assert worker.process.poll() is None, f"the worker gave up without a broker:\n{worker.log_text()[-2000:]}"
    late_broker = EmbeddedBroker(tmp_path / "late-broker.log", port=port)
    try:
        late_broker.start()
        broker_started = time.monotonic()
        worker.wait_for_log(WORKER_READY, timeout=120)
        start_to_ready = time.monotonic() - broker_started
        create_topics(settings, late_broker.bootstrap_servers)  # already made by the worker: a no-op
        source = SourceProducer(settings, AvroCodec(settings))
        workload = Workload(seed=37, sku_count=200)
        start_flowing(workload, source, settings, late_broker.bootstrap_servers)
        workload.send_wave(source, 3_000)
        report = check_against_engine(late_broker.bootstrap_servers, settings, source.codec, workload.sent.values())
        record_figures("broker_absent_at_start", {
            "broker_absent_seconds": absent_for, "broker_start_to_worker_ready_seconds": round(start_to_ready, 1),
            "worker_restarts": 0, "events_sent": workload.sent_events, **report.figures(),
        })
        report.assert_holds()
        assert "Traceback" not in worker.log_text()
    finally:
        worker.stop()
        late_broker.stop()
