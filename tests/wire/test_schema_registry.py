"""The codec against a Schema Registry over HTTP: the requests it makes, and (marked `kafka`) a real registry.

The mock:// registry of tests/wire/test_serialization.py ignores compatibility settings, so these tests check the HTTP
path of confluent-kafka's SchemaRegistryClient: a stub speaking the few endpoints the codec uses, on loopback, and
the Confluent registry image of docker-compose.yml in Docker where an engine answers.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from app.kafka.broker import free_loopback_port
from app.wire.serialization import AvroCodec, SchemaRegistrationError, load_schema_library
from app.wire.topics import all_topics
from tests.serving import serving
from tests.wire.test_schemas import CHANNEL_AVAILABILITY

CHANNELS = ("ecommerce", "marketplace")
COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"
REGISTRY_STARTUP_TIMEOUT_SECONDS = 120.0


# ------------------------------------------------------------------------------------------------ a stub over HTTP
class StubRegistry(ThreadingHTTPServer):
    """Config, register and get-by-id, as Confluent's REST API answers them; ids are per distinct schema (as a real
    registry: the same schema under two subjects has one id). Every request is recorded."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.requests: list[tuple[str, str, dict | None]] = []
        self.ids: dict[str, int] = {}
        self.compatibility: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _StubHandler(BaseHTTPRequestHandler):
    server: StubRegistry

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _body(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _answer(self, status: int, document: dict) -> None:
        payload = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _route(self, method: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        parts = [urllib.parse.unquote(part) for part in path.strip("/").split("/")]
        body = self._body() if method in ("PUT", "POST") else None
        self.server.requests.append((method, "/".join(parts), body))
        if method == "PUT" and len(parts) == 2 and parts[0] == "config":
            self.server.compatibility[parts[1]] = body["compatibility"]
            return self._answer(200, {"compatibility": body["compatibility"]})
        if method == "POST" and len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
            schema_id = self.server.ids.setdefault(body["schema"], len(self.server.ids) + 1)
            return self._answer(200, {"id": schema_id})
        if method == "GET" and len(parts) == 3 and parts[:2] == ["schemas", "ids"]:
            for schema_str, schema_id in self.server.ids.items():
                if schema_id == int(parts[2]):
                    return self._answer(200, {"schema": schema_str})
            return self._answer(404, {"error_code": 40403, "message": "Schema not found"})
        return self._answer(404, {"error_code": 404, "message": f"stub has no {method} /{path}"})

    def do_GET(self) -> None:
        self._route("GET")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_POST(self) -> None:
        self._route("POST")


@pytest.fixture
def stub_registry() -> Iterator[StubRegistry]:
    with serving(StubRegistry()) as server:
        yield server


def test_codec_sets_backward_then_registers_each_value_subject_over_http(settings_factory, stub_registry):
    settings = settings_factory(channels=CHANNELS, schema_registry_url=stub_registry.url)
    codec = AvroCodec(settings)

    expected = []
    for topic in all_topics(settings):
        if topic.value_record is not None:
            expected += [
                ("PUT", f"config/{topic.value_subject}", {"compatibility": "BACKWARD"}),
                ("POST", f"subjects/{topic.value_subject}/versions", None),
            ]
    assert [(method, path, body if method == "PUT" else None) for method, path, body in stub_registry.requests] \
        == expected
    registered = [json.loads(body["schema"])["name"] for method, _, body in stub_registry.requests if method == "POST"]
    assert registered == [
        f"inventory.availability.{topic.value_record}" for topic in all_topics(settings) if topic.value_record
    ]
    # A real registry gives one id per distinct schema: the two availability subjects share theirs.
    ids = codec.schema_ids
    assert ids["availability.ecommerce-value"] == ids["availability.marketplace-value"]


def test_a_process_with_an_empty_cache_resolves_ids_over_http(settings_factory, stub_registry):
    settings = settings_factory(channels=CHANNELS, schema_registry_url=stub_registry.url)
    data = AvroCodec(settings).encode("availability.ecommerce", CHANNEL_AVAILABILITY)
    # confluent-kafka's own deserializer, with a client of its own, fetches the writer schema by id.
    from confluent_kafka.schema_registry import SchemaRegistryClient

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": stub_registry.url}))
    assert deserialize(data, SerializationContext("availability.ecommerce", MessageField.VALUE)) == CHANNEL_AVAILABILITY
    assert any(method == "GET" and path.startswith("schemas/ids/") for method, path, _ in stub_registry.requests)


def test_an_unreachable_registry_is_a_registration_error(settings_factory):
    settings = settings_factory(channels=CHANNELS, schema_registry_url=f"http://127.0.0.1:{free_loopback_port()}")
    with pytest.raises(SchemaRegistrationError, match="BACKWARD"):
        AvroCodec(settings)


# -------------------------------------------------------------------------- the real registry image, in Docker
def _registry_image() -> str:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed; the registry image is read from compose")
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]["schema-registry"]["image"]


@pytest.fixture(scope="module")
def real_registry(kafka_container: str) -> Iterator[str]:
    """The docker-compose Schema Registry image, storing its schemas in the `kafka_container` broker. It shares the
    host's network (Linux Docker engines) because that broker advertises a localhost address."""
    from testcontainers.core.container import DockerContainer

    port = free_loopback_port()
    container = (
        DockerContainer(_registry_image())
        .with_kwargs(network_mode="host")
        .with_env("SCHEMA_REGISTRY_HOST_NAME", "localhost")
        .with_env("SCHEMA_REGISTRY_LISTENERS", f"http://127.0.0.1:{port}")
        .with_env("SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS", f"PLAINTEXT://{kafka_container}")
        .with_env("SCHEMA_REGISTRY_KAFKASTORE_TOPIC_REPLICATION_FACTOR", "1")
    )
    with container:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + REGISTRY_STARTUP_TIMEOUT_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/subjects", timeout=5) as response:
                    if response.status == 200:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Schema Registry at {url} did not answer within "
                                   f"{REGISTRY_STARTUP_TIMEOUT_SECONDS}s (host networking needs a Linux Docker engine)")
            time.sleep(1)
        yield url


@pytest.mark.kafka
def test_a_real_registry_holds_backward_subjects_and_refuses_an_incompatible_change(settings_factory, real_registry):
    settings = settings_factory(channels=CHANNELS, schema_registry_url=real_registry)
    codec = AvroCodec(settings)
    topic = "availability.ecommerce"
    assert codec.registry.get_compatibility(f"{topic}-value") == "BACKWARD"

    data = codec.encode(topic, CHANNEL_AVAILABILITY)
    from confluent_kafka.schema_registry import SchemaRegistryClient

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": real_registry}))
    assert deserialize(data, SerializationContext(topic, MessageField.VALUE)) == CHANNEL_AVAILABILITY

    # A new required field cannot read records written before it: BACKWARD refuses it.
    incompatible = load_schema_library().expanded("ChannelAvailability")
    incompatible["fields"].append({"name": "region", "type": "string"})
    with pytest.raises(Exception, match="(?i)incompatible|409"):
        codec.registry.register_schema(f"{topic}-value", Schema(json.dumps(incompatible), "AVRO"))
    # The same field with a default is a compatible evolution.
    compatible = load_schema_library().expanded("ChannelAvailability")
    compatible["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    assert codec.registry.register_schema(f"{topic}-value", Schema(json.dumps(compatible), "AVRO")) > 0
