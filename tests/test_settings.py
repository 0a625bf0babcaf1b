from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.engine import DEFAULT_LIMITS, EngineLimits
from app.settings import DEFAULT_CHANNELS, SEVEN_DAYS_MS, Settings


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No AVAILABILITY_* or KAFKA_BOOTSTRAP_SERVERS from the shell that runs the tests."""
    for name in list(os.environ):
        if name.upper().startswith("AVAILABILITY_") or name.upper() == "KAFKA_BOOTSTRAP_SERVERS":
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_are_the_documented_ones(clean_environment):
    settings = Settings()
    assert settings.kafka_bootstrap_servers is None
    assert settings.uses_embedded_broker
    assert settings.schema_registry_url == "mock://availability"
    assert settings.app_id == "inventory-availability"
    assert settings.data_dir == Path(".data")
    assert settings.partitions == 8
    assert settings.replication_factor == 1
    assert settings.channels == DEFAULT_CHANNELS == ("ecommerce", "marketplace", "store-pickup")
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 6066)
    assert settings.tick_interval_seconds == 1.0
    assert (settings.batch_size, settings.batch_timeout_seconds) == (1000, 0.05)
    assert settings.standby_replicas == 0
    assert settings.processing_guarantee == "at_least_once"
    assert settings.topic_retention_ms == SEVEN_DAYS_MS == 604_800_000
    assert settings.log_level == "INFO"


def test_environment_variables_use_the_availability_prefix(clean_environment):
    clean_environment.setenv("AVAILABILITY_PARTITIONS", "3")
    clean_environment.setenv("AVAILABILITY_APP_ID", "availability-eu")
    clean_environment.setenv("AVAILABILITY_DATA_DIR", "/var/lib/availability")
    clean_environment.setenv("AVAILABILITY_LOG_LEVEL", "debug")
    clean_environment.setenv("PARTITIONS", "99")  # unprefixed names are not ours

    settings = Settings()

    assert settings.partitions == 3
    assert settings.app_id == "availability-eu"
    assert settings.data_dir == Path("/var/lib/availability")
    assert settings.log_level == "DEBUG"


def test_exactly_once_is_refused_with_its_reason(clean_environment):
    """Its transaction markers would hide the skipped-record check (app.kafka.skipped_records)."""
    clean_environment.setenv("AVAILABILITY_PROCESSING_GUARANTEE", "exactly_once")
    with pytest.raises(ValidationError, match="exactly_once is not supported: .*skipped-record check"):
        Settings()


def test_engine_limits_come_from_the_settings_in_event_time(clean_environment):
    assert Settings().engine_limits == DEFAULT_LIMITS  # the defaults are the engine's own
    clean_environment.setenv("AVAILABILITY_DUPLICATE_WINDOW_SECONDS", "3600")
    settings = Settings(reservation_retention_seconds=60, max_event_time_skew_seconds=5)
    assert settings.engine_limits == EngineLimits(
        duplicate_window_ms=3_600_000, reservation_retention_ms=60_000, max_event_time_skew_ms=5_000
    )


def test_bootstrap_servers_come_from_plain_kafka_variable(clean_environment):
    clean_environment.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = Settings()
    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert not settings.uses_embedded_broker


def test_prefixed_bootstrap_servers_win_over_the_plain_variable(clean_environment):
    clean_environment.setenv("KAFKA_BOOTSTRAP_SERVERS", "plain:9092")
    clean_environment.setenv("AVAILABILITY_KAFKA_BOOTSTRAP_SERVERS", "prefixed:9092")
    assert Settings().kafka_bootstrap_servers == "prefixed:9092"


def test_empty_bootstrap_servers_mean_the_embedded_broker(clean_environment):
    clean_environment.setenv("KAFKA_BOOTSTRAP_SERVERS", "  ")
    assert Settings().kafka_bootstrap_servers is None


def test_keyword_overrides_win_over_the_environment(clean_environment):
    clean_environment.setenv("KAFKA_BOOTSTRAP_SERVERS", "from-env:9092")
    clean_environment.setenv("AVAILABILITY_PARTITIONS", "3")
    settings = Settings(kafka_bootstrap_servers="from-code:9092", partitions=2)
    assert (settings.kafka_bootstrap_servers, settings.partitions) == ("from-code:9092", 2)


@pytest.mark.parametrize(
    "raw, channels",
    [
        ("ecommerce,store-pickup", ("ecommerce", "store-pickup")),
        (" ecommerce , marketplace ,", ("ecommerce", "marketplace")),
        ('["ecommerce", "b2b.wholesale"]', ("ecommerce", "b2b.wholesale")),
    ],
)
def test_channels_from_the_environment_are_comma_separated_or_json(clean_environment, raw, channels):
    clean_environment.setenv("AVAILABILITY_CHANNELS", raw)
    assert Settings().channels == channels


def test_settings_are_frozen(clean_environment):
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.partitions = 4
    assert settings.model_copy(update={"partitions": 4}).partitions == 4


@pytest.mark.parametrize(
    "overrides",
    [
        {"partitions": 0},
        {"replication_factor": 0},
        {"channels": ()},
        {"channels": ("ecommerce", "ecommerce")},
        {"channels": ("store/pickup",)},
        {"channels": ("-leading-dash",)},
        {"channels": ("x" * 65,)},
        {"app_id": "has space"},
        {"processing_guarantee": "at_most_once"},
        {"web_port": 0},
        {"web_port": 70000},
        {"tick_interval_seconds": 0},
        {"batch_size": 0},
        {"batch_timeout_seconds": -1},
        {"standby_replicas": -1},
        {"topic_retention_ms": 0},
        {"log_level": "LOUD"},
        {"no_such_setting": 1},
    ],
    ids=lambda overrides: ",".join(f"{key}={value!r}"[:40] for key, value in overrides.items()),
)
def test_invalid_values_are_rejected(clean_environment, overrides):
    with pytest.raises(ValidationError):
        Settings(**overrides)


def test_retention_accepts_minus_one_for_no_limit(clean_environment):
    assert Settings(topic_retention_ms=-1).topic_retention_ms == -1


def test_invalid_environment_value_is_rejected(clean_environment):
    clean_environment.setenv("AVAILABILITY_PARTITIONS", "zero")
    with pytest.raises(ValidationError, match="partitions"):
        Settings()


def test_settings_factory_gives_each_settings_its_own_app_id_and_data_dir(settings_factory, monkeypatch):
    monkeypatch.setenv("AVAILABILITY_PARTITIONS", "5")
    first, second = settings_factory(), settings_factory(partitions=2)
    assert first.app_id != second.app_id
    assert first.data_dir != second.data_dir
    assert first.partitions == 8  # the shell's AVAILABILITY_* variables do not leak into tests
    assert second.partitions == 2
    assert first.kafka_bootstrap_servers is None  # not an integration test: no broker started for it
