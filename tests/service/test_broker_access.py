"""Starting against a broker the service may not use as it wishes:
- a broker that refuses our credentials (Tansu with `--authentication`, which knows no user): the worker and the
  CLI fail at the first refusal with ONE clear line, not an endless retry loop, and the password is never printed;
- AVAILABILITY_CREATE_TOPICS=false: the worker creates nothing, names the missing topics, and once an admin has
  run `availability topics create` it works with no topic of its own making."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient

from app.engine import ChannelGranularity, event_to_record
from app.errors import EXIT_CONFIGURATION_ERROR
from app.kafka.admin import create_topics, required_topic_names
from app.kafka.broker import EmbeddedBroker
from app.wire.serialization import AvroCodec
from app.wire.topics import POLICY_CHANGES, STORE_TRANSACTIONS, availability_topic
from tests.engine.factories import channel, policy, receipt
from tests.service.harness import (
    REPO_ROOT,
    WORKER_READY,
    SourceProducer,
    read_topic,
    settings_environment,
    wait_for_ledger_entries,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PASSWORD = "Tr0ub4dor-and-3-never-logged"
FAIL_FAST_SECONDS = 20.0  # interpreter and Faust imports take a few seconds on a loaded machine; retries would be endless


@pytest.fixture
def authenticating_broker(tmp_path):
    with EmbeddedBroker(tmp_path / "authenticating-broker.log", authentication=True) as broker:
        yield broker


def sasl_settings(service_settings, servers: str, mechanism: str):
    return service_settings(kafka_bootstrap_servers=servers, security_protocol="SASL_PLAINTEXT",
                            sasl_mechanism=mechanism, sasl_username="availability", sasl_password=PASSWORD)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_worker_with_refused_credentials_fails_fast_with_one_line(authenticating_broker, service_settings, workers,
                                                                   mechanism):
    settings = sasl_settings(service_settings, authenticating_broker.bootstrap_servers, mechanism)
    started = time.monotonic()
    worker = workers(settings)
    status = worker.process.wait(timeout=60)
    elapsed = time.monotonic() - started
    log = worker.log_text()
    assert status == EXIT_CONFIGURATION_ERROR, log[-3000:]
    assert elapsed < FAIL_FAST_SECONDS, f"took {elapsed:.1f}s to give up"
    refusals = [line for line in log.splitlines() if "refused" in line]
    assert len(refusals) == 1, log[-3000:]
    assert f"SASL_PLAINTEXT {mechanism} as user 'availability'" in refusals[0]
    assert "Traceback" not in log
    assert PASSWORD not in log


def test_cli_with_refused_credentials_fails_fast_with_one_line(authenticating_broker, service_settings):
    settings = sasl_settings(service_settings, authenticating_broker.bootstrap_servers, "SCRAM-SHA-512")
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "app.tools.cli", "topics", "create"], cwd=REPO_ROOT, env=settings_environment(settings),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    elapsed = time.monotonic() - started
    output = completed.stdout + completed.stderr
    assert completed.returncode == 2, output
    assert elapsed < FAIL_FAST_SECONDS
    assert output.strip().splitlines() == [
        line for line in output.strip().splitlines() if line.startswith("availability: error: the broker at")
    ] and len(output.strip().splitlines()) == 1, output
    assert PASSWORD not in output


def test_without_create_rights_the_worker_names_the_missing_topics(service_settings, workers, bootstrap_servers):
    settings = service_settings(create_topics=False)
    worker = workers(settings)
    status = worker.process.wait(timeout=60)
    log = worker.log_text()
    assert status == EXIT_CONFIGURATION_ERROR, log[-3000:]
    errors = [line for line in log.splitlines() if "AVAILABILITY_CREATE_TOPICS is false" in line]
    assert len(errors) == 1, log[-3000:]
    for name in ("ledger", "source.stock-movements", "availability.ecommerce", f"{settings.app_id}-sku-state-changelog",
                 f"{settings.app_id}-partition-state-changelog", f"{settings.app_id}-__assignor-__leader"):
        assert name in errors[0]
    assert "availability topics create" in errors[0]
    assert set(AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(timeout=10).topics) <= {
        "__consumer_offsets"}, "the worker created topics although it may not"


def test_topics_created_up_front_let_the_worker_run_without_create_rights(service_settings, workers,
                                                                         bootstrap_servers):
    settings = service_settings(create_topics=False)
    created = create_topics(settings.model_copy(update={"create_topics": True}), bootstrap_servers)
    assert set(created) == set(required_topic_names(settings))
    before = set(AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(timeout=10).topics)

    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=60)
    source = SourceProducer(settings, AvroCodec(settings))
    rules = (channel("ecommerce"), channel("marketplace", priority=1),
             channel("store-pickup", priority=2, granularity=ChannelGranularity.LOCATION))
    source.send(POLICY_CHANGES.name, event_to_record(policy(1, stores=("S1",), dcs=(), channels=rules))[1])
    source.flush()
    wait_for_ledger_entries(bootstrap_servers, source.codec, settings.partitions, "PolicyChange")
    source.send(STORE_TRANSACTIONS.name, event_to_record(receipt(10, sku="SKU-A", event_id="r1", time=1000))[1])
    source.flush()
    ecommerce = availability_topic("ecommerce").name
    read_topic(bootstrap_servers, ecommerce, settings.partitions, idle_seconds=0, timeout=60,
               until=lambda records: any(r.key == b"SKU-A" for r in records))

    after = set(AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(timeout=10).topics)
    assert after - before <= {"__consumer_offsets"}, f"the worker created {sorted(after - before)}"
    assert "Traceback" not in worker.log_text()
