"""The log and webhook sinks against a real local HTTP endpoint (no broker)."""

from __future__ import annotations

import logging
import socket

import pytest

from app.connectors import AvailabilityChange, LogSink, SinkError, SinkUnavailableError, WebhookSink
from tests.connectors.webhook_server import WebhookEndpoint


def a_change(version: int = 3) -> AvailabilityChange:
    return AvailabilityChange(channel="web", key="sku-1/store-2", sku="sku-1", location="store-2", quantity=4,
                              status="LOW_STOCK", version=version, previous_version=version - 1, snapshot=False,
                              event_id="event-1", event_time=1_700_000_000_000, topic="availability.web",
                              partition=1, offset=41)


def test_log_sink_writes_one_line(caplog) -> None:
    with caplog.at_level(logging.INFO, logger="app.connectors.sinks"):
        LogSink().deliver(a_change())
    assert "web sku-1/store-2 v3 quantity=4 status=LOW_STOCK" in caplog.text


def test_webhook_posts_the_change_as_json_with_an_idempotency_key() -> None:
    with WebhookEndpoint() as endpoint:
        WebhookSink(endpoint.url, timeout_seconds=5).deliver(a_change())
    assert endpoint.accepted == [a_change().as_json()]
    assert endpoint.idempotency_keys == ["sku-1/store-2@3"]


def test_webhook_non_2xx_is_a_sink_error() -> None:
    with WebhookEndpoint() as endpoint:
        endpoint.down = True
        with pytest.raises(SinkUnavailableError, match="HTTP 503"):
            WebhookSink(endpoint.url, timeout_seconds=5).deliver(a_change())
    assert endpoint.refused == 1 and endpoint.accepted == []


def test_webhook_refused_connection_is_a_sink_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SinkError, match="Connection refused|ConnectionRefused"):
        WebhookSink(f"http://127.0.0.1:{port}/x", timeout_seconds=2).deliver(a_change())


def test_webhook_timeout_is_a_sink_error() -> None:
    with socket.socket() as silent:  # accepts the connection (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        with pytest.raises(SinkUnavailableError, match="timed out|Timeout"):
            WebhookSink(f"http://127.0.0.1:{port}/x", timeout_seconds=0.2).deliver(a_change())


def test_webhook_url_must_be_http() -> None:
    with pytest.raises(ValueError):
        WebhookSink("ftp://example.org/")
