"""The worker's consumer is created with the fetch wait from the settings, not Faust's hard-coded 1500 ms."""

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
