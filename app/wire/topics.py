"""The one registry of topics: every topic the service reads or writes, declared once.

Agents, tools, the admin module and the codec refer to these declarations instead of spelling topic names.
docs/CONTRACT.md says the same for people outside the service; change both together.

Faust also creates internal topics of its own (table changelogs `<app_id>-<table>-changelog` and repartition
topics). They are Faust's business, not part of the contract, and are not declared here.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, TypeVar

from app.engine.events import IDENTIFIER, FeedType

if TYPE_CHECKING:  # only for annotations: this module must stay importable without reading the environment
    from app.settings import Settings

Key = TypeVar("Key", str, bytes)  # a record key: as a str (encoded as UTF-8) or as bytes

IDENTIFIER_PATTERN = re.compile(f"^{IDENTIFIER.pattern}$")
"""SKU, location, channel, reservation and event ids (the engine's rule, anchored for JSON Schema). `/` is
excluded so it can join sku and location in keys."""

# Dead-letter headers: values are UTF-8 strings (partition and offset in decimal).
DEAD_LETTER_REASON_HEADER = "reason"  # reason code, e.g. UNDECODABLE_BODY, INVALID_QUANTITY
DEAD_LETTER_ERROR_HEADER = "error"  # human-readable message
DEAD_LETTER_SOURCE_TOPIC_HEADER = "source-topic"
DEAD_LETTER_SOURCE_PARTITION_HEADER = "source-partition"
DEAD_LETTER_SOURCE_OFFSET_HEADER = "source-offset"
DEAD_LETTER_TRUNCATED_HEADER = "value-truncated-from"  # only on a dead letter whose value was cut: original size
DEAD_LETTER_LEDGER_INDEX_HEADER = "ledger-index"  # only on the dead letter of one entry of a LedgerEntryBatch
DEAD_LETTER_HEADERS = (
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_ERROR_HEADER,
    DEAD_LETTER_SOURCE_TOPIC_HEADER,
    DEAD_LETTER_SOURCE_PARTITION_HEADER,
    DEAD_LETTER_SOURCE_OFFSET_HEADER,
)

LEDGER_BROADCAST_KEY = ""
"""Key of ledger entries that concern every SKU (policy changes, clock ticks), written to each partition explicitly."""

AVAILABILITY_TOPIC_PREFIX = "availability."

# Partitioning rules, in words, shared by several declarations.
_ANY_PARTITIONING = "any: the producer's choice; ingest reads all partitions and re-keys by SKU"
_BY_KEY = "by key: Kafka's default partitioner, murmur2 of the UTF-8 key bytes (Java client, aiokafka)"


class CleanupPolicy(str, Enum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True)
class TopicSpec:
    """One topic: what its records are, how they are spread over partitions, and who writes and reads them."""

    name: str
    key: str  # what the UTF-8 key holds, in words
    value_record: str | None  # Avro record name (file avro/<name>.avsc); None: raw bytes, not Avro
    partitioning: str  # how records are assigned to partitions, in words
    cleanup_policy: CleanupPolicy
    writers: tuple[str, ...]
    readers: tuple[str, ...]
    description: str

    def partitions(self, settings: Settings) -> int:
        """Partition count. Every topic has `settings.partitions`: the ledger must, because the tables are
        co-partitioned with it; the others follow so one number sizes the whole deployment."""
        return settings.partitions

    @property
    def value_subject(self) -> str | None:
        """Schema Registry subject of the value (TopicNameStrategy)."""
        return None if self.value_record is None else f"{self.name}-value"

    @property
    def schema_file(self) -> str | None:
        return None if self.value_record is None else f"avro/{self.value_record}.avsc"


STORE_TRANSACTIONS = TopicSpec(
    name="source.store-transactions",
    key="any (typically the store id)",
    value_record="StockMovement",
    partitioning=_ANY_PARTITIONING,
    cleanup_policy=CleanupPolicy.DELETE,
    writers=("POS",),
    readers=("ingest",),
    description="Sales and returns (and any other stock movement) reported by stores, one movement per record.",
)

STOCK_MOVEMENTS = TopicSpec(
    name="source.stock-movements",
    key="any",
    value_record="StockMovementBatch",
    partitioning=_ANY_PARTITIONING,
    cleanup_policy=CleanupPolicy.DELETE,
    writers=("WMS", "ERP", "availability reconcile --apply (cycle counts, source `reconcile`)"),
    readers=("ingest",),
    description="Bulk stock movements from warehouses and ERP: receipts, transfers, counts, adjustments.",
)

RESERVATION_COMMANDS = TopicSpec(
    name="source.reservation-commands",
    key="reservation_id",
    value_record="ReservationCommand",
    partitioning=_ANY_PARTITIONING,
    cleanup_policy=CleanupPolicy.DELETE,
    writers=("order management", "HTTP API (POST/DELETE /reservations, docs/HTTP_API.md)"),
    readers=("ingest",),
    description="Reserve, release and fulfil commands for channel reservations.",
)

POLICY_CHANGES = TopicSpec(
    name="source.policy-changes",
    key="any",
    value_record="PolicyChange",
    partitioning=_ANY_PARTITIONING,
    cleanup_policy=CleanupPolicy.DELETE,
    writers=("policy admin",),
    readers=("ingest",),
    description="Complete, versioned availability policies (locations, safety stock, channel rules).",
)

LEDGER = TopicSpec(
    name="ledger",
    key="sku; empty for policy changes and clock ticks",
    value_record="LedgerEntry",
    partitioning="ledger_partition(sku): murmur2 of the SKU, as Kafka's default partitioner; policy changes and"
    " clock ticks are written to every partition explicitly",
    cleanup_policy=CleanupPolicy.DELETE,
    writers=("ingest",),
    readers=("availability", "replay"),
    description="Validated events in one total order per SKU partition; the single input of availability and replay.",
)

RESERVATION_DECISIONS = TopicSpec(
    name="reservation-decisions",
    key="reservation_id",
    value_record="ReservationDecision",
    partitioning=_BY_KEY,
    cleanup_policy=CleanupPolicy.DELETE,
    writers=("availability",),
    readers=("order management",),
    description="Outcome of every reservation command, and reservation expiries.",
)

DEAD_LETTERS = TopicSpec(
    name="dead-letters",
    key="the original record's key",
    value_record=None,
    partitioning=_BY_KEY,
    cleanup_policy=CleanupPolicy.DELETE,
    writers=("ingest", "availability"),
    readers=("operators",),
    description="Records that failed validation or processing: the original bytes, with reason and origin in headers.",
)

INVENTORY_EXCEPTIONS = TopicSpec(
    name="inventory-exceptions",
    key="sku/location, sku, or location (a feed's exception)",
    value_record="InventoryException",
    partitioning=_BY_KEY,
    cleanup_policy=CleanupPolicy.DELETE,
    writers=("availability", "availability reconcile"),
    readers=("operators", "alerting"),
    description="Facts applied that need a look (stock driven negative, unknown locations, inexact counts), stale "
    "feeds and their fallbacks, and drifts found by reconciliation.",
)

# Declared order matters: the codec registers value subjects in this order (see app/wire/serialization.py).
FIXED_TOPICS: tuple[TopicSpec, ...] = (
    STORE_TRANSACTIONS,
    STOCK_MOVEMENTS,
    RESERVATION_COMMANDS,
    POLICY_CHANGES,
    LEDGER,
    RESERVATION_DECISIONS,
    DEAD_LETTERS,
)
SOURCE_TOPICS: tuple[TopicSpec, ...] = (STORE_TRANSACTIONS, STOCK_MOVEMENTS, RESERVATION_COMMANDS, POLICY_CHANGES)

FEED_OF_SOURCE_TOPIC = {STORE_TRANSACTIONS.name: FeedType.POS, STOCK_MOVEMENTS.name: FeedType.WMS}
"""Which feed a source topic's movements are, for the degradation rules (docs/RULES.md, section 12)."""


def availability_topic(channel: str) -> TopicSpec:
    """The compacted topic `availability.<channel>` that connectors of that channel read."""
    _require_identifier("channel", channel)
    return TopicSpec(
        name=f"{AVAILABILITY_TOPIC_PREFIX}{channel}",
        key="sku (NETWORK channel) or sku/location (LOCATION channel)",
        value_record="ChannelAvailability",
        partitioning=_BY_KEY,
        cleanup_policy=CleanupPolicy.COMPACT,
        writers=("availability",),
        readers=(f"{channel} connectors",),
        description=f"What channel {channel} may advertise, per key; the latest record per key is current.",
    )


# Snapshot headers (UTF-8): see docs/CONTRACT.md, "Bootstrapping a connector".
SNAPSHOT_OF_HEADER = "snapshot-of"  # the channel topic the snapshot restates
SNAPSHOT_ID_HEADER = "snapshot-id"  # one id per snapshot run
CHANNEL_OFFSET_HEADER = "channel-offset"  # offset of the same-numbered channel partition the snapshot covers up to


def availability_snapshot_topic(channel: str) -> TopicSpec:
    """`availability.<channel>.snapshot`: compacted, the latest snapshot record of every key (docs/REPLAY.md).
    Written on demand by `availability snapshot`, so not part of `all_topics`."""
    live = availability_topic(channel)
    return TopicSpec(
        name=f"{live.name}.snapshot",
        key=live.key,
        value_record=live.value_record,
        partitioning=f"the key's partition in {live.name}",
        cleanup_policy=CleanupPolicy.COMPACT,
        writers=("availability snapshot",),
        readers=(f"{channel} connectors bootstrapping",),
        description=f"Snapshots of {live.name}: every key's current record with snapshot=true, same version; "
        "headers name the channel topic offsets each snapshot covers.",
    )


def all_topics(settings: Settings) -> tuple[TopicSpec, ...]:
    """Every topic of the deployment: the fixed ones, one availability topic per configured channel in the order of
    `settings.channels`, then `inventory-exceptions` (last, so the schema ids registered before it stay as they
    were)."""
    return FIXED_TOPICS + tuple(availability_topic(channel) for channel in settings.channels) + (INVENTORY_EXCEPTIONS,)


def topics_by_name(settings: Settings) -> dict[str, TopicSpec]:
    return {topic.name: topic for topic in all_topics(settings)}


def ledger_partition(sku: str, partition_count: int) -> int:
    """Ledger partition that owns a SKU: Kafka's default partitioner (murmur2 of the UTF-8 key, as the Java client
    and aiokafka compute it). Stated here because librdkafka's default (crc32-based) would put a SKU elsewhere:
    every writer of the ledger, and every reader that needs a SKU's partition, uses this function."""
    return key_partition(ledger_key(sku).encode(), partition_count)


def key_partition(key: bytes, partition_count: int) -> int:
    """Kafka's default partition of a keyed record: murmur2 of the key bytes, as the Java client and aiokafka compute
    it."""
    return (murmur2(key) & 0x7FFFFFFF) % partition_count


PARTITION_MEMO_KEYS = 32_768  # keys remembered per partition count: at most 3.4 MiB of the peak benchmark's worker


def memoized_partitions(partition_of: Callable[[Key, int], int], limit: int = PARTITION_MEMO_KEYS
                        ) -> Callable[[Key, int], int]:
    """`partition_of(key, partition_count)`, remembered for the keys seen last: hot SKUs repeat, and murmur2 is
    pure Python (2 us per key). At most `limit` keys per partition count: a full memo starts over, which costs one
    murmur2 per key seen again. The least-recently-used caches of 200,000 keys it replaces (functools.lru_cache)
    held 59 MiB of the peak benchmark's worker by its live run (docs/PERFORMANCE.md, "Where the live run's memory
    is"). A memo of a pure function: it changes no answer."""
    memos: dict[int, dict] = {}

    def partition(key: Key, partition_count: int) -> int:
        memo = memos.get(partition_count)
        if memo is None:
            memo = memos[partition_count] = {}
        found = memo.get(key)
        if found is None:
            if len(memo) >= limit:
                memo.clear()
            found = memo[key] = partition_of(key, partition_count)
        return found

    return partition


def murmur2(data: bytes, _words=struct.unpack_from) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as a signed 32-bit int. The whole 4-byte
    words are read in one unpack: a third less time than slicing each (an output key's partition is computed in
    pure Python; tests/wire/test_serialization.py checks it against Kafka's and aiokafka's)."""
    length = len(data)
    h = 0x9747B28C ^ length
    tail = length & ~3
    for k in _words("<%dI" % (tail >> 2), data):
        k = (k * 0x5BD1E995) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * 0x5BD1E995) ^ (k * 0x5BD1E995)) & 0xFFFFFFFF
    remaining = length & 3
    if remaining == 3:
        h ^= data[tail + 2] << 16
    if remaining >= 2:
        h ^= data[tail + 1] << 8
    if remaining:
        h = ((h ^ data[tail]) * 0x5BD1E995) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0x5BD1E995) & 0xFFFFFFFF
    h ^= h >> 15
    return h - 0x100000000 if h & 0x80000000 else h


def ledger_key(sku: str) -> str:
    """Ledger key of a SKU's entries (the SKU id itself); encode as UTF-8 on the wire."""
    _require_identifier("sku", sku)
    return sku


def availability_key(sku: str, location: str | None = None) -> str:
    """`sku` for NETWORK channels, `sku/location` for LOCATION channels; encode as UTF-8 on the wire."""
    _require_identifier("sku", sku)
    if location is None:
        return sku
    _require_identifier("location", location)
    return f"{sku}/{location}"


def parse_availability_key(key: str) -> tuple[str, str | None]:
    """Inverse of `availability_key`: (sku, location or None)."""
    sku, separator, location = key.partition("/")
    _require_identifier("sku", sku)
    if not separator:
        return sku, None
    _require_identifier("location", location)
    return sku, location


def _require_identifier(what: str, value: str) -> None:
    if not isinstance(value, str) or IDENTIFIER_PATTERN.fullmatch(value) is None:
        raise ValueError(f"{what} {value!r} does not match {IDENTIFIER_PATTERN.pattern}")
