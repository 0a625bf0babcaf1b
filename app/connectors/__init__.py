"""Channel connectors: read one channel's availability topic and feed a selling channel (web store, marketplace).

This package is the template to copy (docs/CONNECTORS.md): `ChannelConnector` does the Kafka side (version rule,
gaps, bootstrap, commits, pause and resume around a failing sink); a new channel usually needs only a new sink, a
class with `deliver(change) -> None` that raises `SinkError` when the channel did not accept the change.
"""

from app.connectors.connector import ChannelConnector, ConnectorError, ConnectorStats
from app.connectors.resilience import Backoff, CircuitBreaker, CircuitState
from app.connectors.sinks import LogSink, Sink, SinkError, SinkUnavailableError, WebhookSink
from app.connectors.view import AvailabilityChange, HeldValue, LocalView

__all__ = [
    "AvailabilityChange",
    "Backoff",
    "ChannelConnector",
    "CircuitBreaker",
    "CircuitState",
    "ConnectorError",
    "ConnectorStats",
    "HeldValue",
    "LocalView",
    "LogSink",
    "Sink",
    "SinkError",
    "SinkUnavailableError",
    "WebhookSink",
]
