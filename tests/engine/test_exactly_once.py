"""Exactly once with no window: repeats of ledger entries (the service's own redeliveries), duplicates sent by
source systems, reservation retries and bad timestamps, each well past every old count limit (256 event ids and
256 finished reservations per SKU), and the windows that remain, at and just past their edges (docs/RULES.md,
section 9)."""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import (
    ChannelAvailability,
    EncodingStore,
    EngineLimits,
    Rejection,
    ReservationDecision,
    ReservationOutcome,
    decode_sku_state,
    encode_sku_state,
    reasons,
)
from app.engine.limits import DAY_MS
from tests.engine.factories import (
    Ledger,
    availability,
    decisions,
    fulfil,
    origin,
    policy,
    receipt,
    rejections,
    release,
    reserve,
    sale,
    tick,
)

START = 1_732_838_400_000  # event times are real epoch milliseconds here: the windows are days long
LIMITS = EngineLimits()


def stocked(quantity: int = 10) -> Ledger:
    ledger = Ledger()
    ledger.apply(policy(event_time=START), origin=origin(0, topic="source.policy-changes"))
    if quantity:
        ledger.apply(receipt(quantity, "S1", time=START, event_id="stock"),
                     origin=origin(0, topic="source.stock-movements"))
    return ledger


def sellable(ledger: Ledger, location: str = "S1") -> int:
    return ledger.sku().positions[location].sellable


# -- repeats of a ledger entry: recognised by source position, however far apart ----------------------------------


def test_a_repeat_written_thousands_of_entries_later_changes_nothing():
    """The issue's reproduction: a sale, 300 (here 5,000) other events on its SKU, then the same sale again."""
    ledger = stocked(10)
    first_sale = sale(1, time=START + 1, event_id="pos-1")
    ledger.apply(first_sale, origin=origin(1, topic="source.store-transactions"))
    assert sellable(ledger) == 9
    for n in range(5_000):
        at = START + 2 + n
        ledger.apply(receipt(1, "S2", time=at, event_id=f"r{n}"), origin=origin(2 + n, topic="source.store-transactions"))
    out = ledger.apply(first_sale, origin=origin(1, topic="source.store-transactions"))
    assert out == [] and sellable(ledger) == 9


def test_a_repeated_bulk_record_is_recognised_entry_by_entry():
    """Movements of one bulk source record share its offset: the index inside the record tells them apart, so a
    re-sent record changes nothing and a record cut short by a crash is completed, not doubled."""
    ledger = stocked(0)
    movements = [receipt(1, "S1", time=START + 1, event_id=f"bulk-{index}") for index in range(500)]
    for index, movement in enumerate(movements[:300]):  # the first copy: a crash after 300 of them
        ledger.apply(movement, origin=origin(7, index, topic="source.stock-movements"))
    assert sellable(ledger) == 300
    for index, movement in enumerate(movements):  # the whole record again
        ledger.apply(movement, origin=origin(7, index, topic="source.stock-movements"))
    assert sellable(ledger) == 500


def test_sources_are_tracked_apart():
    """The same offset in two source partitions (or topics) is two different records."""
    ledger = stocked(0)
    ledger.apply(receipt(1, time=START + 1, event_id="a"), origin=origin(5, partition=0))
    ledger.apply(receipt(1, time=START + 1, event_id="b"), origin=origin(5, partition=1))
    ledger.apply(receipt(1, time=START + 1, event_id="c"), origin=origin(5, topic="source.other"))
    assert sellable(ledger) == 3
    assert sorted(ledger.sku().sources) == ["source.other/0", "source.test/0", "source.test/1"]


# -- duplicates sent by a source system: the same event id, within the window --------------------------------------


def test_a_source_duplicate_is_ignored_however_many_events_came_between():
    ledger = stocked(10)
    ledger.apply(sale(1, time=START + 1, event_id="pos-1"), origin=origin(1))
    for n in range(2_000):
        ledger.apply(receipt(1, "S2", time=START + 2 + n), origin=origin(2 + n))
    out = ledger.apply(sale(1, time=START + 1, event_id="pos-1"), origin=origin(5_000))  # re-sent by the POS
    assert out == [] and sellable(ledger) == 9


def test_the_duplicate_window_is_exact_at_its_edge():
    """Remembered while the partition clock is at most duplicate_window_ms past the first copy's event time."""
    for clock_past, applied_again in ((DAY_MS, False), (DAY_MS + 1, True)):
        ledger = stocked(10)
        ledger.apply(sale(1, time=START + 1, event_id="pos-1"), origin=origin(1))
        ledger.apply(tick(START + 1 + clock_past))
        ledger.apply(sale(1, time=START + 1, event_id="pos-1"), origin=origin(2))
        assert sellable(ledger) == (8 if applied_again else 9), clock_past


def test_the_duplicate_window_is_a_setting():
    ledger = Ledger(limits=EngineLimits(duplicate_window_ms=60_000))
    ledger.apply(policy(event_time=START))
    ledger.apply(receipt(5, time=START, event_id="stock"))
    ledger.apply(sale(1, time=START + 1, event_id="pos-1"))
    ledger.apply(tick(START + 1 + 60_001))
    ledger.apply(sale(1, time=START + 1, event_id="pos-1"))
    assert sellable(ledger) == 3


# -- reservation ids: idempotent for the retention, whatever happened since -----------------------------------------


def test_a_reservation_retried_after_300_others_gets_its_stored_answer():
    """The issue's reproduction: R-1 reserved and fulfilled, then 300 other reservations on its SKU, then order
    management retries R-1 (every retry through the HTTP API has a new event id)."""
    ledger = stocked(1_000)
    accepted = decisions(ledger.apply(reserve("R-1", 2, time=START + 1)))[0]
    assert decisions(ledger.apply(fulfil("R-1", time=START + 2)))[0].outcome is ReservationOutcome.FULFILLED
    for n in range(300):
        ledger.apply(reserve(f"R-other-{n}", 1, time=START + 3 + n))
        ledger.apply(release(f"R-other-{n}", time=START + 3 + n))
    before = sellable(ledger), ledger.sku().positions["S1"].reserved
    retried = decisions(ledger.apply(reserve("R-1", 2, time=START + 400)))
    assert [(d.outcome, d.reserved_quantity, d.lines) for d in retried] == [
        (ReservationOutcome.ACCEPTED, 2, accepted.lines)
    ]
    assert (sellable(ledger), ledger.sku().positions["S1"].reserved) == before  # nothing reserved again
    again = decisions(ledger.apply(fulfil("R-1", time=START + 401)))
    assert [(d.outcome, d.reason) for d in again] == [(ReservationOutcome.FULFILLED, None)]
    assert sellable(ledger) == before[0]


def test_the_reservation_retention_is_exact_at_its_edge():
    for clock_past, new_again in ((7 * DAY_MS, False), (7 * DAY_MS + 1, True)):
        ledger = stocked(10)
        ledger.apply(reserve("R-1", 2, time=START + 1))
        ledger.apply(release("R-1", time=START + 2))
        ledger.apply(tick(START + 2 + clock_past))
        out = ledger.apply(reserve("R-1", 2, time=START + 2 + clock_past))
        decision = decisions(out)[0]
        assert decision.outcome is ReservationOutcome.ACCEPTED
        assert (ledger.sku().positions["S1"].reserved == 2) is new_again, clock_past


# -- bad timestamps: the future bound --------------------------------------------------------------------------------


def test_a_timestamp_in_microseconds_expires_nothing_and_moves_no_clock():
    """The issue's reproduction: a sale stamped in microseconds instead of milliseconds."""
    ledger = stocked(10)
    ledger.apply(reserve("R-live", 2, time=START + 1, expires_at=START + 600_000))
    clock = ledger.engine.state.clock
    bad = sale(1, time=(START + 2) * 1000, event_id="pos-us")
    out = ledger.apply(bad, origin=origin(3, ingest_time=START + 2))
    assert [(r.reason, r.event_id) for r in rejections(out)] == [(reasons.EVENT_TIME_IN_FUTURE, "pos-us")]
    assert not availability(out) and not decisions(out)
    assert ledger.engine.state.clock == clock and "R-live" in ledger.sku().reservations
    later = decisions(ledger.apply(reserve("R-next", 1, time=START + 3, expires_at=START + 600_000),
                                   origin=origin(4, ingest_time=START + 3)))
    assert [(d.outcome, d.reason) for d in later] == [(ReservationOutcome.ACCEPTED, None)]


def test_the_future_bound_is_exact_at_its_edge():
    skew = LIMITS.max_event_time_skew_ms
    for ahead, refused in ((skew, False), (skew + 1, True)):
        ledger = stocked(10)
        out = ledger.apply(sale(1, time=START + 10 + ahead), origin=origin(1, ingest_time=START + 10))
        assert bool(rejections(out)) is refused, ahead
        assert sellable(ledger) == (10 if refused else 9)


def test_a_malformed_reserve_gets_a_rejected_decision_and_a_rejection():
    ledger = stocked(10)
    out = ledger.apply(reserve("R-bad", 0, time=START + 1))
    assert [(type(o).__name__, o.reason) for o in out] == [
        ("ReservationDecision", reasons.INVALID_QUANTITY),
        ("Rejection", reasons.INVALID_QUANTITY),
    ]
    assert out[0].outcome is ReservationOutcome.REJECTED and out[0].reservation_id == "R-bad"
    future = ledger.apply(reserve("R-late", 1, time=START + 10_000_000), origin=origin(2, ingest_time=START))
    assert [(type(o).__name__, o.reason) for o in future] == [
        ("ReservationDecision", reasons.EVENT_TIME_IN_FUTURE),
        ("Rejection", reasons.EVENT_TIME_IN_FUTURE),
    ]


def test_a_command_whose_reservation_id_is_unusable_gets_only_a_rejection():
    ledger = stocked(10)
    out = ledger.apply(reserve("bad id with spaces", 1, time=START + 1))
    assert [(type(o).__name__, o.reason) for o in out] == [("Rejection", reasons.INVALID_ID)]


def test_a_refused_policy_moves_no_clock():
    ledger = stocked(10)
    clock = ledger.engine.state.clock
    stale = dataclasses.replace(policy(version=1), event_id="policy-again", event_time=START + 5 * DAY_MS)
    out = ledger.apply(stale)  # a version not above the current one: refused
    assert [r.reason for r in rejections(out)] == [reasons.STALE_POLICY_VERSION]
    assert ledger.engine.state.clock == clock


# -- crash consistency: records kept beside the SKU states are written first -----------------------------------------


def test_records_written_before_a_crash_do_not_answer_their_own_reapplication():
    """Seen event ids and finished reservations are stored before the SKU states, so after a crash the store can
    hold them for entries whose SKU states were lost. Applying those entries again gives the first run's output."""
    entries = [
        (policy(event_time=START), origin(0, topic="p")),
        (receipt(10, time=START, event_id="stock"), origin(0)),
        (reserve("R-1", 2, time=START + 1), origin(1)),
        (sale(1, time=START + 2, event_id="pos-1"), origin(2)),
        (release("R-1", time=START + 3), origin(3)),
        (reserve("R-2", 3, time=START + 4), origin(4)),
        (fulfil("R-2", time=START + 5), origin(5)),
        (reserve("R-1", 2, time=START + 6), origin(6)),  # a retry: the stored answer
    ]
    store = EncodingStore()
    first = Ledger(store=store)
    for event, where in entries[:2]:
        first.apply(event, origin=where)
    at_crash = dict(store.sku_values), store.partition_value
    first_outputs = [first.apply(event, origin=where) for event, where in entries[2:]]
    # the SKU and partition states as they were written before the crash; the kept records as they are now
    store.sku_values, store.partition_value = at_crash
    again = Ledger(store=store)
    again.offset = 1
    assert [again.apply(event, origin=where) for event, where in entries[2:]] == first_outputs


def _format_2_ledger(first_entry):
    """A ledger whose SKU1 state is in format 2 (finished R-1 and event id pos-1 inside it); `first_entry` is the
    first entry applied after the upgrade."""
    ledger = stocked(10)
    ledger.apply(reserve("R-1", 2, time=START + 1))
    ledger.apply(release("R-1", time=START + 2))
    ledger.apply(sale(1, time=START + 3, event_id="pos-1"))
    import json

    sku, position, positions, reservations, _sources, published, history = json.loads(encode_sku_state(ledger.sku())[1:])
    finished = [["R-1", "ecommerce", 2, None, "RELEASED", ["S1", 2]]]
    old = bytes((2,)) + json.dumps([sku, position, positions, reservations, finished, ["pos-1"], published, history]).encode()
    migrated = Ledger()
    migrated.offset = ledger.offset
    migrated.apply(policy(event_time=START), offset=0)
    migrated.store.put_sku_state(decode_sku_state(old))
    migrated.engine.state.clock = START + 3
    return migrated, migrated.apply(first_entry)


def test_a_state_of_an_older_format_keeps_its_answers():
    """Format 2 kept finished reservations and event ids inside the SKU's state: they still answer."""
    migrated, out = _format_2_ledger(sale(1, time=START + 3, event_id="pos-1"))
    assert out == [] and sellable(migrated) == 9  # the old event id still counts: the sale is not applied again
    retried = decisions(migrated.apply(release("R-1", time=START + 4)))
    assert [(d.outcome, d.reason) for d in retried] == [(ReservationOutcome.RELEASED, None)]
    assert migrated.sku().legacy is None


def test_an_older_state_first_touched_by_a_policy_change_keeps_its_answers():
    migrated, _ = _format_2_ledger(dataclasses.replace(policy(version=2), event_time=START + 3))
    assert migrated.sku().legacy is None
    assert migrated.apply(sale(1, time=START + 3, event_id="pos-1")) == []
    retried = decisions(migrated.apply(release("R-1", time=START + 4)))
    assert [(d.outcome, d.reason) for d in retried] == [(ReservationOutcome.RELEASED, None)]


# -- properties ------------------------------------------------------------------------------------------------------

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _projection(outputs: list) -> list:
    """Outputs without their ledger positions (a run with repeats has its later entries at other positions)."""
    kept = []
    for output in outputs:
        if isinstance(output, ChannelAvailability):
            kept.append(("A", output.channel, output.key, output.quantity, output.status, output.version,
                         output.event_id))
        elif isinstance(output, ReservationDecision):
            kept.append(("D", output.reservation_id, output.outcome, output.reason, output.reserved_quantity,
                         output.lines, output.event_id))
        elif isinstance(output, Rejection):
            kept.append(("R", output.reason, output.event_id))
    return kept


def _stream(length: int, seed: int) -> list:
    """A mixed stream for one SKU at two locations: receipts, sales and reservations, each with its own source
    offset, event times one millisecond apart."""
    import random

    rng = random.Random(seed)
    events = []
    for n in range(length):
        at = START + 10 + n
        roll = rng.random()
        if roll < 0.35:
            event = receipt(rng.randint(1, 5), rng.choice(("S1", "S2")), time=at, event_id=f"e{n}")
        elif roll < 0.6:
            event = sale(rng.randint(1, 3), rng.choice(("S1", "S2")), time=at, event_id=f"e{n}")
        elif roll < 0.85:
            event = reserve(f"R{rng.randint(0, 40)}", rng.randint(1, 3), time=at, event_id=f"e{n}",
                            expires_at=at + rng.choice((5, 50, 500)))
        else:
            event = release(f"R{rng.randint(0, 40)}", time=at, event_id=f"e{n}")
        events.append((event, origin(n + 1)))
    return events


def _run(entries: list) -> tuple[list, Ledger]:
    ledger = stocked(20)
    outputs = [ledger.apply(event, origin=where) for event, where in entries]
    return outputs, ledger


@PROPERTY
@given(length=st.integers(1, 900), seed=st.integers(0, 10**6), data=st.data())
def test_redelivering_any_suffix_of_any_length_changes_nothing(length, seed, data):
    """The ingest stage re-sends the tail of the stream (any length, well past 256), then the stream goes on."""
    stream = _stream(length, seed)
    start = data.draw(st.integers(0, length - 1), label="the re-sent suffix starts at")
    cut = data.draw(st.integers(start, length), label="the stream had reached")
    with_repeat = stream[:cut] + stream[start:cut] + stream[cut:]
    expected, plain = _run(stream)
    got, repeated = _run(with_repeat)
    flat_expected = [item for outputs in expected for item in _projection(outputs)]
    flat_got = [item for outputs in got for item in _projection(outputs)]
    assert flat_got == flat_expected
    assert all(outputs == [] for outputs in got[cut:cut + (cut - start)])  # the repeats themselves: nothing
    for location in ("S1", "S2"):
        a, b = plain.sku().positions.get(location), repeated.sku().positions.get(location)
        assert (a and (a.sellable, a.reserved)) == (b and (b.sellable, b.reserved))


@PROPERTY
@given(finished_between=st.integers(257, 3_000), command=st.sampled_from(["RESERVE", "RELEASE"]))
def test_a_retry_after_any_number_of_finished_reservations_gets_the_stored_answer(finished_between, command):
    ledger = stocked(10_000)
    first = decisions(ledger.apply(reserve("R-1", 3, time=START + 1)))[0]
    ledger.apply(release("R-1", time=START + 2))
    for n in range(finished_between):
        ledger.apply(reserve(f"R-{n + 2}", 1, time=START + 3))
        ledger.apply(release(f"R-{n + 2}", time=START + 3))
    reserved_before = ledger.sku().positions["S1"].reserved
    retry = reserve("R-1", 3, time=START + 4) if command == "RESERVE" else release("R-1", time=START + 4)
    answer = decisions(ledger.apply(retry))
    expected = ReservationOutcome.ACCEPTED if command == "RESERVE" else ReservationOutcome.RELEASED
    assert [(d.outcome, d.reason, d.lines) for d in answer] == [(expected, None, first.lines)]
    assert ledger.sku().positions["S1"].reserved == reserved_before


@PROPERTY
@given(ahead=st.integers(LIMITS.max_event_time_skew_ms + 1, 10**15), kind=st.sampled_from(["sale", "reserve", "policy",
                                                                                           "receipt"]))
def test_a_far_future_event_leaves_the_clock_and_every_live_reservation_unchanged(ahead, kind):
    ledger = stocked(50)
    for n in range(5):
        ledger.apply(reserve(f"R-{n}", 1, time=START + 1, expires_at=START + 1_000 * (n + 1)))
    clock = ledger.engine.state.clock
    live = {rid: (r.expires_at, r.lines) for rid, r in ledger.sku().reservations.items()}
    at = START + 2 + ahead
    event = {
        "sale": lambda: sale(1, time=at),
        "receipt": lambda: receipt(1, time=at),
        "reserve": lambda: reserve("R-future", 1, time=at),
        "policy": lambda: dataclasses.replace(policy(version=2), event_time=at),
    }[kind]()
    out = ledger.apply(event, origin=origin(99, ingest_time=START + 2))
    assert reasons.EVENT_TIME_IN_FUTURE in [r.reason for r in rejections(out)]
    assert not availability(out)
    assert ledger.engine.state.clock == clock
    assert {rid: (r.expires_at, r.lines) for rid, r in ledger.sku().reservations.items()} == live
