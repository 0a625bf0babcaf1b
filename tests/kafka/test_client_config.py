"""Kafka client security from settings: one config for every confluent-kafka client, Faust credentials, secrets
never shown."""

from __future__ import annotations

import ssl
import subprocess

import faust
import pytest
from pydantic import ValidationError

from app.kafka.client_config import (
    client_config,
    describe_identity,
    faust_broker_credentials,
    security_config,
    ssl_context,
)
from app.settings import Settings

PASSWORD = "pa55-w0rd-never-shown"


def sasl(settings_factory, protocol="SASL_SSL", mechanism="SCRAM-SHA-512", **extra) -> Settings:
    return settings_factory(security_protocol=protocol, sasl_mechanism=mechanism, sasl_username="availability",
                            sasl_password=PASSWORD, **extra)


@pytest.fixture(scope="module")
def client_certificate(tmp_path_factory) -> tuple:
    """A self-signed certificate and key (PEM), standing in for a CA bundle and a client certificate."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "client.crt", directory / "client.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=availability-test"],
        check=True, capture_output=True,
    )
    return cert, key


def test_plaintext_adds_nothing(settings_factory):
    settings = settings_factory()
    assert security_config(settings) == {}
    assert client_config(settings, "broker:9092", **{"linger.ms": 5}) == {"bootstrap.servers": "broker:9092",
                                                                            "linger.ms": 5}
    assert faust_broker_credentials(settings) is None


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_scram_reaches_every_client_config(settings_factory, mechanism):
    settings = sasl(settings_factory, protocol="SASL_PLAINTEXT", mechanism=mechanism)
    config = client_config(settings, "broker:9093", **{"group.id": "g"})
    assert config == {"bootstrap.servers": "broker:9093", "security.protocol": "sasl_plaintext",
                      "sasl.mechanism": mechanism, "sasl.username": "availability", "sasl.password": PASSWORD,
                      "group.id": "g"}
    credentials = faust_broker_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value) == ("SASL_PLAINTEXT", mechanism)
    assert (credentials.username, credentials.password, credentials.ssl_context) == ("availability", PASSWORD, None)
    assert PASSWORD not in repr(credentials)


def test_sasl_ssl_verifies_the_broker_with_the_ca_file(settings_factory, client_certificate):
    cert, _ = client_certificate
    settings = sasl(settings_factory, ssl_cafile=cert)
    config = security_config(settings)
    assert config["security.protocol"] == "sasl_ssl" and config["ssl.ca.location"] == str(cert)
    credentials = faust_broker_credentials(settings)
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED and credentials.ssl_context.check_hostname


def test_mutual_tls_presents_the_client_certificate(settings_factory, client_certificate):
    cert, key = client_certificate
    settings = settings_factory(security_protocol="SSL", ssl_cafile=cert, ssl_certfile=cert, ssl_keyfile=key)
    config = security_config(settings)
    assert config == {"security.protocol": "ssl", "ssl.ca.location": str(cert),
                      "ssl.certificate.location": str(cert), "ssl.key.location": str(key)}
    credentials = faust_broker_credentials(settings)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"
    assert isinstance(ssl_context(settings), ssl.SSLContext)
    assert "client certificate" in describe_identity(settings)


def test_a_key_that_does_not_match_fails_when_the_context_is_built(settings_factory, client_certificate, tmp_path):
    cert, _ = client_certificate
    other_key = tmp_path / "other.key"
    subprocess.run(["openssl", "genrsa", "-out", str(other_key), "2048"], check=True, capture_output=True)
    settings = settings_factory(security_protocol="SSL", ssl_certfile=cert, ssl_keyfile=other_key)
    with pytest.raises(ssl.SSLError):
        ssl_context(settings)


@pytest.mark.parametrize(
    "overrides, complaint",
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_mechanism, sasl_username and sasl_password"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256", "sasl_username": "u"},
         "needs sasl_mechanism"),
        ({"sasl_username": "u"}, "security_protocol is not SASL"),
        ({"ssl_cafile": "ca.pem"}, "security_protocol is not SSL"),
        ({"security_protocol": "SSL", "ssl_certfile": "c.pem"}, "both ssl_certfile and ssl_keyfile"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI", "sasl_username": "u", "sasl_password": "p"},
         "sasl_mechanism"),
    ],
)
def test_incomplete_or_contradictory_security_settings_are_refused(settings_factory, overrides, complaint):
    with pytest.raises(ValidationError, match=complaint):
        settings_factory(**overrides)


def test_secrets_never_appear_in_settings_repr_or_str(settings_factory, client_certificate):
    cert, key = client_certificate
    settings = sasl(settings_factory, ssl_certfile=cert, ssl_keyfile=key, ssl_key_password="key-secret-too")
    for text in (repr(settings), str(settings), describe_identity(settings)):
        assert PASSWORD not in text and "key-secret-too" not in text
    assert settings.sasl_password.get_secret_value() == PASSWORD


def test_security_settings_come_from_the_environment(monkeypatch):
    for name, value in {
        "AVAILABILITY_SECURITY_PROTOCOL": "SASL_SSL", "AVAILABILITY_SASL_MECHANISM": "SCRAM-SHA-256",
        "AVAILABILITY_SASL_USERNAME": "svc", "AVAILABILITY_SASL_PASSWORD": PASSWORD,
        "AVAILABILITY_CREATE_TOPICS": "false", "AVAILABILITY_RECOVERY_STALL_TIMEOUT_SECONDS": "30",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (settings.security_protocol, settings.sasl_mechanism, settings.sasl_username) == (
        "SASL_SSL", "SCRAM-SHA-256", "svc")
    assert settings.sasl_password.get_secret_value() == PASSWORD
    assert settings.create_topics is False and settings.recovery_stall_timeout_seconds == 30.0
