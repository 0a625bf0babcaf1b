"""The embedded-broker service tests, run against real Apache Kafka (testcontainers): the vertical slice, the
realistic scenario (published availability equals the engine run on the events sent) and kill -9 mid-stream then
restart. (`processing_guarantee=exactly_once` is refused by the settings: tests/test_settings.py.)

The test bodies are the embedded ones, so both brokers are held to the same checks. Skipped, with the reason
printed, where no Docker engine answers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

import tests.service.test_recovery as embedded_recovery
import tests.service.test_scenario as embedded_scenario
import tests.service.test_vertical_slice as embedded_vertical_slice

pytestmark = [pytest.mark.kafka]
# Time limits count the test body only (func_only): the first test's setup also starts the container, and may pull
# its image, and the container fixture has its own startup limit.
TOPIC_DELETION_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def bootstrap_servers(kafka_container: str) -> Iterator[str]:
    """The session's Kafka container, emptied of the previous test's topics: registry topic names are fixed, so a
    test would otherwise read another's records. App ids (consumer groups, changelogs, transactional ids) are
    unique per test already."""
    _delete_topics(kafka_container)
    yield kafka_container


def _delete_topics(servers: str, timeout: float = TOPIC_DELETION_TIMEOUT_SECONDS) -> None:
    """Delete every topic but Kafka's internal ones (`__consumer_offsets`, `__transaction_state`), and wait until
    metadata no longer lists them, so the test's create_topics makes new ones rather than finding the old."""
    admin = AdminClient({"bootstrap.servers": servers})
    names = [name for name in admin.list_topics(timeout=10).topics if not name.startswith("__")]
    if not names:
        return
    for future in admin.delete_topics(names, operation_timeout=timeout, request_timeout=timeout).values():
        future.result(timeout=timeout)
    deadline = time.monotonic() + timeout
    while remaining := set(names) & set(admin.list_topics(timeout=10).topics):
        if time.monotonic() > deadline:
            raise AssertionError(f"topics still listed {timeout}s after deletion: {sorted(remaining)}")
        time.sleep(0.2)


@pytest.mark.timeout(180, func_only=True)
def test_vertical_slice_on_kafka(service_settings, workers, topics_for, bootstrap_servers):
    embedded_vertical_slice.test_receipt_then_sale_publish_availability(
        service_settings, workers, topics_for, bootstrap_servers
    )


@pytest.mark.timeout(300, func_only=True)
def test_realistic_scenario_on_kafka_matches_engine(service_settings, workers, topics_for, bootstrap_servers):
    embedded_scenario.test_realistic_scenario_matches_engine(service_settings, workers, topics_for, bootstrap_servers)


@pytest.mark.timeout(300, func_only=True)
def test_kill_9_then_restart_on_kafka(service_settings, workers, topics_for, bootstrap_servers):
    embedded_recovery.test_kill_9_mid_stream_then_restart(service_settings, workers, topics_for, bootstrap_servers)
