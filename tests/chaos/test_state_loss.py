"""Local state deleted: the worker rebuilds its tables from the changelog topics. Restore time and rate are measured
(and a restart with intact state for comparison); the output afterwards still equals the engine run on the ledger."""

from __future__ import annotations

import re
import shutil
import time
from datetime import datetime

import pytest

from app.kafka.admin import faust_internal_topics
from app.service.app import faust_datadir
from tests.chaos.checker import check_against_engine, consume_topic
from tests.chaos.results import record_figures
from tests.chaos.test_worker_crashes import start_flowing
from tests.chaos.workload import Workload
from tests.service.harness import WORKER_READY

pytestmark = [pytest.mark.chaos]

RESTORE_STARTED = "Restoring state from changelog topics"
RESTORE_DONE = re.compile(r"Done reading from changelog topics|Recovery complete")
LOG_TIME = re.compile(r"^\[(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3})\]")


def restore_seconds(log: str) -> float | None:
    """Seconds between Faust's "Restoring state" and its end, from the worker log's timestamps."""
    started = finished = None
    for line in log.splitlines():
        stamp = LOG_TIME.match(line)
        if stamp is None:
            continue
        when = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
        if started is None and RESTORE_STARTED in line:
            started = when
        elif started is not None and RESTORE_DONE.search(line):
            finished = when
            break
    return None if started is None or finished is None else (finished - started).total_seconds()


def changelog_records(bootstrap_servers: str, settings) -> int:
    count = 0

    def on_message(_message) -> None:
        nonlocal count
        count += 1

    for topic in faust_internal_topics(settings):
        if topic.topic.endswith("-changelog"):
            consume_topic(bootstrap_servers, topic.topic, on_message, idle_seconds=1.0, timeout=120)
    return count


@pytest.mark.timeout(900)
def test_deleted_local_state_is_rebuilt_from_the_changelog(chaos_settings, source_for, workers, broker):
    settings = chaos_settings()
    source = source_for(settings)
    workload = Workload(seed=41, sku_count=6_000, store_count=40, locations_per_sku=4)
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=90)
    start_flowing(workload, source, settings, broker.bootstrap_servers)
    workload.send_wave(source, 30_000)
    check_against_engine(broker.bootstrap_servers, settings, source.codec, workload.sent.values()).assert_holds()
    assert worker.stop() == 0

    started = time.monotonic()
    worker = workers(settings)  # intact local state: only the changelog tail (if any) is read
    worker.wait_for_log(WORKER_READY, timeout=120)
    ready_with_state = time.monotonic() - started
    assert worker.stop() == 0

    records = changelog_records(broker.bootstrap_servers, settings)
    shutil.rmtree(faust_datadir(settings))
    started = time.monotonic()
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=300)
    ready_without_state = time.monotonic() - started
    restored_in = restore_seconds(worker.log_text())
    assert restored_in is not None, "no restore in the worker log although the local state was deleted"

    workload.send_wave(source, 5_000)  # the rebuilt state must be the state: new events apply on top of it
    report = check_against_engine(broker.bootstrap_servers, settings, source.codec, workload.sent.values())
    record_figures("local_state_deleted", {
        "changelog_records": records, "restore_seconds": round(restored_in, 2),
        "restore_records_per_second": round(records / restored_in) if restored_in > 0 else None,
        "start_to_ready_seconds_state_deleted": round(ready_without_state, 1),
        "start_to_ready_seconds_state_intact": round(ready_with_state, 1),
        "events_sent": workload.sent_events, **report.figures(),
    })
    report.assert_holds()
