"""Retry pacing for a failing sink: exponential backoff and a circuit breaker, both driven by an injected clock.

No sleeping here: they only say *when* the next attempt may happen; the connector keeps polling Kafka meanwhile
so its consumer group membership stays alive.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from enum import Enum

Clock = Callable[[], float]


class Backoff:
    """Delay before retry number `attempt` (1, 2, ...): initial * multiplier**(attempt-1), capped at `max_seconds`.

    `jitter` (0..1) removes up to that fraction of each delay at random so many connectors restarting together
    do not hammer a recovering API in step; 0 (the default) is deterministic."""

    def __init__(self, initial_seconds: float = 0.5, multiplier: float = 2.0, max_seconds: float = 30.0,
                 jitter: float = 0.0, rng: random.Random | None = None) -> None:
        if initial_seconds < 0 or multiplier < 1 or max_seconds < initial_seconds or not 0 <= jitter <= 1:
            raise ValueError("backoff needs 0 <= initial <= max, multiplier >= 1 and 0 <= jitter <= 1")
        self.initial_seconds = initial_seconds
        self.multiplier = multiplier
        self.max_seconds = max_seconds
        self.jitter = jitter
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        if attempt < 1:
            raise ValueError(f"attempt numbers start at 1, got {attempt}")
        # min() before the power would overflow for long outages
        exponent = min(attempt - 1, 64)
        delay = min(self.max_seconds, self.initial_seconds * self.multiplier**exponent)
        if self.jitter:
            delay -= delay * self.jitter * self._rng.random()
        return delay


class CircuitState(str, Enum):
    CLOSED = "closed"  # deliveries flow; consecutive failures are counted
    OPEN = "open"  # the sink is considered down: no attempt until the cool-down has passed
    HALF_OPEN = "half_open"  # cool-down over: one probe decides between CLOSED and OPEN again


class CircuitBreaker:
    """Opens after `failure_threshold` consecutive failures; after `cooldown_seconds` it lets one probe through
    (half-open): success closes it, failure opens it for another cool-down."""

    def __init__(self, failure_threshold: int = 5, cooldown_seconds: float = 30.0,
                 clock: Clock = time.monotonic) -> None:
        if failure_threshold < 1 or cooldown_seconds < 0:
            raise ValueError("failure_threshold must be >= 1 and cooldown_seconds >= 0")
        self.failure_threshold = failure_threshold
        self.cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0
        self._opened_at = 0.0
        self.times_opened = 0

    @property
    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self._clock() >= self.reopens_at:
            self._state = CircuitState.HALF_OPEN
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def reopens_at(self) -> float:
        """Clock time at which an open circuit lets a probe through."""
        return self._opened_at + self.cooldown_seconds

    def allows_attempt(self) -> bool:
        return self.state is not CircuitState.OPEN

    def record_success(self) -> None:
        self._state = CircuitState.CLOSED
        self._consecutive_failures = 0

    def record_failure(self) -> CircuitState:
        """Count a failure; returns the state it leaves the circuit in."""
        self._consecutive_failures += 1
        if self.state is CircuitState.HALF_OPEN or self._consecutive_failures >= self.failure_threshold:
            if self._state is not CircuitState.OPEN:
                self.times_opened += 1
            self._state = CircuitState.OPEN
            self._opened_at = self._clock()
        return self._state
