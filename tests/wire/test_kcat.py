"""A client we did not write reads an availability topic: kcat (librdkafka's command-line client).

Debian's kcat is built without Avro support (`kcat -V` lists no `avro` feature), so `-s value=avro -r <registry>`
is not available there; this test checks what any client sees: keys, partitions, offsets, and the raw value bytes,
Confluent framing included. `.ci/run` installs kcat when it can; where it is missing the test skips and says why.

Against the embedded Tansu broker kcat needs two options it does not need against Apache Kafka (where the plain
`kcat -C -b <bootstrap> -t availability.<channel> -e -f '%k %o\n'` of docs/OPERATIONS.md works): Debian's kcat
1.7.1 bundles librdkafka 2.0.2, which fails to parse Tansu's ApiVersions v3 answer ("Protocol read buffer
underflow for ApiVersion v3"), so the version query is switched off with a 0.9 fallback; and librdkafka's
ListOffsets v0 then fails on Tansu's answer too, so reading starts at absolute offset 0 (`-o 0`) instead of the
logical "beginning". Neither changes what is read.
"""

from __future__ import annotations

import shutil
import subprocess
from collections import defaultdict

import pytest
from confluent_kafka import Producer

from app.kafka.admin import create_topics
from app.wire.serialization import MAGIC_BYTE, AvroCodec
from app.wire.topics import availability_key, availability_topic
from tests.wire.test_schemas import CHANNEL_AVAILABILITY

CHANNEL = "ecommerce"
KCAT_TIMEOUT_SECONDS = 60
TANSU_COMPATIBILITY = ("-X", "api.version.request=false", "-X", "broker.version.fallback=0.9.0", "-o", "0")


def _kcat() -> str:
    kcat = shutil.which("kcat") or shutil.which("kafkacat")  # older Debian and Ubuntu name it kafkacat
    if kcat is None:
        pytest.skip("kcat is not installed (Debian/Ubuntu: apt-get install kcat; .ci/run tries that)")
    return kcat


def _records() -> list[tuple[str, dict]]:
    """Two versions of three keys: NETWORK keys (`sku`) and one LOCATION key (`sku/location`)."""
    records = []
    for version in (1, 2):
        for sku, location in (("SKU-1001", None), ("SKU-1002", None), ("SKU-1003", "store-042")):
            value = {**CHANNEL_AVAILABILITY, "channel": CHANNEL, "sku": sku, "location": location,
                     "version": version, "quantity": 10 * version, "status": "IN_STOCK"}
            records.append((availability_key(sku, location), value))
    return records


@pytest.fixture
def published(dedicated_broker, settings_factory):
    """The records on `availability.ecommerce` of a broker of this test's own, as (partition, offset) -> (key,
    value bytes), taken from the producer's delivery reports."""
    _kcat()  # skip before starting anything when kcat is missing
    settings = settings_factory(channels=(CHANNEL,), partitions=2,
                                kafka_bootstrap_servers=dedicated_broker.bootstrap_servers)
    create_topics(settings, dedicated_broker.bootstrap_servers)
    codec = AvroCodec(settings)
    topic = availability_topic(CHANNEL)
    producer = Producer({"bootstrap.servers": dedicated_broker.bootstrap_servers, "partitioner": "murmur2_random",
                         "linger.ms": 0, "acks": "all"})
    delivered: dict[tuple[int, int], tuple[str, bytes]] = {}
    failures = []

    def on_delivery(error, message):
        if error is not None:
            failures.append(error)
        else:
            delivered[(message.partition(), message.offset())] = (message.key().decode(), message.value())

    for key, value in _records():
        producer.produce(topic.name, codec.encode(topic, value), key=key.encode(), on_delivery=on_delivery)
        producer.flush(30)  # one record per batch
    assert not failures, failures
    assert len(delivered) == len(_records())
    return dedicated_broker.bootstrap_servers, topic.name, codec, delivered


def _run_kcat(*args: str) -> bytes:
    result = subprocess.run([_kcat(), *TANSU_COMPATIBILITY, *args], capture_output=True, timeout=KCAT_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


@pytest.mark.integration
def test_kcat_lists_the_keys_and_offsets_of_an_availability_topic(published):
    bootstrap, topic, _, delivered = published
    output = _run_kcat("-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-f", "%k %o\n").decode()
    lines = sorted(output.splitlines())
    assert lines == sorted(f"{key} {offset}" for (_, offset), (key, _) in delivered.items())


@pytest.mark.integration
def test_kcat_reads_the_confluent_framed_values_byte_for_byte(published):
    bootstrap, topic, codec, delivered = published
    # Per record: a header line with partition, key, offset and value size, then exactly that many value bytes.
    output = _run_kcat("-C", "-b", bootstrap, "-t", topic, "-e", "-q", "-f", "%p %k %o %S\n%s\n")
    seen: dict[tuple[int, int], tuple[str, bytes]] = {}
    position = 0
    while position < len(output):
        header_end = output.index(b"\n", position)
        partition, key, offset, size = output[position:header_end].decode().split(" ")
        start = header_end + 1
        value = output[start : start + int(size)]
        assert output[start + int(size) : start + int(size) + 1] == b"\n"
        seen[(int(partition), int(offset))] = (key, value)
        position = start + int(size) + 1
    assert seen == delivered

    schema_id = codec.serde(topic).schema_id
    per_key_versions = defaultdict(list)
    for (partition, offset), (key, value) in sorted(seen.items()):
        assert value[0] == MAGIC_BYTE
        assert int.from_bytes(value[1:5], "big") == schema_id
        decoded = codec.decode(topic, value).value
        per_key_versions[key].append(decoded["version"])
    # All records of a key on one partition, in version order: what a connector relies on.
    assert dict(per_key_versions) == {"SKU-1001": [1, 2], "SKU-1002": [1, 2], "SKU-1003/store-042": [1, 2]}
    partitions_of = defaultdict(set)
    for (partition, _), (key, _) in seen.items():
        partitions_of[key].add(partition)
    assert all(len(partitions) == 1 for partitions in partitions_of.values())
