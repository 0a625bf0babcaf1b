"""Kafka plumbing tests get a broker of their own per test, as the streaming-service tests do."""

from tests.service.conftest import bootstrap_servers  # noqa: F401
