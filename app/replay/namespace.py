"""Namespaces of output topics: the live names, or the live names with a suffix (`availability.ecommerce.replay-a`).

A replay writes the same records as the live service, to topics of its own. Their specs are the registry's specs
(app/topics.py) with the suffix appended, so they are created with the same partitions and cleanup policy.
Values keep the schema id of the live topic's subject: bytes written by a replay are then identical to the live
ones, and any reader decodes them by id. No subject is registered for a suffixed topic.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from app.admin import TopicAdminError, topic_config, wait_for_topics
from app.topics import DEAD_LETTERS, RESERVATION_DECISIONS, CleanupPolicy, TopicSpec, availability_topic

if TYPE_CHECKING:
    from app.settings import Settings

LIVE = "live"
"""The namespace name of the live topics (no suffix)."""

REPLAY_PREFIX = "replay-"
SNAPSHOT_SUFFIX = "snapshot"
_SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class NamespaceError(ValueError):
    """A namespace name is not usable as a topic suffix: use letters, digits, `_` and `-` (e.g. `replay-audit1`)."""


def suffix_for(namespace: str) -> str:
    """Topic suffix of a namespace: '' for `live`; `replay-<name>` for a bare name; a name already starting with
    `replay-` is kept as it is."""
    if namespace == LIVE:
        return ""
    if not _SUFFIX_PATTERN.fullmatch(namespace):
        raise NamespaceError(f"namespace {namespace!r} must match {_SUFFIX_PATTERN.pattern} (or be {LIVE!r})")
    return namespace if namespace.startswith(REPLAY_PREFIX) else f"{REPLAY_PREFIX}{namespace}"


def renamed(spec: TopicSpec, suffix: str) -> TopicSpec:
    """`spec` under `<name>.<suffix>` (itself for an empty suffix)."""
    return spec if not suffix else dataclasses.replace(spec, name=f"{spec.name}.{suffix}")


def live_output_topics(settings: Settings) -> tuple[TopicSpec, ...]:
    """What the availability stage writes: one topic per channel, reservation decisions, dead letters."""
    return tuple(availability_topic(channel) for channel in settings.channels) + (RESERVATION_DECISIONS, DEAD_LETTERS)


def output_topics(settings: Settings, namespace: str) -> dict[str, TopicSpec]:
    """Live topic name -> the spec of that topic in `namespace`."""
    suffix = suffix_for(namespace)
    return {spec.name: renamed(spec, suffix) for spec in live_output_topics(settings)}


def snapshot_topic(channel: str) -> TopicSpec:
    """`availability.<channel>.snapshot`: compacted, the latest snapshot record of every key (docs/REPLAY.md)."""
    spec = renamed(availability_topic(channel), SNAPSHOT_SUFFIX)
    return dataclasses.replace(
        spec,
        cleanup_policy=CleanupPolicy.COMPACT,
        writers=("availability snapshot",),
        description=f"Snapshots of availability.{channel}: every key's current record with snapshot=true, same "
        "version; headers name the channel topic offsets each snapshot covers.",
    )


def create_namespace_topics(settings: Settings, bootstrap_servers: str, specs, timeout: float = 30.0) -> list[str]:
    """Create the given (suffixed) topics with the partitions and configs of their live originals; idempotent.
    Returns the names created now."""
    specs = list(specs)
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    new = [
        NewTopic(spec.name, num_partitions=spec.partitions(settings), replication_factor=settings.replication_factor,
                 config=topic_config(spec, settings))
        for spec in specs
    ]
    created, failures = [], []
    for name, future in admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout).items():
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
    wait_for_topics(bootstrap_servers, [spec.name for spec in specs], timeout=timeout)
    return sorted(created)
