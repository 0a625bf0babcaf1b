"""Topic creation on the embedded broker: every registry topic, idempotently, with its configs."""

import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from app.kafka.admin import create_topics, topic_config, wait_for_topics
from app.wire.topics import LEDGER, CleanupPolicy, all_topics, availability_topic


@pytest.fixture
def settings(settings_factory):
    # A channel of its own, so this test creates at least one topic whatever ran before on the shared broker.
    return settings_factory(channels=("ecommerce", f"test-{uuid.uuid4().hex[:8]}"), partitions=3)


def describe(bootstrap_servers, *names):
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name) for name in names])
    return {resource.name: {key: entry.value for key, entry in future.result(timeout=10).items()}
            for resource, future in futures.items()}


@pytest.mark.integration
def test_creates_every_topic_idempotently_with_configs(bootstrap_servers, settings):
    own_topic = availability_topic(settings.channels[-1])
    created = create_topics(settings, bootstrap_servers)
    assert own_topic.name in created

    assert create_topics(settings, bootstrap_servers) == []  # already there: nothing to do, no error

    names = [topic.name for topic in all_topics(settings)]
    wait_for_topics(bootstrap_servers, names, timeout=5)
    metadata = AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(timeout=10)
    assert set(names) <= set(metadata.topics)
    assert len(metadata.topics[own_topic.name].partitions) == 3

    configs = describe(bootstrap_servers, own_topic.name, LEDGER.name)
    assert configs[own_topic.name]["cleanup.policy"] == "compact"
    assert configs[own_topic.name]["retention.ms"] == topic_config(own_topic, settings)["retention.ms"]
    assert configs[LEDGER.name]["cleanup.policy"] == "delete"
    assert int(configs[LEDGER.name]["retention.ms"]) > 0


def test_registry_has_one_availability_topic_per_channel(settings):
    names = [topic.name for topic in all_topics(settings)]
    assert len(names) == len(set(names))
    assert [name for name in names if name.startswith("availability.")] == [
        f"availability.{channel}" for channel in settings.channels
    ]


def test_topic_config_always_names_retention(settings_factory):
    settings = settings_factory(topic_retention_ms=86_400_000)
    for topic in all_topics(settings):
        config = topic_config(topic, settings)
        assert config["cleanup.policy"] == topic.cleanup_policy.value
        expected = "-1" if topic.cleanup_policy is CleanupPolicy.COMPACT else "86400000"
        assert config["retention.ms"] == expected
