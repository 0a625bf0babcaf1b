"""Create the topics of app.topics on a broker, idempotently.

Completion is judged from topic metadata only. Never from watermarks: the embedded Tansu broker reports a
partition's high watermark as the start of its last batch, not the offset after the last record.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from app.topics import CleanupPolicy, TopicSpec, all_topics

if TYPE_CHECKING:
    from app.settings import Settings

NO_TIME_LIMIT_MS = -1


class TopicAdminError(Exception):
    """Topics could not be created or did not appear in time. The message names each topic and the broker's
    error; check the broker address, its log, and that partitions/replication_factor suit the cluster."""


def topic_config(topic: TopicSpec, settings: Settings) -> dict[str, str]:
    """Broker configs of a topic. retention.ms is always explicit because the embedded Tansu broker requires it;
    compacted topics keep every key's latest record forever (-1), so connectors can bootstrap from them."""
    retention_ms = NO_TIME_LIMIT_MS if topic.cleanup_policy is CleanupPolicy.COMPACT else settings.topic_retention_ms
    return {"cleanup.policy": topic.cleanup_policy.value, "retention.ms": str(retention_ms)}


def new_topics(settings: Settings) -> list[NewTopic]:
    return [
        NewTopic(
            topic.name,
            num_partitions=topic.partitions(settings),
            replication_factor=settings.replication_factor,
            config=topic_config(topic, settings),
        )
        for topic in all_topics(settings)
    ]


def create_topics(settings: Settings, bootstrap_servers: str, timeout: float = 30.0) -> list[str]:
    """Create every topic of the registry that does not exist yet; returns the names created now.

    Topics that already exist are left as they are (their partitions and configs are not checked or changed)."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    futures = admin.create_topics(new_topics(settings), operation_timeout=timeout, request_timeout=timeout)
    created, failures = [], []
    for name, future in futures.items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as error:
            kafka_error = error.args[0] if error.args else None
            if isinstance(kafka_error, KafkaError) and kafka_error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            failures.append(f"{name}: {kafka_error or error}")
        except Exception as error:  # timeouts surface as concurrent.futures.TimeoutError
            failures.append(f"{name}: {type(error).__name__}: {error}")
    if failures:
        raise TopicAdminError(f"could not create topics on {bootstrap_servers}: " + "; ".join(sorted(failures)))
    wait_for_topics(bootstrap_servers, [topic.name for topic in all_topics(settings)], timeout=timeout)
    return sorted(created)


def wait_for_topics(bootstrap_servers: str, names: Iterable[str], timeout: float = 30.0) -> None:
    """Wait until metadata lists every topic with all its partitions led by a broker."""
    wanted = set(names)
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    deadline = time.monotonic() + timeout
    missing = wanted
    while True:
        try:
            metadata = admin.list_topics(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
            missing = {name for name in wanted if not _is_ready(metadata.topics.get(name))}
        except KafkaException:  # broker not answering yet: keep waiting until the deadline
            pass
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise TopicAdminError(f"topics not ready on {bootstrap_servers} after {timeout}s: {sorted(missing)}")
        time.sleep(0.1)


def _is_ready(topic_metadata) -> bool:
    return (
        topic_metadata is not None
        and topic_metadata.error is None
        and bool(topic_metadata.partitions)
        and all(partition.leader >= 0 for partition in topic_metadata.partitions.values())
    )
