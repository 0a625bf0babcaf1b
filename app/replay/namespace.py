"""Namespaces of output topics: the live names, or the live names with a suffix (`availability.ecommerce.replay-a`).

A replay writes the same records as the live service, to topics of its own. Their specs are the registry's specs
(app/wire/topics.py) with the suffix appended, so they are created with the same partitions and cleanup policy.
Values keep the schema id of the live topic's subject: bytes written by a replay are then identical to the live
ones, and any reader decodes them by id. No subject is registered for a suffixed topic.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

from app.errors import UserError
from app.kafka.admin import create_topics
from app.wire.topics import DEAD_LETTERS, INVENTORY_EXCEPTIONS, RESERVATION_DECISIONS, TopicSpec, availability_topic

if TYPE_CHECKING:
    from app.settings import Settings

LIVE = "live"
"""The namespace name of the live topics (no suffix)."""

REPLAY_PREFIX = "replay-"
_SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class NamespaceError(UserError, ValueError):
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
    """What the availability stage writes: one topic per channel, reservation decisions, dead letters, inventory
    exceptions."""
    return tuple(availability_topic(channel) for channel in settings.channels) + (
        RESERVATION_DECISIONS, DEAD_LETTERS, INVENTORY_EXCEPTIONS)


def output_topics(settings: Settings, namespace: str) -> dict[str, TopicSpec]:
    """Live topic name -> the spec of that topic in `namespace`."""
    suffix = suffix_for(namespace)
    return {spec.name: renamed(spec, suffix) for spec in live_output_topics(settings)}


def create_namespace_topics(settings: Settings, bootstrap_servers: str, specs, timeout: float = 30.0) -> list[str]:
    """Create the given (suffixed) topics with the partitions and configs of their live originals; idempotent.
    Returns the names created now."""
    return create_topics(settings, bootstrap_servers, timeout=timeout, specs=specs)
