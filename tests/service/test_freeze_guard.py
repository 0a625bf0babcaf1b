"""The freeze guard: a process frozen past the bound ends itself on waking, from its thread or its write path."""

from __future__ import annotations

import pytest

from app.service import freeze_guard
from app.service.freeze_guard import EXIT_PROCESS_WAS_FROZEN, FreezeDetector, FreezeGuard


def test_regular_ticks_never_trip_the_detector():
    detector = FreezeDetector(bound_seconds=5.0, now=0.0)
    assert all(detector.tick(t * 0.1) is None for t in range(1, 1000))


def test_a_gap_above_the_bound_is_reported_once_by_the_ticking_thread():
    detector = FreezeDetector(bound_seconds=5.0, now=0.0)
    assert detector.tick(4.9) is None
    assert detector.tick(11.0) == pytest.approx(6.1)
    assert detector.tick(11.1) is None


def test_the_write_path_sees_a_freeze_before_the_thread_has_run_again():
    clock = iter([0.0, 3.0, 20.0]).__next__
    frozen = []
    guard = FreezeGuard(5.0, clock=clock, on_freeze=frozen.append)
    guard.check()  # 3 s since the last tick: fine
    guard.check()  # 20 s: frozen
    assert frozen == [20.0]


def test_a_freeze_ends_the_process_with_its_own_status(monkeypatch, caplog):
    exits = []

    def fake_exit(status):
        exits.append(status)
        raise SystemExit(status)

    monkeypatch.setattr(freeze_guard.os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        freeze_guard.end_worker_after_freeze(9.5)
    assert exits == [EXIT_PROCESS_WAS_FROZEN] and "frozen for 9.5s" in caplog.text


def test_without_a_guard_the_write_path_check_is_a_no_op(monkeypatch):
    monkeypatch.setattr(freeze_guard, "_process_guard", None)
    freeze_guard.check_not_frozen()


def test_the_bound_stays_below_the_session_timeout():
    from app.service.app import BROKER_HEARTBEAT_INTERVAL_SECONDS, BROKER_SESSION_TIMEOUT_SECONDS
    from app.service.worker import FREEZE_BOUND_SECONDS

    assert 0 < FREEZE_BOUND_SECONDS < BROKER_SESSION_TIMEOUT_SECONDS - BROKER_HEARTBEAT_INTERVAL_SECONDS
    with pytest.raises(ValueError):
        FreezeDetector(0, now=0.0)
