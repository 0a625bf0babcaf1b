"""Create the topics of app.wire.topics on a broker, idempotently.

`availability topics create` also creates the topics Faust would otherwise create at run time (the tables'
changelogs and the leader-election topic), so a worker with AVAILABILITY_CREATE_TOPICS=false needs no create rights;
`require_topics` is what such a worker checks instead.

Completion is judged from topic metadata only. Never from watermarks: the embedded Tansu broker reports a
partition's high watermark as the start of its last batch, not the offset after the last record.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from app.errors import UserError
from app.kafka.client_config import check_broker_access, client_config
from app.wire.topics import CleanupPolicy, TopicSpec, all_topics

if TYPE_CHECKING:
    from app.settings import Settings

NO_TIME_LIMIT_MS = -1


class TopicAdminError(UserError):
    """Topics could not be created or did not appear in time. The message names each topic and the broker's
    error; check the broker address, its log, and that partitions/replication_factor suit the cluster."""


def topic_config(topic: TopicSpec, settings: Settings) -> dict[str, str]:
    """Broker configs of a topic. retention.ms is always explicit because the embedded Tansu broker requires it;
    compacted topics keep every key's latest record forever (-1), so connectors can bootstrap from them."""
    retention_ms = NO_TIME_LIMIT_MS if topic.cleanup_policy is CleanupPolicy.COMPACT else settings.topic_retention_ms
    return {"cleanup.policy": topic.cleanup_policy.value, "retention.ms": str(retention_ms)}


class MissingTopicsError(TopicAdminError):
    """Topics the worker needs do not exist and it may not create them (AVAILABILITY_CREATE_TOPICS=false): run
    `availability topics create` with an account that has create rights, with the same AVAILABILITY_APP_ID,
    AVAILABILITY_PARTITIONS and AVAILABILITY_CHANNELS as the workers."""


LEADER_TOPIC_SUFFIX = "-__assignor-__leader"  # Faust's leader-election topic: `<app_id>-__assignor-__leader`


def faust_internal_topics(settings: Settings) -> list[NewTopic]:
    """The topics Faust creates for itself unless told not to: one compacted changelog per table
    (`<app_id>-<table>-changelog`, co-partitioned with the ledger) and the one-partition leader topic that elects
    the worker appending clock ticks. Their names depend on the app id, so they are not in app.wire.topics."""
    from tables.declarations import PARTITION_STATE_TABLE, SKU_STATE_TABLE

    changelog = {"cleanup.policy": CleanupPolicy.COMPACT.value, "retention.ms": str(NO_TIME_LIMIT_MS)}
    topics = [
        NewTopic(f"{settings.app_id}-{table}-changelog", num_partitions=settings.partitions,
                 replication_factor=settings.replication_factor, config=dict(changelog))
        for table in (SKU_STATE_TABLE, PARTITION_STATE_TABLE)
    ]
    topics.append(NewTopic(f"{settings.app_id}{LEADER_TOPIC_SUFFIX}", num_partitions=1,
                           replication_factor=settings.replication_factor,
                           config={"cleanup.policy": CleanupPolicy.DELETE.value,
                                   "retention.ms": str(settings.topic_retention_ms)}))
    return topics


def required_topic_names(settings: Settings) -> list[str]:
    """Every topic a worker reads or writes: the registry's and Faust's internal ones."""
    return [topic.name for topic in all_topics(settings)] + [topic.topic for topic in faust_internal_topics(settings)]


def require_topics(settings: Settings, bootstrap_servers: str, timeout: float = 30.0) -> None:
    """Raise MissingTopicsError naming every topic of `required_topic_names` that the broker does not list."""
    admin = AdminClient(client_config(settings, bootstrap_servers))
    metadata = admin.list_topics(timeout=timeout)
    missing = [name for name in required_topic_names(settings) if not _is_ready(metadata.topics.get(name))]
    if missing:
        raise MissingTopicsError(
            f"{len(missing)} topics are missing on {bootstrap_servers} and AVAILABILITY_CREATE_TOPICS is false: "
            f"{', '.join(missing)}; create them with `availability topics create` (same AVAILABILITY_APP_ID, "
            "_PARTITIONS and _CHANNELS) using an account allowed to create topics"
        )


def create_topics(
    settings: Settings, bootstrap_servers: str, timeout: float = 30.0, specs: Iterable[TopicSpec] | None = None
) -> list[str]:
    """Create every topic of the registry and Faust's internal topics (or only `specs`) that does not exist yet;
    returns the names created now.

    Topics that already exist are left as they are (their partitions and configs are not checked or changed)."""
    internal = faust_internal_topics(settings) if specs is None else []
    specs = list(all_topics(settings) if specs is None else specs)
    new = [
        NewTopic(spec.name, num_partitions=spec.partitions(settings), replication_factor=settings.replication_factor,
                 config=topic_config(spec, settings))
        for spec in specs
    ] + internal
    admin = AdminClient(client_config(settings, bootstrap_servers))
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
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
    wait_for_topics(bootstrap_servers, [topic.topic for topic in new], timeout=timeout, settings=settings)
    return sorted(created)


def wait_for_topics(
    bootstrap_servers: str, names: Iterable[str], timeout: float = 30.0, settings: Settings | None = None
) -> None:
    """Wait until metadata lists every topic with all its partitions led by a broker. `settings` supplies the
    client security options (none: a plaintext connection)."""
    wanted = set(names)
    config = client_config(settings, bootstrap_servers) if settings is not None else {"bootstrap.servers": bootstrap_servers}
    admin = AdminClient(config)
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


def prepare_broker(settings: Settings, bootstrap_servers: str) -> None:
    """Wait for the broker (it may start after the worker), failing fast if it refuses our credentials; then create
    the topics, or with AVAILABILITY_CREATE_TOPICS=false check that they all exist."""
    def say_waiting() -> None:
        print(f"waiting up to {settings.broker_wait_seconds:g}s for Kafka at {bootstrap_servers}", file=sys.stderr,
              flush=True)

    check_broker_access(settings, bootstrap_servers, timeout=settings.broker_wait_seconds, on_unreachable=say_waiting)
    if settings.create_topics:
        create_topics(settings, bootstrap_servers)
    else:
        require_topics(settings, bootstrap_servers)
