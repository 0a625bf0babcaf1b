"""A ledger record publishes each availability key it changes once (docs/CONTRACT.md, "Ordering guarantee"):
compared, over random histories cut into random records, with the same entries applied one by one."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

from hypothesis import given
from hypothesis import strategies as st

from app.engine import ChannelAvailability, ClockTick, EncodingStore, MemoryStore, PartitionEngine, PolicyChange
from app.engine.positions import ledger_position
from tests.engine.factories import CHANNELS, origin, policy, receipt, sale
from tests.engine.test_properties import SETTINGS, scenarios


def records_of(events: list, cuts: list[int]) -> list[list]:
    """The events as ledger records: a policy change or a clock tick alone, movements and commands in runs whose
    lengths come from `cuts`, as the ingest stage writes them."""
    records: list[list] = []
    run: list = []
    lengths = iter(cuts)
    limit = next(lengths, 1)
    for event in events:
        if type(event) in (PolicyChange, ClockTick):
            if run:
                records.append(run)
                run = []
            records.append([event])
            continue
        run.append(event)
        if len(run) >= limit:
            records.append(run)
            run, limit = [], next(lengths, 1)
    if run:
        records.append(run)
    return records


def apply_records(records: list[list], as_records: bool, store=None) -> list[list]:
    """Each record's outputs; `as_records=False` applies every entry on its own (at the same positions)."""
    engine = PartitionEngine(0, store or MemoryStore(), CHANNELS)
    out = []
    for offset, record in enumerate(records):
        outputs: list = []
        if as_records:
            engine.begin_record()
        for index, event in enumerate(record):
            outputs += engine.apply(event, ledger_position(offset, index))
        if as_records:
            outputs += engine.end_record()
        out.append(outputs)
    return out


def by_key(outputs) -> dict:
    found: dict = defaultdict(list)
    for output in outputs:
        if type(output) is ChannelAvailability:
            found[(output.channel, output.key)].append(output)
    return found


@SETTINGS
@given(scenarios, st.lists(st.integers(1, 12), max_size=40))
def test_a_record_publishes_each_changed_key_once_with_its_last_value(events, cuts):
    records = records_of(events, cuts)
    one_by_one = apply_records(records, as_records=False)
    coalesced = apply_records(records, as_records=True)
    versions: dict = defaultdict(int)
    for each, together in zip(one_by_one, coalesced):
        # decisions, rejections and exceptions are not coalesced: the same, in the same order
        assert [o for o in each if type(o) is not ChannelAvailability] == \
            [o for o in together if type(o) is not ChannelAvailability]
        changes, published = by_key(each), by_key(together)
        assert published.keys() == changes.keys()
        for key, outputs in published.items():
            assert len(outputs) == 1, key
            versions[key] += 1
            # the value and lineage of the key's last change in the record, with the next version
            assert outputs[0] == dataclasses.replace(changes[key][-1], version=versions[key])
        positions = [o.ledger_position for o in together if type(o) is ChannelAvailability]
        assert positions == sorted(positions)  # in ledger order of each key's last change


@SETTINGS
@given(scenarios, st.lists(st.integers(1, 12), max_size=40))
def test_records_give_the_same_outputs_again_also_through_the_codec(events, cuts):
    records = records_of(events, cuts)
    assert apply_records(records, True) == apply_records(records, True) == \
        apply_records(records, True, store=EncodingStore())


def test_a_record_applied_again_after_a_crash_publishes_nothing_new():
    """Redelivery of a whole record (its states were written back): its entries are recognised, nothing is
    published; the next record continues the versions."""
    engine = PartitionEngine(0, MemoryStore(), CHANNELS)
    first = [policy(event_time=1), receipt(10, time=2, event_id="r1"), sale(1, time=3, event_id="s1"),
             sale(2, time=4, event_id="s2")]
    engine.begin_record()
    engine.apply(first[0], ledger_position(0))
    engine.end_record()
    engine.begin_record()
    for index, event in enumerate(first[1:]):
        engine.apply(event, ledger_position(1, index), origin(index))
    published = engine.end_record()
    assert {(o.channel, o.quantity, o.version, o.event_id) for o in published} >= {("ecommerce", 7, 1, "s2")}
    engine.begin_record()
    for index, event in enumerate(first[1:]):
        engine.apply(event, ledger_position(1, index), origin(index))
    assert engine.end_record() == []
    engine.begin_record()
    engine.apply(sale(1, time=5, event_id="s3"), ledger_position(2), origin(3))
    again = {o.channel: o for o in engine.end_record()}
    assert (again["ecommerce"].quantity, again["ecommerce"].version) == (6, 2)


def test_the_worked_example_of_rules_section_8():
    events = [receipt(10, time=2, event_id="r1"), sale(1, time=3, event_id="s1"), sale(2, time=4, event_id="s2")]
    records = [[policy(event_time=1)], events]
    ecommerce = [[(o.quantity, o.version, o.event_id) for o in outputs
                  if type(o) is ChannelAvailability and o.channel == "ecommerce"]
                 for outputs in apply_records(records, as_records=True)]
    assert ecommerce[1] == [(7, 1, "s2")]
    one_by_one = [[(o.quantity, o.version) for o in outputs if type(o) is ChannelAvailability and o.channel == "ecommerce"]
                  for outputs in apply_records([[event] for record in records for event in record], as_records=True)]
    assert one_by_one[1:] == [[(10, 1)], [(9, 2)], [(7, 3)]]
