"""The worker's consumer is created with the fetch wait from the settings, not Faust's hard-coded 1500 ms; its
producer with batches larger than aiokafka's default."""

from __future__ import annotations

import asyncio

from app.kafka.transport import WorkerApp
from app.service.app import build_service


def test_the_worker_consumer_uses_the_configured_fetch_wait(settings_factory) -> None:
    settings = settings_factory(fetch_max_wait_ms=35)
    service = build_service(settings, "127.0.0.1:9")  # nothing connects: the client is only constructed

    async def create():
        thread = service.app.consumer._new_consumer_thread()
        return thread._create_worker_consumer(service.app.transport)

    consumer = asyncio.run(create())
    assert isinstance(service.app, WorkerApp)
    assert consumer._fetch_max_wait_ms == 35


def test_the_default_fetch_wait_is_short(settings_factory) -> None:
    assert settings_factory().fetch_max_wait_ms == 50


def test_the_worker_producer_batches_up_to_half_a_mebibyte_per_partition(settings_factory) -> None:
    """aiokafka moves one batch per partition per round trip: its 16 KiB default capped the write-back."""
    from app.service.app import PRODUCER_MAX_BATCH_BYTES

    service = build_service(settings_factory(), "127.0.0.1:9")  # nothing connects: the client is only constructed
    producer_settings = service.app.producer._settings_default()
    assert producer_settings["max_batch_size"] == PRODUCER_MAX_BATCH_BYTES == 512 * 1024
    # below the 1 MiB a Kafka broker accepts by default (message.max.bytes 1,048,588)
    assert PRODUCER_MAX_BATCH_BYTES < 1_048_588
