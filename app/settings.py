"""Settings: one frozen object, and the only place that reads the environment.

Every variable is `AVAILABILITY_<FIELD>` (case-insensitive). The broker address is also read from the plain
`KAFKA_BOOTSTRAP_SERVERS` that Kafka tooling and container platforms set; the prefixed name wins when both are set.
When neither is set, the service starts its own embedded broker (see `app.kafka.broker`).

`Settings()` reads the environment; `Settings(field=value, ...)` overrides it (tests, tools). Instances are frozen:
code that needs a variation builds a new one with `settings.model_copy(update={...})`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.engine.events import IDENTIFIER
from app.engine.limits import EngineLimits

ProcessingGuarantee = Literal["at_least_once"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]
Stages = Literal["all", "availability"]

API_TOKEN_PATTERN = re.compile(r"[\x21-\x7e]{16,512}")
HEADER_NAME_PATTERN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")  # an HTTP token (RFC 9110)
HEADER_VALUE_PATTERN = re.compile(r"[\x20-\x7e\t]{0,8192}")  # visible ASCII, spaces, tabs: no CR/LF injection
HEADERS_SET_BY_THE_WEBHOOK = frozenset({"content-type", "idempotency-key", "content-length", "host"})

DEFAULT_CHANNELS = ("ecommerce", "marketplace", "store-pickup")
SEVEN_DAYS_MS = 7 * 24 * 60 * 60 * 1000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="AVAILABILITY_",
        frozen=True,
        extra="forbid",  # a mistyped override in code is an error, not a silently ignored keyword
        validate_default=True,
        populate_by_name=True,  # Settings(kafka_bootstrap_servers=...) works despite the validation alias
        hide_input_in_errors=True,  # a rejected value may be a secret (api_token, sasl_password): never echo it
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
    web_host: str = Field(
        default="127.0.0.1",
        description="Address the HTTP API binds to: loopback unless set (e.g. 0.0.0.0 in a container, with a token).",
    )
    web_port: int = Field(default=6066, ge=1, le=65535)
    # HTTP API (docs/HTTP_API.md). The token is a secret: repr() and logs show '**********'.
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token every HTTP endpoint but /health and /ready requires; None: no authentication.",
    )
    reservation_timeout_seconds: float = Field(
        default=5.0, gt=0, le=120,
        description="How long POST/DELETE /reservations wait for the decision before answering 504 (still pending).",
    )
    max_request_body_bytes: int = Field(
        default=16_384, ge=256, le=1_048_576, description="Larger request bodies are refused with 413."
    )
    tick_interval_seconds: float = Field(
        default=1.0, gt=0,
        description="How often the leader appends a ClockTick, stamped with its wall clock, to every ledger partition.",
    )
    clock_ticks: bool = Field(
        default=True,
        description="False: the leader appends no clock ticks, so partition clocks follow event times alone (a "
        "backfill of historical events then expires reservations as of their own time, not as of today).",
    )
    duplicate_window_seconds: int = Field(
        default=86_400, ge=0, le=366 * 86_400,
        description="Event time during which an event id seen on a SKU makes a second event with that id a "
        "duplicate (sources that send an event twice). Repeats of ledger entries need no window.",
    )
    reservation_retention_seconds: int = Field(
        default=7 * 86_400, ge=0, le=366 * 86_400,
        description="Event time during which a finished or refused reservation id keeps its answer for retries.",
    )
    max_event_time_skew_seconds: int = Field(
        default=300, ge=0, le=366 * 86_400,
        description="An event stamped more than this ahead of the ingest stage's clock is dead-lettered "
        "(EVENT_TIME_IN_FUTURE) and moves no partition clock.",
    )
    batch_size: int = Field(default=1000, ge=1)
    batch_timeout_seconds: float = Field(default=0.05, gt=0)
    state_cache_skus: int = Field(
        default=2_000, ge=0,
        description="Decoded SKU states a worker keeps between micro-batches, per ledger partition it owns, beside those"
        " changed since the last write-back.",
    )
    write_back_interval_seconds: float = Field(
        default=1.0, ge=0, le=60,
        description="Longest the availability stage keeps changed SKU states in memory before writing them to the"
        " tables (a hot SKU is written once per interval, not once per micro-batch); 0 writes after every chunk."
        " A worker taking a partition over applies the ledger records since the tables' position again.",
    )
    ledger_batch_max_entries: int = Field(
        default=500, ge=1, le=100_000,
        description="Most events per ledger record (a LedgerEntryBatch per ledger partition per source micro-batch);"
        " 1 writes one record per event.",
    )
    fetch_max_wait_ms: int = Field(
        default=50, ge=1, le=60_000,
        description="Longest a worker's fetch waits for data (Faust hard-codes 1500; see app.kafka.transport).",
    )
    standby_replicas: int = Field(default=0, ge=0)
    rocksdb_write_buffer_mib: int = Field(
        default=4, ge=1, le=1024,
        description="RocksDB memtable size of each sku-state database (one per table partition held); two per database.",
    )
    rocksdb_block_cache_mib: int = Field(
        default=2, ge=1, le=65_536,
        description="RocksDB read cache of each sku-state database (one per table partition held). Small: hot SKUs"
        " are read from the worker's decoded states (state_cache_skus) and the rest from the OS page cache.",
    )
    processing_guarantee: ProcessingGuarantee = "at_least_once"
    topic_retention_ms: int = Field(default=SEVEN_DAYS_MS, description="retention.ms of delete topics; -1: forever.")
    log_level: LogLevel = "INFO"
    # Kafka client security, applied to every client (Faust worker, admin, tools, connectors) by app.kafka.client_config.
    # Secrets are SecretStr: repr() and logs show '**********'. See docs/OPERATIONS.md, "Security".
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(default=None, description="CA bundle that signed the brokers' certificates.")
    ssl_certfile: Path | None = Field(default=None, description="Client certificate (mutual TLS), PEM.")
    ssl_keyfile: Path | None = Field(default=None, description="Client private key (mutual TLS), PEM.")
    ssl_key_password: SecretStr | None = None
    create_topics: bool = Field(
        default=True,
        description="False: the worker creates no topic and fails naming the missing ones (`availability topics "
        "create` made them up front; the service then needs no create rights).",
    )
    max_source_record_bytes: int = Field(
        default=1_000_000, ge=1024,
        description="A source record above this size is dead-lettered (RECORD_TOO_LARGE) without being decoded.",
    )
    broker_wait_seconds: float = Field(
        default=120.0, gt=0,
        description="How long a starting worker waits for the broker to answer (it may start after the worker).",
    )
    stages: Stages = Field(
        default="all",
        description="What a worker runs: `all` (the ingest stage, on a thread of its own, and the availability stage) "
        "or `availability` (no ingest: the source topics are ingested by `availability ingest` processes, "
        "app.service.ingest_worker).",
    )
    recovery_stall_timeout_seconds: float = Field(
        default=120.0, gt=0,
        description="A table restore that reads no changelog record for this long ends the worker loudly.",
    )
    # Channel connectors (docs/CONNECTORS.md). The values are secrets: repr() and logs show '**********'.
    webhook_headers: Annotated[dict[str, SecretStr], NoDecode] = Field(
        default_factory=dict,
        description="Extra headers of every webhook request (e.g. Authorization), as a JSON object of names to "
        "values; from the environment so that no credential needs to be on a command line or in a URL.",
    )

    @field_validator("processing_guarantee", mode="before")
    @classmethod
    def _exactly_once_is_refused(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "exactly_once":
            raise ValueError(
                "exactly_once is not supported: its transaction markers hide the skipped-record check that keeps "
                "ledger entries from being lost; the service is effectively-once with at_least_once "
                "(docs/RELIABILITY.md)"
            )
        return value

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
        if not IDENTIFIER.fullmatch(value):
            raise ValueError(f"app_id {value!r} must match {IDENTIFIER.pattern}")
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
            if not IDENTIFIER.fullmatch(channel):
                raise ValueError(f"channel {channel!r} must match {IDENTIFIER.pattern}")
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

    @field_validator("api_token", mode="before")
    @classmethod
    def _blank_token_means_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_token")
    @classmethod
    def _token_is_long_and_header_safe(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the value: it is a secret even when it is a bad one.
        if value is not None and not API_TOKEN_PATTERN.fullmatch(value.get_secret_value()):
            raise ValueError("api_token must be 16 to 512 visible ASCII characters (no spaces)")
        return value

    @field_validator("webhook_headers", mode="before")
    @classmethod
    def _parse_header_object(cls, value: Any) -> Any:
        # The messages never repeat the text: it holds credentials.
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except ValueError:
                raise ValueError('webhook_headers must be a JSON object, e.g. {"Authorization": "Bearer ..."}') from None
            if not isinstance(value, dict):
                raise ValueError('webhook_headers must be a JSON object, e.g. {"Authorization": "Bearer ..."}')
        return value

    @field_validator("webhook_headers")
    @classmethod
    def _headers_are_safe(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            if not HEADER_NAME_PATTERN.fullmatch(name):
                raise ValueError(f"webhook_headers: {name!r} is not an HTTP header name")
            if name.lower() in HEADERS_SET_BY_THE_WEBHOOK:
                raise ValueError(f"webhook_headers: {name} is set by the webhook itself")
            if not HEADER_VALUE_PATTERN.fullmatch(value.get_secret_value()):
                raise ValueError(f"webhook_headers: the value of {name} has characters a header cannot carry "
                                 "(line breaks, non-ASCII) or is longer than 8192")
        return headers

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_upper_case(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _security_settings_are_complete(self) -> Settings:
        uses_sasl = self.security_protocol.startswith("SASL_")
        if uses_sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, sasl_username and sasl_password"
            )
        if not uses_sasl and (self.sasl_mechanism or self.sasl_username or self.sasl_password):
            raise ValueError("sasl_* settings are set but security_protocol is not SASL_PLAINTEXT or SASL_SSL")
        uses_tls = self.security_protocol in ("SSL", "SASL_SSL")
        tls_files = (self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile, self.ssl_key_password)
        if not uses_tls and any(value is not None for value in tls_files):
            raise ValueError("ssl_* settings are set but security_protocol is not SSL or SASL_SSL")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("mutual TLS needs both ssl_certfile and ssl_keyfile")
        return self

    @property
    def uses_embedded_broker(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def engine_limits(self) -> EngineLimits:
        """The rules' bounds (app.engine.limits): the service and replay must use the same ones."""
        return EngineLimits(
            duplicate_window_ms=self.duplicate_window_seconds * 1000,
            reservation_retention_ms=self.reservation_retention_seconds * 1000,
            max_event_time_skew_ms=self.max_event_time_skew_seconds * 1000,
        )
