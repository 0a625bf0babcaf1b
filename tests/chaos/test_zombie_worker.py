"""A zombie worker: SIGSTOP one of two workers for longer than the session timeout (its partitions move to the
other), then SIGCONT it. Whatever it still had in flight must not break the guarantee: no stale or different
record, versions gapless, and the changelog it may still write must not corrupt the state a later restore reads."""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from app.engine import event_to_record
from app.service.app import BROKER_SESSION_TIMEOUT_SECONDS, faust_datadir
from app.service.freeze_guard import EXIT_PROCESS_WAS_FROZEN
from app.wire.topics import STOCK_MOVEMENTS, availability_topic, ledger_partition
from tests.chaos.checker import check_against_engine, consume_topic
from tests.chaos.conftest import second_worker
from tests.chaos.results import record_figures
from tests.chaos.test_worker_crashes import settled_assignment, start_flowing
from tests.chaos.workload import Workload, wait_for_outputs
from tests.engine.factories import receipt
from tests.service.harness import WORKER_READY

pytestmark = [pytest.mark.chaos]

STOPPED_SECONDS = 2.5 * BROKER_SESSION_TIMEOUT_SECONDS
ECOMMERCE = availability_topic("ecommerce").name


def probe_published(bootstrap_servers: str, sku: str, timeout: float) -> float | None:
    """Seconds until a record of `sku` is on the ecommerce topic, or None."""
    started, seen = time.monotonic(), []
    consume_topic(bootstrap_servers, ECOMMERCE, lambda m: seen.append(1) if m.key() == sku.encode() else None,
                  done=lambda: bool(seen), timeout=timeout, idle_seconds=0)
    return time.monotonic() - started if seen else None


@pytest.mark.timeout(900)
def test_a_zombie_worker_does_not_break_the_guarantee(chaos_settings, source_for, workers, broker):
    settings_a = chaos_settings(batch_size=100)
    settings_b = second_worker(settings_a, "zombie")
    source = source_for(settings_a)
    workload = Workload(seed=53, sku_count=400)
    worker_a, zombie = workers(settings_a), workers(settings_b)
    worker_a.wait_for_log(WORKER_READY, timeout=90)
    zombie.wait_for_log(WORKER_READY, timeout=90)
    start_flowing(workload, source, settings_a, broker.bootstrap_servers)
    workload.send_wave(source, 6_000)
    _, zombie_partitions = settled_assignment(settings_a, settings_b, settings_a.partitions)

    # Freeze the zombie while it is busy with a wave, so it holds unsent records and unwritten table values.
    seen = len(wait_for_outputs(broker.bootstrap_servers, ECOMMERCE, settings_a.partitions, 1))
    workload.send_wave(source, 8_000)
    wait_for_outputs(broker.bootstrap_servers, ECOMMERCE, settings_a.partitions, seen + 200)
    zombie.process.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    probe_sku = next(f"ZPROBE-{n}" for n in range(10_000)
                     if ledger_partition(f"ZPROBE-{n}", settings_a.partitions) in zombie_partitions)
    probe = receipt(500, "DC0", sku=probe_sku, event_id="zombie-probe", time=2_000_000_000)
    source.send(STOCK_MOVEMENTS.name, {"movements": [event_to_record(probe)[1]]}, key=probe_sku)
    source.flush()
    workload.record(probe)
    taken_over_in = probe_published(broker.bootstrap_servers, probe_sku, timeout=120)
    assert taken_over_in is not None, "the other worker never took the zombie's partitions over"
    taken_over_at = time.monotonic()
    remaining = STOPPED_SECONDS - (time.monotonic() - stopped_at)
    if remaining > 0:
        time.sleep(remaining)  # the fault: keep it frozen for the whole period
    zombie.process.send_signal(signal.SIGCONT)
    continued_at = time.monotonic()
    # On waking up it finds it was frozen past its session and ends itself before publishing or writing anything
    # more (app.service.freeze_guard); its supervisor restarts it on the same data dir.
    zombie_status = zombie.process.wait(timeout=30)
    zombie_exit_seconds = time.monotonic() - continued_at
    assert zombie_status == EXIT_PROCESS_WAS_FROZEN, zombie.log_text()[-3000:]
    assert "this worker was frozen for" in zombie.log_text()
    workload.send_wave(source, 4_000)
    zombie = workers(settings_b)
    settled_assignment(settings_a, settings_b, settings_a.partitions)
    rejoin_seconds = time.monotonic() - continued_at
    live = check_against_engine(broker.bootstrap_servers, settings_a, source.codec, workload.sent.values())

    # Whatever the zombie wrote to the changelogs after waking up must not have corrupted them: a fresh worker
    # restoring everything from the changelogs must go on exactly as the engine does.
    worker_a.stop()
    zombie.stop()
    shutil.rmtree(faust_datadir(settings_a))
    shutil.rmtree(faust_datadir(settings_b))
    fresh = workers(settings_a)
    fresh.wait_for_log(WORKER_READY, timeout=180)
    workload.send_wave(source, 4_000)
    after_restore = check_against_engine(broker.bootstrap_servers, settings_a, source.codec, workload.sent.values())

    record_figures("zombie_worker", {
        "stopped_seconds": STOPPED_SECONDS, "zombie_partitions": sorted(zombie_partitions),
        "stop_to_takeover_output_seconds": round(taken_over_at - stopped_at, 1),
        "continue_to_zombie_exit_seconds": round(zombie_exit_seconds, 2), "zombie_exit_status": zombie_status,
        "continue_to_settled_seconds": round(rejoin_seconds, 1),
        "events_sent": workload.sent_events, **live.figures(),
        "after_restore_from_changelog": after_restore.figures(),
    })
    live.assert_holds()
    after_restore.assert_holds()
