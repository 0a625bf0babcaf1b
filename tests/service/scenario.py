"""The realistic scenario of the end-to-end tests, and the checks that compare the service with the engine.

3 channels (ecommerce and marketplace per network, store-pickup per location), 20 locations, 200 SKUs; stock
arrives in bulk batches, stores sell, two channels race reservations for the last units of a few hot SKUs, a
policy change lands in the middle, and duplicates and malformed records are mixed in.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from app.engine import (
    ChannelAvailability,
    ChannelGranularity,
    InventoryException,
    Rejection,
    ReservationDecision,
    ReservationOutcome,
    event_to_record,
    run_ledger,
)
from app.wire.ledger import ledger_events
from app.wire.serialization import AvroCodec
from app.wire.topics import (
    DEAD_LETTER_SOURCE_TOPIC_HEADER,
    DEAD_LETTERS,
    INVENTORY_EXCEPTIONS,
    LEDGER,
    POLICY_CHANGES,
    RESERVATION_COMMANDS,
    RESERVATION_DECISIONS,
    STOCK_MOVEMENTS,
    STORE_TRANSACTIONS,
    availability_topic,
)
from tests.engine.factories import channel, policy, receipt, reserve, sale
from tests.service.harness import ReadRecord, SourceProducer, read_topic

CHANNELS = ("ecommerce", "marketplace", "store-pickup")
LOCATIONS = tuple(f"S{index:02d}" for index in range(1, 21))
SKUS = tuple(f"SKU-{index:03d}" for index in range(200))
HOT_SKUS = SKUS[:20]  # few units, reserved by two channels at once


def policy_v(version: int, marketplace_share_bp: int):
    """The scenario's policy (every test sends version 1 first, FIRST_POLICY)."""
    rules = (
        channel("ecommerce", priority=0),
        channel("marketplace", priority=1, share_bp=marketplace_share_bp),
        channel("store-pickup", priority=2, granularity=ChannelGranularity.LOCATION),
    )
    return policy(version, stores=LOCATIONS, dcs=(), channels=rules, event_time=1)


FIRST_POLICY = policy_v(1, 10_000)


@dataclass
class Scenario:
    """Source records in two halves (the policy change opens the second), plus the malformed records sent."""

    first_half: list[tuple[str, object]] = field(default_factory=list)  # (topic, event or list of events or bytes)
    second_half: list[tuple[str, object]] = field(default_factory=list)
    malformed: list[bytes] = field(default_factory=list)

    def sent_events(self) -> list:
        """Every well-formed event sent, policy changes included, duplicates as often as they were sent."""
        return [event for _, item in self.first_half + self.second_half
                for event in (item if isinstance(item, list) else [item])
                if not isinstance(event, bytes) and event.event_id not in ("bad-qty", "bad-sku")]

    def event_ids(self) -> set[str]:
        """Ids of every well-formed event sent: what the ledger must hold in the end."""
        return {event.event_id for event in self.sent_events()}


def build_scenario(seed: int = 7, skus: tuple[str, ...] = SKUS) -> Scenario:
    rng = random.Random(seed)
    scenario = Scenario()
    time = 1_000
    stocked = []
    for sku in skus:
        locations = rng.sample(LOCATIONS, 3)
        hot = sku in HOT_SKUS
        for location in locations:
            time += 1
            stocked.append(receipt(1 if hot else rng.randint(5, 30), location, sku=sku, event_id=f"rcv-{sku}-{location}", time=time))
    for start in range(0, len(stocked), 25):  # bulk feed: 25 movements per StockMovementBatch
        scenario.first_half.append((STOCK_MOVEMENTS.name, stocked[start : start + 25]))
    sales = []
    for index, sku in enumerate(skus):
        if sku in HOT_SKUS or index % 3:
            continue
        time += 1
        sales.append(sale(rng.randint(1, 4), rng.choice(LOCATIONS), sku=sku, event_id=f"sale-{sku}", time=time))
    scenario.first_half += [(STORE_TRANSACTIONS.name, event) for event in sales[: len(sales) // 2]]
    scenario.second_half.append((POLICY_CHANGES.name, policy_v(2, 5_000)))
    scenario.second_half += [(STORE_TRANSACTIONS.name, event) for event in sales[len(sales) // 2 :]]
    for sku in HOT_SKUS:
        if sku not in skus:
            continue
        for name in ("ecommerce", "marketplace"):
            time += 1
            command = reserve(f"res-{sku}-{name}", 2, channel_name=name, sku=sku, allow_partial=False, time=time,
                              event_id=f"cmd-{sku}-{name}")
            scenario.second_half.append((RESERVATION_COMMANDS.name, command))
    # Duplicates: the same events again (same ids); the engine must ignore them.
    scenario.second_half += [(STORE_TRANSACTIONS.name, event) for event in sales[:5]]
    scenario.second_half.append((STOCK_MOVEMENTS.name, stocked[:3]))
    # Malformed: not Avro at all, and Avro that fails validation (zero quantity, bad id).
    scenario.malformed.append(b"not avro at all")
    scenario.malformed.append(b"\x00\x00\x00\x00\x63garbage")
    for bad in (sale(0, "S01", sku=skus[0], event_id="bad-qty", time=time), sale(1, "S01", sku="bad sku!", event_id="bad-sku", time=time)):
        scenario.malformed.append(bad)
    scenario.second_half[5:5] = [(STORE_TRANSACTIONS.name, item) for item in scenario.malformed]
    return scenario


def send_records(source: SourceProducer, records: list[tuple[str, object]]) -> set[bytes]:
    """Send a half; returns the value bytes of the malformed records it sent."""
    malformed: set[bytes] = set()
    for index, (topic, item) in enumerate(records):
        if isinstance(item, bytes):
            source.send_raw(topic, item, key=f"k{index}")
            malformed.add(item)
        elif isinstance(item, list):
            source.send(topic, {"movements": [event_to_record(event)[1] for event in item]}, key=f"k{index}")
        else:
            value = source.codec.encode(topic, event_to_record(item)[1])
            source.send_raw(topic, value, key=f"k{index}")
            if getattr(item, "event_id", None) in ("bad-qty", "bad-sku"):
                malformed.add(value)
    source.flush()
    return malformed


# -------------------------------------------------------------------------------------------------------- checks


def _ledger_entries(records: list[ReadRecord], codec: AvroCodec) -> list[tuple[int, int, object, object]]:
    """(partition, ledger position, event, origin) of every entry, in ledger order (a batch record holds many)."""
    entries = []
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        for position, event, origin in ledger_events(codec.decode(LEDGER.name, record.value).value, record.offset):
            entries.append((record.partition, position, event, origin))
    return entries


def ledger_of_sent_events(entries, sent) -> list[tuple[int, int, object]]:
    """The oracle's ledger: what the service's ledger must amount to once every repeat is removed. Per ledger
    partition, the first entry of each event id is kept (a policy change is on every partition; a SKU's events on
    one) and every later one dropped: the ingest stage's own repeats after a crash and the duplicates a source sent
    alike. Clock ticks are kept. The kept events must be exactly the events `sent`, field for field: none lost,
    none the sender did not send. Ledger order is kept, since it is what the rules decide by; the expected outputs
    are then the engine run on this (`expected_outputs`), never on the ledger as written, which holds repeats."""
    sent_by_id: dict[str, object] = {}
    for event in sent:
        assert sent_by_id.setdefault(event.event_id, event) == event, f"two different events sent as {event.event_id}"
    kept, first = [], set()
    for partition, position, event, *_ in entries:
        event_id = getattr(event, "event_id", None)
        if event_id is None:  # a clock tick
            kept.append((partition, position, event))
            continue
        if (partition, event_id) in first:
            continue
        first.add((partition, event_id))
        assert sent_by_id.get(event_id) == event, f"the ledger holds {event_id} as {event}, sent as {sent_by_id.get(event_id)}"
        kept.append((partition, position, event))
    missing = set(sent_by_id) - {event_id for _, event_id in first}
    assert not missing, f"{len(missing)} events sent never reached the ledger, e.g. {sorted(missing)[:5]}"
    return kept


def read_ledger(bootstrap_servers: str, codec: AvroCodec, partitions: int,
                event_ids: set[str] | None = None, timeout: float = 60.0) -> list[tuple[int, int, object, object]]:
    """The ledger, as (partition, position, event, origin); with `event_ids`, read until it holds all of them. Sources are ingested by independent agents
    (and after a rebalance, by another worker), so a quiet second proves nothing: wait for what was sent."""
    if event_ids is None:
        return _ledger_entries(read_topic(bootstrap_servers, LEDGER.name, partitions, idle_seconds=1.0), codec)

    def holds_all(records: list[ReadRecord]) -> bool:
        present = {getattr(event, "event_id", None) for _, _, event, _ in _ledger_entries(records, codec)}
        return event_ids <= present

    records = read_topic(bootstrap_servers, LEDGER.name, partitions, until=holds_all, timeout=timeout, idle_seconds=0)
    return _ledger_entries(records, codec)


def expected_from_sent(bootstrap_servers: str, codec: AvroCodec, partitions: int, sent, timeout: float = 60.0,
                       channels=CHANNELS) -> Expected:
    """The engine's outputs for the events `sent` (each once, whatever the ledger repeats), in ledger order: read
    the ledger until it holds every one of them, then `ledger_of_sent_events` and `expected_outputs`."""
    sent = list(sent)
    entries = read_ledger(bootstrap_servers, codec, partitions, {event.event_id for event in sent}, timeout=timeout)
    return expected_outputs(ledger_of_sent_events(entries, sent), codec, channels)


@dataclass
class Expected:
    outputs: list
    by_topic: dict[str, list[tuple[bytes, bytes]]]  # topic -> [(key, value bytes)] in per-partition ledger order
    rejections: list[Rejection]
    entries: list = field(default_factory=list)  # the ledger entries the outputs are the engine's answer to
    channels: frozenset[str] = frozenset(CHANNELS)


def expected_outputs(entries, codec: AvroCodec, channels=CHANNELS) -> Expected:
    """The engine's outputs for `entries`: give it `ledger_of_sent_events(...)`, not the ledger as written."""
    entries = list(entries)
    outputs = run_ledger(entries, frozenset(channels))
    by_topic: dict[str, list[tuple[bytes, bytes]]] = defaultdict(list)
    rejections = []
    for output in outputs:
        if isinstance(output, ChannelAvailability):
            topic = availability_topic(output.channel).name
            by_topic[topic].append((output.key.encode(), codec.encode(topic, output.to_record())))
        elif isinstance(output, ReservationDecision):
            by_topic[RESERVATION_DECISIONS.name].append(
                (output.key.encode(), codec.encode(RESERVATION_DECISIONS.name, output.to_record()))
            )
        elif isinstance(output, InventoryException):
            by_topic[INVENTORY_EXCEPTIONS.name].append(
                (output.key.encode(), codec.encode(INVENTORY_EXCEPTIONS.name, output.to_record()))
            )
        else:
            rejections.append(output)
    return Expected(outputs, dict(by_topic), rejections, entries, frozenset(channels))


def read_outputs(bootstrap_servers: str, partitions: int, expected: Expected, timeout: float = 30.0):
    """Every output topic, read until it holds at least as many distinct records as expected."""
    published = {}
    for topic in [availability_topic(name).name for name in CHANNELS] + [RESERVATION_DECISIONS.name,
                                                                         INVENTORY_EXCEPTIONS.name]:
        want = len(expected.by_topic.get(topic, []))
        try:
            published[topic] = read_topic(
                bootstrap_servers, topic, partitions,
                until=lambda records, want=want: len({(r.key, r.value) for r in records}) >= want,
                timeout=timeout, idle_seconds=0.5,
            )
        except AssertionError:  # the comparison below says what differs
            published[topic] = read_topic(bootstrap_servers, topic, partitions, timeout=timeout)
    return published


def per_key(pairs) -> dict[bytes, list[bytes]]:
    grouped: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in pairs:
        grouped[key].append(value)
    return grouped


def assert_published_equals_engine(published: dict[str, list[ReadRecord]], expected: Expected, allow_repeats: bool):
    """Per key, the published sequence equals the engine's: without repeats, or (after a crash or rebalance) with
    repeats that are byte-identical re-sends of records already published, so versions stay gapless."""
    for topic, records in published.items():
        actual = per_key((r.key, r.value) for r in sorted(records, key=lambda r: (r.partition, r.offset)))
        wanted = per_key(expected.by_topic.get(topic, []))
        assert set(actual) == set(wanted), (
            f"{topic}: keys differ: published only {sorted(set(actual) - set(wanted))[:10]}, "
            f"engine only {sorted(set(wanted) - set(actual))[:10]} ({len(records)} records read, "
            f"{len(expected.by_topic.get(topic, []))} expected)"
        )
        for key, values in actual.items():
            if allow_repeats:
                deduplicated = []
                for value in values:
                    if value in deduplicated:
                        continue  # a repeat: byte-identical to an earlier record of the key
                    deduplicated.append(value)
                values = deduplicated
            assert values == wanted[key], (
                f"{topic} {key!r}: published sequence differs from the engine's: "
                f"{[_describe(topic, v) for v in values]} != {[_describe(topic, v) for v in wanted[key]]}"
            )


def _describe(topic: str, value: bytes) -> bytes:
    return value[5:40]  # past the Confluent header: channel, key and the first fields, enough to tell records apart


def assert_versions_gapless(published: dict[str, list[ReadRecord]], codec: AvroCodec) -> None:
    for topic, records in published.items():
        if not topic.startswith("availability."):
            continue
        first_by_version: dict[tuple[bytes, int], bytes] = {}
        for record in records:
            version = codec.decode(topic, record.value).value["version"]
            first = first_by_version.setdefault((record.key, version), record.value)
            assert first == record.value, f"{topic} {record.key!r} v{version}: a repeat is not byte-identical"
        versions = defaultdict(set)
        for key, version in first_by_version:
            versions[key].add(version)
        for key, seen in versions.items():
            assert seen == set(range(1, max(seen) + 1)), f"{topic} {key!r}: versions have gaps: {sorted(seen)}"


def assert_no_channel_accepted_more_than_shown(expected: Expected) -> None:
    """No accepted reservation took more than its channel showed when it was decided. Checked on the engine's
    outputs entry by entry: within a ledger record the service publishes each key's last value only
    (docs/CONTRACT.md), after the record's decisions, while the rule is about the value at the decision."""
    outputs = run_ledger(expected.entries, expected.channels, as_records=False) if expected.entries \
        else expected.outputs
    shown: dict[tuple[str, str], int] = {}
    for output in outputs:
        if isinstance(output, ChannelAvailability):
            shown[(output.channel, output.key)] = output.quantity
        elif isinstance(output, ReservationDecision) and output.outcome is ReservationOutcome.ACCEPTED:
            network = shown.get((output.channel, output.sku))
            if network is not None:
                assert output.reserved_quantity <= network, f"{output.reservation_id} took more than shown"
            else:
                for line in output.lines:
                    assert line.quantity <= shown.get((output.channel, f"{output.sku}/{line.location}"), 0)


def dead_letters(bootstrap_servers: str, partitions: int, want: int) -> list[ReadRecord]:
    return read_topic(bootstrap_servers, DEAD_LETTERS.name, partitions, until=lambda rs: len(rs) >= want)


def source_topic(record: ReadRecord) -> str:
    return dict(record.headers)[DEAD_LETTER_SOURCE_TOPIC_HEADER].decode()
