"""A replay's seen ids and finished reservations on disk (app.replay.kept_on_disk): the engine over them publishes
what it publishes over a store that forgets nothing, with windows so short that generations come and go many times
in one stream; generations are dropped once every partition has passed them, and nothing is left after close."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import EngineLimits, MemoryStore, PartitionEngine
from app.engine.partition import FORGET_STEP_MS
from app.engine.positions import ledger_position
from app.replay.kept_on_disk import ABANDONED_AFTER_SECONDS, DIRECTORY_PREFIX, OWNER_LOCK, KeptOnDisk
from app.service.memory import disk_usage_bytes
from tests.engine.factories import CHANNELS
from tests.tables.test_kept_records import START, stream

# the stream's clock moves 0 to 400 ms per entry: a window of a few hundred ms is crossed every few entries, and
# generations of a few seconds come and go within one stream (the engine gives horizons every minute of its clock)
SHORT = EngineLimits(duplicate_window_ms=300, reservation_retention_ms=900)
GENERATION_MS = 5_000


class Forgetful(MemoryStore):
    """A memory store that never forgets: the reference the engine's answers must not depend on."""

    def forget_before(self, seen_before: int, finished_before: int) -> None:
        pass


def run(entries, store, limits=SHORT, partition: int = 0) -> list:
    engine = PartitionEngine(partition, store, CHANNELS, limits=limits)
    return [engine.apply(event, ledger_position(n), where) for n, (event, where) in enumerate(entries)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), length=st.integers(20, 400),
       windows=st.sampled_from([SHORT, EngineLimits(duplicate_window_ms=40, reservation_retention_ms=40),
                                EngineLimits()]))
def test_the_engine_over_disk_publishes_what_it_publishes_over_a_store_that_forgets_nothing(seed, length, windows,
                                                                                           tmp_path_factory):
    entries = stream(seed, length)
    expected = run(entries, Forgetful(), windows)
    kept = KeptOnDisk(windows, parent=str(tmp_path_factory.mktemp("kept")), min_width_ms=GENERATION_MS)
    try:
        assert run(entries, kept.store(0), windows) == expected
    finally:
        kept.close()


def test_generations_past_every_partitions_horizon_are_dropped_and_close_deletes_the_rest(tmp_path):
    entries = stream(7, 3_000)
    span = entries[-1][0].event_time - START
    assert span > 40 * GENERATION_MS  # well past both windows and the generations, many times over
    kept = KeptOnDisk(SHORT, parent=str(tmp_path), min_width_ms=GENERATION_MS)
    slow = kept.store(1)  # a second partition of the same process that has applied nothing yet
    run(entries, kept.store(0))
    assert kept.seen.dropped == 0 and kept.finished.dropped == 0  # partition 1 has given no horizon yet
    slow.forget_before(START + span - SHORT.duplicate_window_ms, START + span - SHORT.reservation_retention_ms)
    assert kept.seen.dropped > 10 and kept.finished.dropped > 3
    on_disk = {path.name for path in (kept.directory / "seen").iterdir()}
    # what partition 0 wrote after its last horizon (it gives one per FORGET_STEP_MS of its clock)
    assert 1 <= len(on_disk) <= FORGET_STEP_MS // GENERATION_MS + 2, on_disk
    kept.close()
    assert not kept.directory.exists()


def test_a_record_below_every_horizon_is_not_written(tmp_path):
    kept = KeptOnDisk(SHORT, parent=str(tmp_path), min_width_ms=GENERATION_MS)
    store = kept.store(0)
    store.forget_before(START + 10_000, START + 10_000)
    store.put_seen_event("SKU1", "late-1", START, 5)  # its generation ended long before the horizon
    assert store.get_seen_event("SKU1", "late-1") is None
    assert not (kept.directory / "seen").exists()  # no generation was opened for it
    store.put_seen_event("SKU1", "now-1", START + 10_000, 6)
    assert store.get_seen_event("SKU1", "now-1") == (START + 10_000, 6)
    assert store.get_seen_event("SKU2", "now-1") is None  # keys are per SKU
    assert kept.store(1).get_seen_event("SKU1", "now-1") is None  # and per partition
    kept.close()


OWNER = """
import os, signal, sys
from app.engine import EngineLimits
from app.service.memory import disk_usage_bytes
from app.replay.kept_on_disk import ABANDONED_AFTER_SECONDS, DIRECTORY_PREFIX, OWNER_LOCK, KeptOnDisk
kept = KeptOnDisk(EngineLimits(), parent=sys.argv[1])
print(kept.directory, flush=True)
if sys.argv[2] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
sys.stdin.read()  # runs until the test closes its input
kept.close()
"""


def test_what_a_killed_process_left_is_deleted_by_the_next_one_and_a_running_process_s_directory_is_kept(
        tmp_path, caplog):
    root = Path(__file__).resolve().parents[2]
    killed = subprocess.run([sys.executable, "-c", OWNER, str(tmp_path), "killed"], cwd=root, capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    abandoned = Path(killed.stdout.strip())
    assert (abandoned / OWNER_LOCK).exists()
    running = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path), "running"], cwd=root, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        live = Path(running.stdout.readline().strip())
        a_while_ago = time.time() - 2 * ABANDONED_AFTER_SECONDS
        for directory in (abandoned, live):  # both older than a directory still being made
            os.utime(directory / OWNER_LOCK, (a_while_ago, a_while_ago))
        being_made = tmp_path / f"{DIRECTORY_PREFIX}being-made"  # its lock file just made, not locked yet
        being_made.mkdir()
        (being_made / OWNER_LOCK).touch()
        without_lock = tmp_path / f"{DIRECTORY_PREFIX}without-lock"
        without_lock.mkdir()
        with caplog.at_level(logging.WARNING, logger="app.replay.kept_on_disk"):
            kept = KeptOnDisk(SHORT, parent=str(tmp_path))
        try:
            assert not abandoned.exists()
            assert live.exists() and being_made.exists() and without_lock.exists() and kept.directory.exists()
            assert f"deleted 1 replay directory left by processes that ended without deleting them: {abandoned}" \
                in caplog.text
        finally:
            kept.close()
        assert not kept.directory.exists()
    finally:
        running.stdin.close()
        assert running.wait(timeout=120) == 0
    assert not live.exists()  # deleted by its own process as it closed


def test_the_most_the_records_took_on_disk_is_measured_before_a_generation_goes_and_at_the_end(tmp_path):
    kept = KeptOnDisk(SHORT, parent=str(tmp_path), min_width_ms=GENERATION_MS)
    store = kept.store(0)
    for n in range(2_000):  # all in generation 0
        store.put_seen_event("SKU1", f"event-{n}", n, ledger_position(n))
    kept.seen.flush()
    held = disk_usage_bytes(kept.directory)
    assert held > 0 and kept.peak_disk_bytes == 0  # not measured yet
    store.forget_before(3 * GENERATION_MS, 3 * GENERATION_MS)  # generation 0 goes: measured just before
    assert kept.seen.dropped == 1 and kept.peak_disk_bytes >= held
    measured = kept.peak_disk_bytes
    kept.close()
    assert kept.peak_disk_bytes >= measured and not kept.directory.exists()
