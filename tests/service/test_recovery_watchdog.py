"""The recovery watchdog: a restore with no progress for the bound ends the worker with an operator message."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from faust.types import TP

from app.service import recovery_watchdog
from app.service.recovery_watchdog import (
    EXIT_RECOVERY_STALLED,
    RecoveryStallDetector,
    RecoveryWatchdog,
    RestoreProgress,
    read_restore_progress,
    sample_interval,
)

CHANGELOG = "app-sku-state-changelog"


def progress(offset: int, target: int = 100, in_recovery: bool = True) -> RestoreProgress:
    return RestoreProgress(in_recovery, {(CHANGELOG, 3): offset}, {(CHANGELOG, 3): target})


def test_a_restore_that_keeps_reading_never_stalls():
    detector = RecoveryStallDetector(timeout_seconds=10)
    assert all(detector.observe(t * 5.0, progress(offset=t)) is None for t in range(100))


def test_no_progress_for_the_bound_is_a_stall_with_an_operator_message():
    detector = RecoveryStallDetector(timeout_seconds=10)
    assert detector.observe(0.0, progress(40)) is None
    assert detector.observe(9.9, progress(40)) is None
    stall = detector.observe(10.0, progress(40))
    assert stall is not None and stall.stalled_seconds == 10.0
    message = stall.operator_message()
    assert f"{CHANGELOG}[3] at offset 40 of 100 (60 to go)" in message
    assert "AVAILABILITY_RECOVERY_STALL_TIMEOUT_SECONDS" in message and f"exit {EXIT_RECOVERY_STALLED}" in message


def test_progress_restarts_the_clock():
    detector = RecoveryStallDetector(timeout_seconds=10)
    detector.observe(0.0, progress(40))
    detector.observe(8.0, progress(41))
    assert detector.observe(17.0, progress(41)) is None
    assert detector.observe(18.0, progress(41)) is not None


def test_leaving_recovery_resets_and_idle_workers_never_stall():
    detector = RecoveryStallDetector(timeout_seconds=10)
    detector.observe(0.0, progress(40))
    assert detector.observe(50.0, progress(40, in_recovery=False)) is None
    assert detector.observe(55.0, progress(40)) is None  # a new recovery: its clock starts now
    assert detector.observe(64.0, progress(40)) is None
    idle = RecoveryStallDetector(timeout_seconds=1)
    assert all(idle.observe(float(t), progress(0, in_recovery=False)) is None for t in range(100))


def test_a_recovery_with_nothing_left_that_never_ends_is_a_stall_too():
    detector = RecoveryStallDetector(timeout_seconds=5)
    detector.observe(0.0, progress(100))
    stall = detector.observe(6.0, progress(100))
    assert stall is not None and "no partition has records left" in stall.operator_message()


def test_the_bound_must_be_positive_and_sampling_keeps_up_with_it():
    with pytest.raises(ValueError):
        RecoveryStallDetector(0)
    assert sample_interval(120) == 1.0 and sample_interval(2) == 0.4 and sample_interval(0.1) == 0.2


def test_progress_is_read_from_fausts_recovery_service():
    tp, standby = TP(CHANGELOG, 1), TP(CHANGELOG, 2)
    recovery = SimpleNamespace(in_recovery=True, active_offsets={tp: 7, standby: 1},
                               active_highwaters={tp: 20, standby: 30}, active_tps={tp})
    read = read_restore_progress(SimpleNamespace(tables=SimpleNamespace(recovery=recovery)))
    assert read.in_recovery and read.targets == {(CHANGELOG, 1): 20}
    assert read.remaining() == {(CHANGELOG, 1): 13}


def test_a_stall_ends_the_process_with_its_own_exit_status(monkeypatch, caplog):
    exits = []

    def fake_exit(status):
        exits.append(status)
        raise SystemExit(status)

    monkeypatch.setattr(recovery_watchdog.os, "_exit", fake_exit)
    detector = RecoveryStallDetector(timeout_seconds=1)
    detector.observe(0.0, progress(5))
    with pytest.raises(SystemExit):
        recovery_watchdog.end_worker_for_stalled_restore(detector.observe(2.0, progress(5)))
    assert exits == [EXIT_RECOVERY_STALLED]
    assert "table recovery made no progress" in caplog.text


def test_the_service_registers_the_watchdog_with_the_configured_bound(settings_factory):
    from app.service.app import build_service

    service = build_service(settings_factory(recovery_stall_timeout_seconds=7.5), "127.0.0.1:9")
    watchdogs = [child for child in service.app._children if isinstance(child, RecoveryWatchdog)]
    assert len(watchdogs) == 1 and watchdogs[0].detector.timeout_seconds == 7.5
    # Not an app timer: Faust starts those only after the first recovery, the very wait being watched.
    assert "_watch_table_recovery" not in [getattr(task, "__name__", None) for task in service.app._app_tasks]
