"""Workers joining and leaving seconds apart while events flow: rebalances settle, no RocksDB LOCK error, and the
output still equals the engine run on the ledger. Members that are not the group's leader leave in the middle of
rebalances; the leader leaves once the group has settled (the embedded broker's wedge: tests/chaos/group_log.py)."""

from __future__ import annotations

import re
import time

import pytest

from tests.chaos.checker import check_against_engine
from tests.chaos.conftest import second_worker
from tests.chaos.group_log import wait_for_settling
from tests.chaos.results import record_figures
from tests.chaos.test_worker_crashes import settled_assignment, start_flowing
from tests.chaos.workload import Workload
from tests.service.harness import WORKER_READY

pytestmark = [pytest.mark.chaos]

CHANGE_GAP_SECONDS = 3.0  # the fault itself: membership changes this far apart, faster than a rebalance settles
LOCK_ERROR = re.compile(r"LOCK|lock hold by current process|Resource temporarily unavailable", re.IGNORECASE)


def settle(first, first_settings, second, second_settings):
    """The two workers' settled assignment (settled_assignment); a clear failure for the embedded broker's wedge."""
    wedged = wait_for_settling([first, second])
    assert wedged is None, (f"the embedded broker wedged the group: generation {wedged} has no live leader "
                            "(tests/chaos/group_log.py, docs/RELIABILITY.md)")
    return settled_assignment(first_settings, second_settings, first_settings.partitions)


@pytest.mark.timeout(900)
def test_workers_join_and_leave_seconds_apart(chaos_settings, source_for, workers, broker):
    settings_a = chaos_settings()
    settings_b, settings_c = second_worker(settings_a, "b"), second_worker(settings_a, "c")
    source = source_for(settings_a)
    workload = Workload(seed=23, sku_count=400)
    worker_a = workers(settings_a)
    worker_a.wait_for_log(WORKER_READY, timeout=90)
    start_flowing(workload, source, settings_a, broker.bootstrap_servers)

    changes = []  # (what, seconds since the first change)
    started = time.monotonic()

    def change(what: str) -> None:
        changes.append((what, round(time.monotonic() - started, 1)))

    workload.send_wave(source, 4_000)
    worker_b = workers(settings_b)
    change("b joins")
    time.sleep(CHANGE_GAP_SECONDS)
    workload.send_wave(source, 4_000)
    worker_c = workers(settings_c)
    change("c joins")
    time.sleep(CHANGE_GAP_SECONDS)
    worker_b.stop()
    change("b leaves (SIGTERM)")
    workload.send_wave(source, 4_000)
    time.sleep(1.0)
    worker_b = workers(settings_b)  # back at once, on the same data dir: its RocksDB must have been closed
    change("b rejoins on the same data dir")
    time.sleep(CHANGE_GAP_SECONDS)
    worker_c.stop()  # in the middle of b's rejoin
    change("c leaves (SIGTERM)")
    workload.send_wave(source, 4_000)
    first_settle = settle(worker_a, settings_a, worker_b, settings_b)

    # The group's leader (a, its first member) leaves once the group has settled: the embedded broker wedges a
    # group whose leader leaves in the middle of a rebalance, for good (tests/chaos/group_log.py).
    worker_a.stop()
    change("a, the group's leader, leaves (SIGTERM)")
    workload.send_wave(source, 4_000)
    time.sleep(CHANGE_GAP_SECONDS)
    worker_c = workers(settings_c)
    change("c rejoins on the same data dir")
    workload.send_wave(source, 2_000)
    last_change = time.monotonic()
    settled = settle(worker_b, settings_b, worker_c, settings_c)
    settle_seconds = time.monotonic() - last_change
    report = check_against_engine(broker.bootstrap_servers, settings_a, source.codec, workload.sent.values())

    logs = {name: worker.log_text(since_start=False) for name, worker in
            (("a", worker_a), ("b", worker_b), ("c", worker_c))}
    lock_errors = [line for text in logs.values() for line in text.splitlines() if LOCK_ERROR.search(line)]
    tracebacks = sum(text.count("Traceback") for text in logs.values())
    record_figures("membership_churn", {
        "membership_changes": changes, "seconds_to_settle_after_last_change": round(settle_seconds, 1),
        "first_assignment": {"a": sorted(first_settle[0]), "b": sorted(first_settle[1])},
        "final_assignment": {"b": sorted(settled[0]), "c": sorted(settled[1])},
        "rocksdb_lock_errors": len(lock_errors), "tracebacks_in_logs": tracebacks,
        "events_sent": workload.sent_events, **report.figures(),
    })
    assert not lock_errors, lock_errors[:5]
    assert worker_b.process.poll() is None and worker_c.process.poll() is None
    report.assert_holds()
