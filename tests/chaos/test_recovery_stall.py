"""Recovery watchdog end to end: a worker restoring a large changelog whose broker stops answering mid-restore
ends itself loudly after AVAILABILITY_RECOVERY_STALL_TIMEOUT_SECONDS, with the operator message, instead of
hanging in recovery forever."""

from __future__ import annotations

import re
import time

import pytest
from confluent_kafka import Producer

from app.kafka.admin import faust_internal_topics
from app.service.recovery_watchdog import EXIT_RECOVERY_STALLED, sample_interval
from tests.chaos.results import record_figures
from tests.service.harness import WORKER_READY

pytestmark = [pytest.mark.chaos]

STALL_BOUND_SECONDS = 5.0
FILLER_RECORDS = 150_000  # at the ~5,000 records/s measured, a restore of ~30 s: time to pause it


def fill_changelog(bootstrap_servers: str, topic: str, partitions: int, records: int) -> None:
    """Table values nobody will read (the worker never gets past the restore), spread over every partition."""
    producer = Producer({"bootstrap.servers": bootstrap_servers, "linger.ms": 20, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 1_000_000})
    for index in range(records):
        producer.produce(topic, key=f"filler-{index}".encode(), value=b"x" * 64, partition=index % partitions)
        if index % 100_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


@pytest.mark.timeout(600)
def test_a_restore_without_progress_ends_the_worker_with_an_operator_message(chaos_settings, source_for, workers,
                                                                             broker):
    settings = chaos_settings(recovery_stall_timeout_seconds=STALL_BOUND_SECONDS)
    source_for(settings)  # every topic, the changelogs included
    changelog = next(t.topic for t in faust_internal_topics(settings) if t.topic.endswith("sku-state-changelog"))
    fill_changelog(broker.bootstrap_servers, changelog, settings.partitions, FILLER_RECORDS)

    worker = workers(settings)
    worker.wait_for_log("Restoring state from changelog topics", timeout=120)
    assert WORKER_READY not in worker.log_text(), "the restore finished before the fault could be injected"
    broker.pause()  # the fault: the broker stops answering in the middle of the restore
    paused_at = time.monotonic()
    try:
        status = worker.process.wait(timeout=60)
        exited_after = time.monotonic() - paused_at
    finally:
        broker.resume()
    log = worker.log_text()
    messages = [line for line in log.splitlines() if "table recovery made no progress" in line]
    # The watchdog measures from the last progress, not from the pause: records fetched before it keep the restore
    # moving for a while (4-15 s here, more on a busy machine), so the bound is checked on what it reports.
    reported = [float(found.group(1)) for line in messages if (found := re.search(r"no progress for (\d+)s", line))]
    record_figures("recovery_stall_watchdog", {
        "stall_bound_seconds": STALL_BOUND_SECONDS, "changelog_records": FILLER_RECORDS,
        "pause_to_exit_seconds": round(exited_after, 1), "exit_status": status, "reported_stall_seconds": reported,
    })
    assert status == EXIT_RECOVERY_STALLED, log[-3000:]
    assert len(messages) == 1 and f"{changelog}[" in messages[0] and "to go" in messages[0], log[-3000:]
    assert STALL_BOUND_SECONDS <= reported[0] <= STALL_BOUND_SECONDS + 2 * sample_interval(STALL_BOUND_SECONDS) + 1
    assert exited_after >= STALL_BOUND_SECONDS
