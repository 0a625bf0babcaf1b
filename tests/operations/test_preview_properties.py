"""Policy preview against the engine: it names exactly the keys the engine would publish, changes no state, and a
candidate equal to the policy in force changes nothing."""

from __future__ import annotations

import dataclasses

from hypothesis import given
from hypothesis import strategies as st

from app.engine import (
    ChannelAvailability,
    decode_partition_state,
    decode_sku_state,
    encode_partition_state,
    encode_sku_state,
)
from app.engine.limits import DEFAULT_LIMITS
from app.operations.preview import PolicyPreviewer
from tests.engine.factories import CHANNELS, Ledger
from tests.engine.test_properties import SETTINGS, build_events, op, policies


def ledger_of(events) -> Ledger:
    ledger = Ledger()
    ledger.feed(*events)
    return ledger


def snapshot(ledger: Ledger) -> tuple:
    store = ledger.store
    return (encode_partition_state(store.get_partition_state()),
            {sku: encode_sku_state(store.get_sku_state(sku)) for sku in store.skus()})


def preview_of(ledger: Ledger, candidate, limit: int = 3):
    store = ledger.store
    previewer = PolicyPreviewer(candidate, CHANNELS, DEFAULT_LIMITS, limit=limit, keep_changes=True)
    previewer.add_partition(0, decode_partition_state(encode_partition_state(store.get_partition_state())),
                            store.skus(), lambda sku: decode_sku_state(encode_sku_state(store.get_sku_state(sku))))
    return previewer.result


@SETTINGS
@given(policies(1), policies(2), st.lists(op, max_size=40), policies(3))
def test_preview_names_what_the_engine_would_publish_and_changes_nothing(first, second, ops, candidate):
    ledger = ledger_of(build_events(first, second, ops))
    before = snapshot(ledger)
    preview = preview_of(ledger, candidate)
    assert snapshot(ledger) == before, "the preview changed a state"

    clock = ledger.engine.state.clock
    published = [output for output in ledger.apply(dataclasses.replace(candidate, event_time=clock))
                 if isinstance(output, ChannelAvailability)]
    assert {(change.sku, change.channel, change.location, change.after, change.after_status)
            for change in preview.changes} == {
        (output.sku, output.channel, output.location, output.quantity, output.status.value) for output in published}
    assert len(preview.changes) == len(published)
    for name, channel in preview.channels.items():
        changes = [change for change in preview.changes if change.channel == name]
        assert channel.changed_keys == len(changes)
        assert channel.units_gained - channel.units_lost == sum(change.change for change in changes)
        assert channel.out_of_stock == sum(change.before > 0 and change.after == 0 for change in changes)
        top = channel.top()
        assert len(top) == min(3, len(changes))
        assert [abs(change.change) for change in top] == sorted((abs(c.change) for c in changes), reverse=True)[:3]


@SETTINGS
@given(policies(1), policies(2), st.lists(op, max_size=40))
def test_a_candidate_equal_to_the_policy_in_force_changes_nothing(first, second, ops):
    ledger = ledger_of(build_events(first, second, ops))
    in_force = ledger.engine.state.policies[-1][1]
    preview = preview_of(ledger, in_force)
    assert preview.changes == [] and preview.channels == {}
    assert preview.stale_version  # published as it is, the same version would be refused
    assert preview.skus == len(ledger.store.skus())
