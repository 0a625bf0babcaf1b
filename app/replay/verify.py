"""Verify: compare two namespaces of output topics (live vs a replay, or two replays) key by key.

Per topic and key, each side's records are read in offset order and deduplicated by identity: the version for
availability, (ledger partition, ledger offset) for reservation decisions, the ledger position and kind for
inventory exceptions, the ledger position and reason for dead letters. A repeated identity must be a byte-identical copy (what a crash and restart may publish); anything else is
a difference. The deduplicated sequences of the two sides must then be equal, byte for byte (headers included for
dead letters). A key's records that come from different ledger partitions (a reservation id used for several SKUs,
a location's exceptions, dead letters of partition-wide entries) are compared as one sequence per ledger partition:
records of different ledger partitions have no order relative to each other (docs/CONTRACT.md), and neither two
runs of the live service nor a replay in several processes (app.replay.parallel) interleave them the same way.

Dead letters: only those of the availability stage (source-topic header `ledger`) are compared, since a replay
does not redo the ingest stage.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.replay.namespace import output_topics
from app.replay.reading import PartitionsReader
from app.wire.serialization import AvroCodec, SerializationError
from app.wire.topics import (
    DEAD_LETTER_SOURCE_TOPIC_HEADER,
    DEAD_LETTERS,
    INVENTORY_EXCEPTIONS,
    LEDGER,
    RESERVATION_DECISIONS,
)

if TYPE_CHECKING:
    from app.settings import Settings


@dataclass(frozen=True)
class OutputRecord:
    identity: tuple  # what makes two records "the same record" (see module doc)
    value: bytes
    headers: tuple  # compared for dead letters only
    where: str  # topic[partition]@offset


@dataclass(frozen=True)
class Difference:
    topic: str  # live topic name
    key: str
    identity: str  # e.g. "v3"
    what: str  # readable description

    def __str__(self) -> str:
        return f"{self.topic} key={self.key!r} {self.identity}: {self.what}"


@dataclass
class VerifyReport:
    namespace_a: str
    namespace_b: str
    differences: list[Difference] = field(default_factory=list)  # the first `limit` found
    difference_count: int = 0
    keys: dict[str, int] = field(default_factory=dict)  # live topic -> keys compared
    records: dict[str, tuple[int, int]] = field(default_factory=dict)  # live topic -> records read (a, b)

    @property
    def equal(self) -> bool:
        return self.difference_count == 0


def read_namespace_topic(bootstrap_servers: str, topic_name: str, live_name: str, codec: AvroCodec,
                         idle_seconds: float, settings: Settings | None = None) -> dict[str, list[OutputRecord]]:
    """Key -> records of one topic, in offset order, each with its identity."""
    by_key: dict[str, list[OutputRecord]] = defaultdict(list)
    with PartitionsReader(bootstrap_servers, topic_name, idle_seconds=idle_seconds, settings=settings) as reader:
        for batch in reader.batches():
            for message in batch:
                headers = tuple(message.headers() or ())
                if live_name == DEAD_LETTERS.name and dict(headers).get(DEAD_LETTER_SOURCE_TOPIC_HEADER) != \
                        LEDGER.name.encode():
                    continue  # an ingest-stage dead letter: not something a replay reproduces
                key = (message.key() or b"").decode("utf-8", "replace")
                value = message.value() or b""
                where = f"{topic_name}[{message.partition()}]@{message.offset()}"
                by_key[key].append(OutputRecord(identity_of(live_name, value, headers, codec), value, headers, where))
    return by_key


def identity_of(live_name: str, value: bytes, headers: tuple, codec: AvroCodec) -> tuple:
    if live_name == DEAD_LETTERS.name:
        named = dict(headers)
        return ("ledger", named.get("source-partition"), named.get("source-offset"), named.get("ledger-index"),
                named.get("reason"))
    try:
        record = codec.decode(live_name, value).value
    except SerializationError:
        return ("undecodable", value)
    if live_name == RESERVATION_DECISIONS.name:
        return ("ledger", record["ledger_partition"], record["ledger_offset"], record["ledger_index"], record["outcome"])
    if live_name == INVENTORY_EXCEPTIONS.name:
        return ("ledger", record["ledger_partition"], record["ledger_offset"], record["ledger_index"], record["kind"],
                record["location"])
    return ("v", record["version"])


def describe_identity(identity: tuple) -> str:
    if identity[0] == "v":
        return f"v{identity[1]}"
    if identity[0] == "ledger":
        rest = ["0" if part is None else part.decode() if isinstance(part, bytes) else str(part)
                for part in identity[1:]]
        return f"ledger {rest[0]}@{rest[1]}.{rest[2]} {rest[3]}"
    return "undecodable record"


def deduplicate(topic: str, key: str, records: list[OutputRecord], side: str,
                differences: list[Difference]) -> list[OutputRecord]:
    """First copy of every identity, in order; a repeat that is not byte-identical is a difference."""
    first: dict[tuple, OutputRecord] = {}
    kept = []
    for record in records:
        seen = first.get(record.identity)
        if seen is None:
            first[record.identity] = record
            kept.append(record)
        elif (seen.value, seen.headers) != (record.value, record.headers):
            differences.append(Difference(topic, key, describe_identity(record.identity),
                                          f"{side}: repeat at {record.where} differs from {seen.where}"))
    return kept


def field_diff(codec: AvroCodec, topic: str, a: OutputRecord, b: OutputRecord) -> str:
    if topic == DEAD_LETTERS.name:
        if a.value != b.value:
            return "original ledger bytes differ"
        named_a, named_b = dict(a.headers), dict(b.headers)
        changed = [f"{name}: {named_a.get(name)!r} != {named_b.get(name)!r}" for name in sorted(set(named_a) |
                   set(named_b)) if named_a.get(name) != named_b.get(name)]
        return "headers differ: " + "; ".join(changed)
    try:
        decoded_a, decoded_b = codec.decode(topic, a.value), codec.decode(topic, b.value)
    except SerializationError as error:
        return f"bytes differ (undecodable: {error})"
    changed = [f"{name}: {decoded_a.value.get(name)!r} != {decoded_b.value.get(name)!r}"
               for name in decoded_a.value if decoded_a.value.get(name) != decoded_b.value.get(name)]
    if decoded_a.schema_id != decoded_b.schema_id:
        changed.append(f"schema id: {decoded_a.schema_id} != {decoded_b.schema_id}")
    return "; ".join(changed) or "bytes differ with equal fields"


def compare_topic(codec: AvroCodec, topic: str, side_a: dict[str, list[OutputRecord]],
                  side_b: dict[str, list[OutputRecord]], report: VerifyReport) -> None:
    found: list[Difference] = []
    for key in sorted(set(side_a) | set(side_b)):
        records_a = by_ledger_partition(deduplicate(topic, key, side_a.get(key, []), report.namespace_a, found))
        records_b = by_ledger_partition(deduplicate(topic, key, side_b.get(key, []), report.namespace_b, found))
        for partition in sorted(set(records_a) | set(records_b), key=lambda part: (part is not None, str(part))):
            compare_sequences(codec, topic, key, records_a.get(partition, []), records_b.get(partition, []), report,
                              found)
    report.keys[topic] = len(set(side_a) | set(side_b))
    report.difference_count += len(found)
    report.differences.extend(found)


def by_ledger_partition(records: list[OutputRecord]) -> dict[object, list[OutputRecord]]:
    """A key's records split by the ledger partition that caused them, each in its order (availability records all
    come from the one partition that owns their SKU, and their identity, the version, does not name it: None)."""
    split: dict[object, list[OutputRecord]] = {}
    for record in records:
        partition = record.identity[1] if record.identity[0] == "ledger" else None
        split.setdefault(partition, []).append(record)
    return split


def compare_sequences(codec: AvroCodec, topic: str, key: str, records_a: list[OutputRecord],
                      records_b: list[OutputRecord], report: VerifyReport, found: list[Difference]) -> None:
    for index in range(max(len(records_a), len(records_b))):
        a = records_a[index] if index < len(records_a) else None
        b = records_b[index] if index < len(records_b) else None
        if a is not None and b is not None:
            if a.identity != b.identity:
                found.append(Difference(topic, key, describe_identity(a.identity),
                                        f"{report.namespace_b} has {describe_identity(b.identity)} here"))
                break  # the rest of the sequence is shifted: one difference says it
            if (a.value, a.headers) != (b.value, b.headers):
                found.append(Difference(topic, key, describe_identity(a.identity), field_diff(codec, topic, a, b)))
        else:
            present, side = (a, report.namespace_a) if a is not None else (b, report.namespace_b)
            found.append(Difference(topic, key, describe_identity(present.identity),
                                    f"only in {side} ({present.where})"))


def verify(settings: Settings, bootstrap_servers: str, namespace_a: str, namespace_b: str,
           topics: list[str] | None = None, limit: int = 20, idle_seconds: float = 2.0,
           codec: AvroCodec | None = None) -> VerifyReport:
    """Compare the output topics of two namespaces (`live` or a replay name). `topics`: live names to compare
    (default: every output topic). Keeps the first `limit` differences; counts all of them."""
    codec = codec or AvroCodec(settings)
    a_topics, b_topics = output_topics(settings, namespace_a), output_topics(settings, namespace_b)
    report = VerifyReport(namespace_a, namespace_b)
    names = topics or list(a_topics)
    for live_name in names:
        if live_name not in a_topics:
            raise ValueError(f"{live_name} is not an output topic (choose from {', '.join(a_topics)})")
    # The two sides of a topic are read at once: each read ends with a quiet period (app.replay.reading) spent
    # waiting, not computing. One topic at a time, so memory holds one topic's two sides.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify-read") as pool:
        for live_name in names:
            reading_a, reading_b = (
                pool.submit(read_namespace_topic, bootstrap_servers, side[live_name].name, live_name, codec,
                            idle_seconds, settings)
                for side in (a_topics, b_topics)
            )
            side_a, side_b = reading_a.result(), reading_b.result()
            report.records[live_name] = (sum(map(len, side_a.values())), sum(map(len, side_b.values())))
            compare_topic(codec, live_name, side_a, side_b, report)
    report.differences = report.differences[:limit]
    return report
