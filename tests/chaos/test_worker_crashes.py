"""Worker crashes: kill -9 mid-stream several times with restarts; two workers, one killed, the survivor takes over
(with and without a standby replica: kill-to-first-output measured)."""

from __future__ import annotations

import time

import httpx
import pytest

from app.engine import event_to_record
from app.wire.topics import STOCK_MOVEMENTS, availability_topic, ledger_partition
from tests.chaos.checker import check_against_engine, consume_topic
from tests.chaos.conftest import second_worker
from tests.chaos.group_log import group_log_lines
from tests.chaos.results import record_figures
from tests.chaos.workload import Workload, wait_for_outputs
from tests.engine.factories import receipt
from tests.service.harness import WORKER_READY, wait_for_ledger_entries

pytestmark = [pytest.mark.chaos]

ECOMMERCE = availability_topic("ecommerce").name


def start_flowing(workload, source, settings, bootstrap_servers):
    workload.send_policy(source)
    wait_for_ledger_entries(bootstrap_servers, source.codec, settings.partitions, "PolicyChange")
    workload.send_seed_stock(source)


@pytest.mark.timeout(900)
def test_kill_9_mid_stream_several_times_then_restart(chaos_settings, source_for, workers, broker):
    kills = 3
    settings = chaos_settings(batch_size=200)
    source = source_for(settings)
    workload = Workload(seed=11, sku_count=400)
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=90)
    start_flowing(workload, source, settings, broker.bootstrap_servers)
    restart_seconds = []
    seen = 0
    for _ in range(kills):
        workload.send_wave(source, 8_000)
        # Mid-stream: the worker has published some of this wave's results, not all.
        seen = len(wait_for_outputs(broker.bootstrap_servers, ECOMMERCE, settings.partitions, seen + 300))
        worker.kill()
        started = time.monotonic()
        worker = workers(settings)  # same data dir: RocksDB as the crash left it
        worker.wait_for_log(WORKER_READY, timeout=120)
        restart_seconds.append(round(time.monotonic() - started, 1))
    workload.send_wave(source, 4_000)

    report = check_against_engine(broker.bootstrap_servers, settings, source.codec, workload.sent.values())
    record_figures("kill_9_repeated", {"kills": kills, "restart_to_ready_seconds": restart_seconds,
                                       "events_sent": workload.sent_events, **report.figures()})
    report.assert_holds()


def ready_partitions(settings) -> set[int]:
    answer = httpx.get(f"http://127.0.0.1:{settings.web_port}/ready", timeout=5).json()
    return set(answer.get("active_partitions") or [])


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(0.2)


def settled_assignment(first, second, partitions: int):
    """Both workers ready, with disjoint active partitions that together cover every partition. When they do not
    settle in time, the failure shows their last /ready answers and the group lines of their logs."""
    last_answers = {}

    def split():
        try:
            a, b = ready_partitions(first), ready_partitions(second)
        except (httpx.HTTPError, ValueError) as error:
            last_answers["error"] = repr(error)
            return None
        last_answers.update({"first": sorted(a), "second": sorted(b)})
        return (a, b) if a and b and not a & b and a | b == set(range(partitions)) else None

    try:
        wait_until(lambda: split() is not None, 120, "a settled assignment of the partitions over two workers")
    except AssertionError as error:
        raise AssertionError(f"{error}; last /ready answers {last_answers}\n" + "\n".join(
            f"{settings.data_dir.name}: {group_log_lines(settings)}" for settings in (first, second))) from None
    return split()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("standby_replicas", [0, 1])
def test_survivor_takes_over_a_killed_worker(chaos_settings, source_for, workers, broker, standby_replicas):
    first_settings = chaos_settings(standby_replicas=standby_replicas)
    second_settings = second_worker(first_settings, "second")
    source = source_for(first_settings)
    workload = Workload(seed=5, sku_count=400)
    first, second = workers(first_settings), workers(second_settings)
    first.wait_for_log(WORKER_READY, timeout=90)
    second.wait_for_log(WORKER_READY, timeout=90)
    start_flowing(workload, source, first_settings, broker.bootstrap_servers)
    workload.send_wave(source, 10_000)
    _, owned_by_second = settled_assignment(first_settings, second_settings, first_settings.partitions)
    # Let the wave be applied everywhere, so the standby (if any) holds the state before the kill.
    report = check_against_engine(broker.bootstrap_servers, first_settings, source.codec, workload.sent.values())
    report.assert_holds()

    # A probe SKU in a partition the second worker owns: its receipt after the kill can only be published once the
    # survivor has taken the partition over and restored (or promoted) its state.
    probe_sku = next(f"PROBE-{n}" for n in range(10_000)
                     if ledger_partition(f"PROBE-{n}", first_settings.partitions) in owned_by_second)
    second.kill()
    killed_at = time.monotonic()
    probe = receipt(500, "DC0", sku=probe_sku, event_id="probe-after-kill", time=2_000_000_000)
    source.send(STOCK_MOVEMENTS.name, {"movements": [event_to_record(probe)[1]]}, key=probe_sku)
    source.flush()
    workload.record(probe)
    first_output_at = []

    def on_message(message):
        if message.key() == probe_sku.encode() and not first_output_at:
            first_output_at.append(time.monotonic())

    consume_topic(broker.bootstrap_servers, ECOMMERCE, on_message, done=lambda: bool(first_output_at),
                  timeout=180, idle_seconds=0)
    assert first_output_at, "the probe was never published after the kill"
    kill_to_first_output = first_output_at[0] - killed_at
    workload.send_wave(source, 4_000)

    report = check_against_engine(broker.bootstrap_servers, first_settings, source.codec, workload.sent.values())
    record_figures(f"takeover_standby_{standby_replicas}", {
        "standby_replicas": standby_replicas, "partitions_taken_over": sorted(owned_by_second),
        "kill_to_first_output_seconds": round(kill_to_first_output, 1), "events_sent": workload.sent_events,
        **report.figures(),
    })
    report.assert_holds()
