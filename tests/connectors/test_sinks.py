"""The log and webhook sinks against a real local HTTP endpoint (no broker)."""

from __future__ import annotations

import base64
import json
import logging
import socket

import pytest
from pydantic import ValidationError

from app.connectors import AvailabilityChange, LogSink, SinkError, SinkUnavailableError, WebhookSink
from app.connectors.sinks import redacted_url
from app.settings import Settings
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


# ------------------------------------------------------------------------------------- credentials: sent, never shown
URL_PASSWORD = "url-pass-4f9a2c"
QUERY_TOKEN = "qtok7Hx2Lw9Pq4Zr8Nv"
HEADER_TOKEN = "hdr-token-91b7e3d5c2"
SECRETS = (URL_PASSWORD, QUERY_TOKEN, HEADER_TOKEN)


def test_headers_from_the_settings_are_sent(settings_factory, monkeypatch) -> None:
    monkeypatch.setenv("AVAILABILITY_WEBHOOK_HEADERS", json.dumps({"Authorization": f"Bearer {HEADER_TOKEN}"}))
    settings = Settings()
    assert HEADER_TOKEN not in repr(settings)
    headers = {name: value.get_secret_value() for name, value in settings.webhook_headers.items()}
    with WebhookEndpoint() as endpoint:
        WebhookSink(endpoint.url, timeout_seconds=5, headers=headers).deliver(a_change())
    assert endpoint.authorizations == [f"Bearer {HEADER_TOKEN}"]


def test_user_info_in_the_url_is_sent_as_basic_authentication() -> None:
    with WebhookEndpoint() as endpoint:
        url = endpoint.url.replace("http://", f"http://shop:{URL_PASSWORD}@")
        WebhookSink(url, timeout_seconds=5).deliver(a_change())
    expected = base64.b64encode(f"shop:{URL_PASSWORD}".encode()).decode()
    assert endpoint.authorizations == [f"Basic {expected}"] and len(endpoint.accepted) == 1


@pytest.mark.parametrize("variable", ['{"Authorization": "Bearer zz-secret\\r\\nX-Injected: 1"}',
                                      '{"Idempotency-Key": "zz-secret"}', '["Authorization: Bearer zz-secret"]',
                                      "Authorization: Bearer zz-secret"])
def test_unsafe_or_malformed_headers_are_refused_without_echoing_them(monkeypatch, variable) -> None:
    monkeypatch.setenv("AVAILABILITY_WEBHOOK_HEADERS", variable)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "zz-secret" not in str(refused.value) and "webhook_headers" in str(refused.value)


def test_redacted_url_hides_user_info_and_token_like_query_values() -> None:
    shown = redacted_url(f"https://shop:{URL_PASSWORD}@api.example/stock?channel=web&access_token={QUERY_TOKEN}"
                         f"&v={QUERY_TOKEN}#frag")
    assert shown == "https://***@api.example/stock?channel=web&access_token=***&v=***"


def test_redacted_url_hides_a_secret_in_the_path_and_anything_that_is_not_a_url() -> None:
    assert redacted_url("https://hooks.example/services/T0/B0/Xk9pQ2mN7vR4sT8wZ1yL") == \
        "https://hooks.example/services/T0/B0/***"
    assert redacted_url(QUERY_TOKEN) == "***"  # a token pasted where the URL belongs
    with pytest.raises(ValueError) as refused:
        WebhookSink(QUERY_TOKEN)
    assert QUERY_TOKEN not in str(refused.value)


def secret_url(port: int) -> str:
    return f"http://shop:{URL_PASSWORD}@127.0.0.1:{port}/stock?channel=web&token={QUERY_TOKEN}"


def test_no_secret_in_errors_or_logs_of_a_failing_webhook(settings_factory, caplog) -> None:
    from app.connectors import Backoff, ChannelConnector
    from app.wire.serialization import AvroCodec
    from tests.connectors.fakes import FakeClock, FakeConsumer, FakeTopic
    from tests.connectors.records import encoded

    settings = settings_factory(channels=("web",))
    sinks = []
    with WebhookEndpoint() as endpoint:
        endpoint.down = True  # 503
        sinks.append(WebhookSink(secret_url(endpoint._server.server_address[1]), timeout_seconds=2,
                                 headers={"X-Api-Key": HEADER_TOKEN}))
        with socket.socket() as probe:  # refused
            probe.bind(("127.0.0.1", 0))
            sinks.append(WebhookSink(secret_url(probe.getsockname()[1]), timeout_seconds=2,
                                     headers={"X-Api-Key": HEADER_TOKEN}))
        messages = [repr(sink) for sink in sinks]
        with caplog.at_level(logging.DEBUG):
            for sink in sinks:
                with pytest.raises(SinkUnavailableError) as failed:
                    sink.deliver(a_change())
                messages.append(str(failed.value))
                topic = FakeTopic("availability.web", partitions=1)
                topic.append(0, "sku-1", encoded(AvroCodec(settings), "web", "sku-1", 1))
                connector = ChannelConnector(
                    settings, "web", sink, bootstrap_servers="fake:9092", group_id="group", clock=FakeClock(),
                    consumer_factory=lambda config: FakeConsumer(topic, config),
                    backoff=Backoff(initial_seconds=0.0, max_seconds=0.0))
                connector.start()
                for _ in range(8):  # several failed attempts, the circuit opens: each logs a line
                    connector.run_once()
                assert connector.stats.sink_failures >= 2
    assert "POST http://***@127.0.0.1:" in "\n".join(messages)
    assert "sink failed" in caplog.text
    for secret in SECRETS:
        assert secret not in "\n".join(messages), secret
        assert secret not in caplog.text, secret


def test_a_malformed_url_is_refused_without_showing_its_credentials() -> None:
    with pytest.raises(ValueError) as refused:
        WebhookSink(f"http://shop:{URL_PASSWORD}@127.0.0.1:notaport/x?token={QUERY_TOKEN}")
    assert "***@127.0.0.1:notaport" in str(refused.value)
    assert URL_PASSWORD not in str(refused.value) and QUERY_TOKEN not in str(refused.value)
