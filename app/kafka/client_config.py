"""Kafka client configuration shared by every client of the project: one place turns Settings into security
options, for confluent-kafka (admin, producers, consumers of the tools and connectors) and for Faust (aiokafka).

    Producer(client_config(settings, bootstrap_servers, **{"linger.ms": 5}))
    faust.App(..., broker_credentials=faust_broker_credentials(settings))
    check_broker_access(settings, bootstrap_servers, timeout=10)   # fail fast on refused credentials

Secrets stay `SecretStr` until the moment a client is built; nothing here logs a config dict.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer

from app.errors import UserError

if TYPE_CHECKING:
    from app.settings import Settings

logger = logging.getLogger(__name__)

# librdkafka repeats a refused login every ~50 ms on its own log; the error is reported once, by the caller.
_QUIET_LIBRDKAFKA_LOGGER = logging.getLogger(f"{__name__}.librdkafka")
_QUIET_LIBRDKAFKA_LOGGER.setLevel(logging.CRITICAL)
_QUIET_LIBRDKAFKA_LOGGER.propagate = False
_QUIET_LIBRDKAFKA_LOGGER.addHandler(logging.NullHandler())


class BrokerAccessError(UserError):
    """The broker refused this client (wrong credentials, TLS handshake failure) or did not answer. The message is
    one line naming the broker, the security protocol and user, and what to check; it never holds a secret."""


def security_config(settings: Settings) -> dict[str, Any]:
    """librdkafka security properties for `settings` (empty for PLAINTEXT)."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return {}
    config: dict[str, Any] = {"security.protocol": protocol.lower()}
    if protocol.startswith("SASL_"):
        assert settings.sasl_password is not None  # Settings validates that SASL settings are complete
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username
        config["sasl.password"] = settings.sasl_password.get_secret_value()
    if protocol in ("SSL", "SASL_SSL"):
        if settings.ssl_cafile is not None:
            config["ssl.ca.location"] = str(settings.ssl_cafile)
        if settings.ssl_certfile is not None:
            config["ssl.certificate.location"] = str(settings.ssl_certfile)
            config["ssl.key.location"] = str(settings.ssl_keyfile)
        if settings.ssl_key_password is not None:
            config["ssl.key.password"] = settings.ssl_key_password.get_secret_value()
    return config


def client_config(settings: Settings, bootstrap_servers: str | None = None, **options: Any) -> dict[str, Any]:
    """A confluent-kafka config dict: bootstrap servers, the security properties, then `options` (client-specific
    properties such as `group.id` or `linger.ms`; pass them as `**{"linger.ms": 5}`)."""
    servers = bootstrap_servers or settings.kafka_bootstrap_servers
    if servers is None:
        raise ValueError("no bootstrap servers: start the embedded broker first (app.kafka.broker.bootstrap_servers_for)")
    config: dict[str, Any] = {"bootstrap.servers": servers}
    config.update(security_config(settings))
    config.update(options)
    return config


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context: verifies the brokers against `ssl_cafile` (or the system store) and presents
    `ssl_certfile`/`ssl_keyfile` when set (mutual TLS)."""
    context = ssl.create_default_context(
        purpose=ssl.Purpose.SERVER_AUTH, cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
    )
    if settings.ssl_certfile is not None:
        password = settings.ssl_key_password.get_secret_value() if settings.ssl_key_password else None
        context.load_cert_chain(str(settings.ssl_certfile), str(settings.ssl_keyfile), password=password)
    return context


def faust_broker_credentials(settings: Settings):
    """Faust's `broker_credentials` for `settings`: None for PLAINTEXT, faust.SSLCredentials for SSL (mutual TLS
    with a client certificate), faust.SASLCredentials otherwise (with a TLS context for SASL_SSL)."""
    import faust

    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(ssl_context(settings))
    assert settings.sasl_password is not None
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        mechanism=settings.sasl_mechanism,
        ssl_context=ssl_context(settings) if protocol == "SASL_SSL" else None,
    )


def describe_identity(settings: Settings) -> str:
    """Who this client connects as, for error messages: never the password."""
    if settings.security_protocol.startswith("SASL_"):
        return f"{settings.security_protocol} {settings.sasl_mechanism} as user {settings.sasl_username!r}"
    if settings.ssl_certfile is not None:
        return f"{settings.security_protocol} with client certificate {settings.ssl_certfile}"
    return settings.security_protocol


def check_broker_access(settings: Settings, bootstrap_servers: str, timeout: float = 30.0,
                        on_unreachable: Callable[[], None] | None = None):
    """Return the cluster metadata once the broker answers; raise BrokerAccessError at the FIRST refused login or
    TLS failure instead of letting the client retry forever, or after `timeout` seconds without an answer.
    `on_unreachable` is called once, when the first attempt gets no answer (e.g. to say that it waits)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    refusals: list[str] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL) and not refusals:
            refusals.append(error.str())

    admin = AdminClient(
        client_config(settings, bootstrap_servers, error_cb=on_error, logger=_QUIET_LIBRDKAFKA_LOGGER)
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            return admin.list_topics(timeout=max(0.1, min(0.5, deadline - time.monotonic())))
        except KafkaException:
            pass
        admin.poll(0)  # serves error_cb
        if not refusals and on_unreachable is not None:
            on_unreachable()
            on_unreachable = None
        if refusals:
            raise BrokerAccessError(
                f"the broker at {bootstrap_servers} refused the connection ({describe_identity(settings)}): "
                f"{_without_secret(refusals[0], settings)}; check AVAILABILITY_SASL_USERNAME/_PASSWORD/_MECHANISM "
                "or the AVAILABILITY_SSL_* files against the broker's configuration"
            )
        if time.monotonic() >= deadline:
            raise BrokerAccessError(
                f"cannot reach Kafka at {bootstrap_servers} within {timeout:g}s ({describe_identity(settings)}); "
                "start the broker or point KAFKA_BOOTSTRAP_SERVERS at one that runs, and check that "
                "AVAILABILITY_SECURITY_PROTOCOL matches its listener"
            )


def _without_secret(text: str, settings: Settings) -> str:
    for secret in (settings.sasl_password, settings.ssl_key_password):
        if secret is not None and secret.get_secret_value():
            text = text.replace(secret.get_secret_value(), "**********")
    return text


def consumer_for(bootstrap_servers: str, settings: Settings | None = None, **extra: object) -> Consumer:
    """A reading consumer; `settings` supply the client security options (none: a plaintext connection)."""
    # A group id is required by the client, but nothing joins or commits: partitions are assigned explicitly.
    options = {**extra,
        "group.id": f"availability-reader-{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 16 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
    }
    if settings is None:
        return Consumer({"bootstrap.servers": bootstrap_servers, **options})
    return Consumer(client_config(settings, bootstrap_servers, **options))
