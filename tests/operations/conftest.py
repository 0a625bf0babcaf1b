"""The operations tests reuse the streaming-service fixtures: a broker of each test's own, workers stopped at
teardown even when a test fails."""

from tests.service.conftest import bootstrap_servers, service_settings, topics_for, workers  # noqa: F401
