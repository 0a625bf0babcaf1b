"""Settings: one frozen object, and the only place that reads the environment.

Every variable is `AVAILABILITY_<FIELD>` (case-insensitive). The broker address is also read from the plain
`KAFKA_BOOTSTRAP_SERVERS` that Kafka tooling and container platforms set; the prefixed name wins when both are set.
When neither is set, the service starts its own embedded broker (see `app.broker`).

`Settings()` reads the environment; `Settings(field=value, ...)` overrides it (tests, tools). Instances are frozen:
code that needs a variation builds a new one with `settings.model_copy(update={...})`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.topics import IDENTIFIER_PATTERN

ProcessingGuarantee = Literal["at_least_once", "exactly_once"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

DEFAULT_CHANNELS = ("ecommerce", "marketplace", "store-pickup")
SEVEN_DAYS_MS = 7 * 24 * 60 * 60 * 1000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AVAILABILITY_",
        frozen=True,
        extra="forbid",  # a mistyped override in code is an error, not a silently ignored keyword
        validate_default=True,
        populate_by_name=True,  # Settings(kafka_bootstrap_servers=...) works despite the validation alias
    )

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AVAILABILITY_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="host:port[,host:port...] of an existing Kafka cluster; None starts the embedded broker.",
    )
    schema_registry_url: str = Field(
        default="mock://availability",
        description="Confluent Schema Registry URL; mock://<scope> is confluent-kafka's in-process registry.",
    )
    app_id: str = Field(
        default="inventory-availability",
        description="Faust app id: consumer group and prefix of the worker's internal topics.",
    )
    data_dir: Path = Field(default=Path(".data"), description="Local state (RocksDB tables, broker log).")
    partitions: int = Field(default=8, ge=1, description="Partitions of every topic the service declares.")
    replication_factor: int = Field(default=1, ge=1)
    channels: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_CHANNELS,
        description="Sales channels; each gets a topic availability.<channel>. Env: comma-separated or JSON list.",
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=1, le=65535)
    tick_interval_seconds: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=1000, ge=1)
    batch_timeout_seconds: float = Field(default=0.05, gt=0)
    standby_replicas: int = Field(default=0, ge=0)
    processing_guarantee: ProcessingGuarantee = "at_least_once"
    topic_retention_ms: int = Field(default=SEVEN_DAYS_MS, description="retention.ms of delete topics; -1: forever.")
    log_level: LogLevel = "INFO"

    @field_validator("kafka_bootstrap_servers", mode="before")
    @classmethod
    def _blank_means_embedded(cls, value: Any) -> Any:
        # `KAFKA_BOOTSTRAP_SERVERS=` (set but empty) is how shells and compose files spell "not set".
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("app_id")
    @classmethod
    def _app_id_is_identifier(cls, value: str) -> str:
        if not IDENTIFIER_PATTERN.fullmatch(value):
            raise ValueError(f"app_id {value!r} must match {IDENTIFIER_PATTERN.pattern}")
        return value

    @field_validator("channels", mode="before")
    @classmethod
    def _parse_channel_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return tuple(json.loads(text))
            return tuple(part.strip() for part in text.split(",") if part.strip())
        return value

    @field_validator("channels")
    @classmethod
    def _channels_are_distinct_identifiers(cls, channels: tuple[str, ...]) -> tuple[str, ...]:
        if not channels:
            raise ValueError("at least one channel is required")
        for channel in channels:
            if not IDENTIFIER_PATTERN.fullmatch(channel):
                raise ValueError(f"channel {channel!r} must match {IDENTIFIER_PATTERN.pattern}")
        duplicates = sorted({channel for channel in channels if channels.count(channel) > 1})
        if duplicates:
            raise ValueError(f"channels listed more than once: {', '.join(duplicates)}")
        return channels

    @field_validator("topic_retention_ms")
    @classmethod
    def _retention_is_positive_or_forever(cls, value: int) -> int:
        if value != -1 and value < 1:
            raise ValueError("topic_retention_ms must be a positive number of milliseconds, or -1 for no limit")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_upper_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @property
    def uses_embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None
