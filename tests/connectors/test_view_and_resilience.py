"""The version rule, the view file, backoff and the circuit breaker: plain Python, fake clock, no sleeps."""

from __future__ import annotations

import random

import pytest

from app.connectors import Backoff, CircuitBreaker, CircuitState, HeldValue, LocalView
from tests.connectors.fakes import FakeClock


def test_version_rule_and_gaps() -> None:
    view = LocalView()
    assert view.assess("sku-1", 5).is_newer  # first sighting: never a gap
    assert view.assess("sku-1", 5).missing_versions == 0
    view.apply("sku-1", 5, 10, "IN_STOCK")
    assert not view.assess("sku-1", 5).is_newer
    assert not view.assess("sku-1", 4).is_newer
    assert view.assess("sku-1", 6).missing_versions == 0
    gap = view.assess("sku-1", 9)
    assert (gap.is_newer, gap.held_version, gap.missing_versions) == (True, 5, 3)
    assert view.assess("sku-1", 9, snapshot=True).missing_versions == 0
    assert not view.assess("sku-1", 5, snapshot=True).is_newer
    with pytest.raises(ValueError):
        view.apply("sku-1", 5, 0, "OUT_OF_STOCK")


def test_view_file_round_trip_and_atomic_replace(tmp_path) -> None:
    path = tmp_path / "state" / "view.json"
    assert len(LocalView.load(path)) == 0
    view = LocalView()
    view.apply("sku-1", 3, 7, "IN_STOCK")
    view.apply("sku-2/store-1", 1, 0, "OUT_OF_STOCK")
    view.save(path)
    view.apply("sku-1", 4, 2, "LOW_STOCK")
    view.save(path)
    loaded = LocalView.load(path)
    assert loaded.items() == [("sku-1", HeldValue(4, 2, "LOW_STOCK")), ("sku-2/store-1", HeldValue(1, 0, "OUT_OF_STOCK"))]
    assert [p.name for p in path.parent.iterdir()] == ["view.json"]  # no temporary file left behind


def test_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(initial_seconds=0.5, multiplier=2.0, max_seconds=5.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.delay(10_000) == 5.0
    with pytest.raises(ValueError):
        backoff.delay(0)


def test_backoff_jitter_stays_within_its_fraction() -> None:
    backoff = Backoff(initial_seconds=2.0, multiplier=1.0, max_seconds=2.0, jitter=0.5, rng=random.Random(7))
    delays = [backoff.delay(1) for _ in range(200)]
    assert all(1.0 <= delay <= 2.0 for delay in delays)
    assert len(set(delays)) > 1


def test_circuit_breaker_states() -> None:
    clock = FakeClock()
    circuit = CircuitBreaker(failure_threshold=3, cooldown_seconds=10.0, clock=clock)
    assert circuit.state is CircuitState.CLOSED
    assert circuit.record_failure() is CircuitState.CLOSED
    circuit.record_success()  # failures must be consecutive
    circuit.record_failure()
    circuit.record_failure()
    assert circuit.allows_attempt()
    assert circuit.record_failure() is CircuitState.OPEN
    assert not circuit.allows_attempt() and circuit.reopens_at == clock.now + 10.0
    clock.advance(9.99)
    assert circuit.state is CircuitState.OPEN
    clock.advance(0.01)
    assert circuit.state is CircuitState.HALF_OPEN and circuit.allows_attempt()
    assert circuit.record_failure() is CircuitState.OPEN  # a failed probe reopens at once
    assert circuit.times_opened == 2
    clock.advance(10.0)
    assert circuit.state is CircuitState.HALF_OPEN
    circuit.record_success()
    assert circuit.state is CircuitState.CLOSED and circuit.consecutive_failures == 0
