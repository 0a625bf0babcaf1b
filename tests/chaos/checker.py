"""The reusable checker of the fault-injection tests: what the service published, against the engine run on the
events that were sent, each once.

    report = check_against_engine(bootstrap_servers, settings, codec, workload.sent.values())
    record_figures("kill_9", report.figures())
    report.assert_holds()

It reads the whole ledger (until it holds every event that was sent: sources are ingested independently, and after
a fault by another worker), keeps the first copy of each event in ledger order and drops every repeat
(tests.service.scenario.ledger_of_sent_events: the kept events must be exactly the events sent), runs the pure
engine on that (`run_ledger`), and reads every output topic until it holds at least the engine's records. A service
that applied a repeat twice publishes a record the oracle does not have (and then versions that differ), so double
counting is seen, not absorbed. Then, per key of every availability topic and per reservation of
`reservation-decisions`, in offset order:
- each published record is byte-identical to one of the engine's records for that key (a repeat after a crash is
  therefore byte-identical to its first copy);
- the first copies come in the engine's order with none skipped: versions gapless and increasing;
- every engine record was published (no loss), so the final availability of every key equals the engine's;
- the last record of the key (what a compacted topic keeps) is its newest version (no stale tail);
(inventory-exceptions is checked the same way, per key);
and, on the engine's outputs, no accepted reservation took more than its channel was shown.

Readers are incremental (one pass per topic, O(records)): a million-event ledger is checked in about a minute.
Completion is judged from the records themselves, never from watermarks (the embedded broker's high watermark is
the start of its last batch).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from app.engine import (
    ChannelAvailability,
    ClockTick,
    FeedActivity,
    InventoryException,
    PolicyChange,
    ReservationDecision,
    ReservationOutcome,
    run_ledger,
)
from app.settings import Settings
from app.wire.ledger import ledger_events
from app.wire.serialization import AvroCodec
from app.wire.topics import INVENTORY_EXCEPTIONS, LEDGER, RESERVATION_DECISIONS, availability_topic
from tests.service.harness import feed_topic
from tests.service.scenario import Expected, assert_no_channel_accepted_more_than_shown, ledger_of_sent_events

WRITTEN_BY_THE_SERVICE = (ClockTick, FeedActivity)  # ledger entries no source sent: they have no event id
NOT_SOURCE_EVENTS = (*WRITTEN_BY_THE_SERVICE, PolicyChange)


def consume_topic(bootstrap_servers: str, topic: str, on_message: Callable, done: Callable[[], bool] = lambda: True,
                  timeout: float = 120.0, idle_seconds: float = 1.0) -> bool:
    """Feed every record of `topic` (all partitions, from the beginning) to `on_message(message)` until the records
    it held at the start are read, `done()` holds and nothing arrived for `idle_seconds`. Returns False if `timeout`
    passed first. Fetches large enough for a million-event ledger."""
    return feed_topic(bootstrap_servers, topic, on_message, done=done, timeout=timeout, idle_seconds=idle_seconds,
                      **{"fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024})


def read_ledger_entries(bootstrap_servers: str, codec: AvroCodec, event_ids: set[str], timeout: float = 300.0):
    """(partition, position, event, origin) of the whole ledger, in ledger order, once it holds `event_ids`."""
    entries: list[tuple[int, int, object]] = []
    missing = set(event_ids)
    ledger = codec.serde(LEDGER)

    def on_message(message) -> None:
        for position, event, origin in ledger_events(ledger.decode(message.value()).value, message.offset()):
            entries.append((message.partition(), position, event, origin))
            event_id = getattr(event, "event_id", None)
            if event_id is not None:
                missing.discard(event_id)

    complete = consume_topic(bootstrap_servers, LEDGER.name, on_message, done=lambda: not missing, timeout=timeout)
    assert complete, f"the ledger lacks {len(missing)} of the {len(event_ids)} events sent, e.g. {sorted(missing)[:5]}"
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    return entries


@dataclass
class TopicCheck:
    expected: int = 0
    published: int = 0
    first_copies: int = 0
    duplicates: int = 0
    losses: int = 0
    unexpected: int = 0
    out_of_order: int = 0
    stale_tails: int = 0
    keys: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    ledger_entries: int
    source_events: int
    distinct_events: int
    rejections: int
    exceptions: int
    accepted_reservations: int
    topics: dict[str, TopicCheck]
    seconds: float
    accepted_within_shown: bool = True
    accepted_problem: str = ""
    ledger_event_ids: set[str] = field(default_factory=set, repr=False)

    def total(self, name: str) -> int:
        return sum(getattr(check, name) for check in self.topics.values())

    def figures(self) -> dict:
        return {
            "ledger_entries": self.ledger_entries,
            "events_checked": self.source_events,
            "distinct_events": self.distinct_events,
            "ledger_repeats": self.source_events - self.distinct_events,
            "expected_records": self.total("expected"),
            "published_records": self.total("published"),
            "duplicates": self.total("duplicates"),
            "losses": self.total("losses"),
            "unexpected_records": self.total("unexpected"),
            "out_of_order": self.total("out_of_order"),
            "stale_tails": self.total("stale_tails"),
            "keys_checked": self.total("keys"),
            "rejections": self.rejections,
            "inventory_exceptions": self.exceptions,
            "accepted_reservations": self.accepted_reservations,
            "accepted_within_shown": self.accepted_within_shown,
            "check_seconds": round(self.seconds, 1),
        }

    def problems(self) -> list[str]:
        found = [f"{topic}: {problem}" for topic, check in self.topics.items() for problem in check.problems]
        if not self.accepted_within_shown:
            found.append(self.accepted_problem)
        return found

    def assert_holds(self) -> None:
        problems = self.problems()
        assert not problems, f"{len(problems)} violations, first ones:\n" + "\n".join(problems[:20])


def expected_records(outputs: list, codec: AvroCodec, channels) -> dict[str, dict[bytes, list[bytes]]]:
    """topic -> key -> the engine's records of that key, encoded, in order."""
    by_topic: dict[str, dict[bytes, list[bytes]]] = {availability_topic(c).name: defaultdict(list) for c in channels}
    by_topic[RESERVATION_DECISIONS.name] = defaultdict(list)
    by_topic[INVENTORY_EXCEPTIONS.name] = defaultdict(list)
    serdes = {topic: codec.serde(topic) for topic in by_topic}
    for output in outputs:
        kind = type(output)
        if kind is ChannelAvailability:
            topic = availability_topic(output.channel).name
        elif kind is ReservationDecision:
            topic = RESERVATION_DECISIONS.name
        elif kind is InventoryException:
            topic = INVENTORY_EXCEPTIONS.name
        else:
            continue
        by_topic[topic][output.key.encode()].append(serdes[topic].encode(output.to_record()))
    return by_topic


def check_topic(bootstrap_servers: str, topic: str, wanted: dict[bytes, list[bytes]], timeout: float) -> TopicCheck:
    index = {key: {value: position for position, value in enumerate(values)} for key, values in wanted.items()}
    sequences: dict[bytes, list[int]] = defaultdict(list)
    seen: dict[bytes, set[int]] = defaultdict(set)
    check = TopicCheck(expected=sum(map(len, wanted.values())))
    distinct = 0

    def on_message(message) -> None:
        nonlocal distinct
        check.published += 1
        key = message.key()
        position = index.get(key, {}).get(message.value())
        if position is None:
            check.unexpected += 1
            if len(check.problems) < 20:
                check.problems.append(f"{key!r}: a record that is none of the engine's records for the key "
                                      f"(partition {message.partition()} offset {message.offset()})")
            return
        sequences[key].append(position)
        if position not in seen[key]:
            seen[key].add(position)
            distinct += 1

    consume_topic(bootstrap_servers, topic, on_message, done=lambda: distinct >= check.expected, timeout=timeout)
    check.keys = len(wanted)
    for key, values in wanted.items():
        next_new = 0
        for position in sequences.get(key, ()):
            if position == next_new:
                next_new += 1
            elif position < next_new:
                check.duplicates += 1
            else:
                check.out_of_order += 1
                if len(check.problems) < 20:
                    check.problems.append(f"{key!r}: record {position + 1} of {len(values)} published before "
                                          f"record {next_new + 1} (a gap or a reordering)")
        check.first_copies += next_new
        if next_new < len(values):
            check.losses += len(values) - next_new
            if len(check.problems) < 20:
                check.problems.append(f"{key!r}: {len(values) - next_new} of the engine's {len(values)} records "
                                      "never published (final value differs from the engine's)")
        sequence = sequences.get(key)
        if sequence and next_new and sequence[-1] != next_new - 1:
            check.stale_tails += 1
            if len(check.problems) < 20:
                check.problems.append(f"{key!r}: the last record is record {sequence[-1] + 1}, not the newest "
                                      f"({next_new}): a compacted topic would keep a stale value")
    return check


def check_versions_of_engine(outputs: list) -> None:
    """The reference itself: per (channel, key) versions 1, 2, 3... (a broken engine would fool the checker)."""
    last: dict[tuple[str, str], int] = {}
    for output in outputs:
        if type(output) is ChannelAvailability:
            previous = last.get((output.channel, output.key), 0)
            assert output.version == previous + 1, f"engine: {output.channel} {output.key} v{output.version} after v{previous}"
            last[(output.channel, output.key)] = output.version


def check_against_engine(bootstrap_servers: str, settings: Settings, codec: AvroCodec, sent,
                         timeout: float = 180.0) -> CheckReport:
    started = time.monotonic()
    deadline = started + timeout  # one budget for the whole check: a broken run fails in minutes, not per topic
    sent = list(sent)
    entries = read_ledger_entries(bootstrap_servers, codec, {event.event_id for event in sent}, timeout=timeout)
    oracle = ledger_of_sent_events(entries, sent)
    outputs = run_ledger(oracle, frozenset(settings.channels))
    check_versions_of_engine(outputs)
    wanted = expected_records(outputs, codec, settings.channels)
    topics = {topic: check_topic(bootstrap_servers, topic, by_key, max(10.0, deadline - time.monotonic()))
              for topic, by_key in wanted.items()}
    accepted = sum(1 for output in outputs if type(output) is ReservationDecision
                   and output.outcome is ReservationOutcome.ACCEPTED)
    report = CheckReport(
        ledger_entries=len(entries),
        source_events=sum(1 for _, _, event, _ in entries if type(event) not in NOT_SOURCE_EVENTS),
        distinct_events=sum(1 for _, _, event in oracle if type(event) not in NOT_SOURCE_EVENTS),
        ledger_event_ids={event.event_id for _, _, event, _ in entries if type(event) not in WRITTEN_BY_THE_SERVICE},
        rejections=sum(1 for output in outputs if type(output).__name__ == "Rejection"),
        exceptions=sum(1 for output in outputs if type(output) is InventoryException),
        accepted_reservations=accepted,
        topics=topics,
        seconds=0.0,
    )
    try:
        assert_no_channel_accepted_more_than_shown(Expected(outputs, {}, [], oracle, frozenset(settings.channels)))
    except AssertionError as error:
        report.accepted_within_shown, report.accepted_problem = False, str(error)
    report.seconds = time.monotonic() - started
    return report
