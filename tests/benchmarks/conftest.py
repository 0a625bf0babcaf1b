"""Fixtures of the benchmark tests."""

from __future__ import annotations

import pytest

from app.kafka.broker import EmbeddedBroker, EmbeddedBrokerError


@pytest.fixture
def embedded_broker_starts(tmp_path) -> None:
    """The benchmarks always run their own embedded brokers (even where KAFKA_BOOTSTRAP_SERVERS points elsewhere):
    skipped, saying why, where none starts."""
    try:
        with EmbeddedBroker(tmp_path / "probe-broker.log"):
            pass
    except (EmbeddedBrokerError, OSError) as error:
        pytest.skip(f"the benchmark needs the embedded Tansu broker, which did not start: {error}")
