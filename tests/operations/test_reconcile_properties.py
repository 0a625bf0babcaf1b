"""Reconciliation against the engine: the reported impact is what the corrections do, and they make the service
hold what the export says."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from app.engine import ChannelAvailability, MemoryStore, PartitionEngine
from app.operations.drift import (
    CORRECTED_BUCKET,
    advance_to,
    compare,
    correct,
    corrections,
    drift_exception,
    stamped_up_to,
)
from app.operations.export import ExportRow
from tests.engine.factories import CHANNELS, channel, policy
from tests.engine.test_properties import LOCATIONS, SETTINGS, SKUS, build_events, op, policies

export_rows = st.lists(
    st.tuples(st.sampled_from(SKUS + ("NEW",)), st.sampled_from(LOCATIONS),
              st.sampled_from(("SELLABLE", "SELLABLE", "DAMAGED")), st.integers(0, 20)),
    max_size=12, unique_by=lambda row: row[:3],
)


def engines_as_of(events, as_of: int) -> dict[int, PartitionEngine]:
    """One partition (every SKU is in partition 0 of a one-partition ledger), as reconcile builds it."""
    engine = PartitionEngine(0, MemoryStore(), CHANNELS)
    keep = stamped_up_to(as_of)
    for offset, event in enumerate(events):
        if keep(event):
            engine.apply(event, offset)
    engines = {0: engine}
    advance_to(engines, as_of)
    return engines


def published(engine: PartitionEngine) -> dict:
    return {(state.sku, key): last.quantity for sku in engine.store.skus()
            for state in [engine.store.get_sku_state(sku)] for key, last in state.published.items()}


@SETTINGS
@given(policies(1), policies(2), st.lists(op, max_size=40), export_rows, st.integers(900, 1_600))
def test_corrections_move_each_channel_by_the_reported_impact_and_sellable_becomes_the_export(
        first, second, ops, drawn, as_of):
    events = build_events(first, second, ops)
    rows = [ExportRow(line, sku, location, bucket, on_hand)
            for line, (sku, location, bucket, on_hand) in enumerate(drawn, start=2)]
    engines = engines_as_of(events, as_of)
    comparison = compare(engines, 1, rows)
    assert comparison.compared == len(rows)
    assert comparison.agreeing + len(comparison.drifts) == len(rows)
    movements = corrections(comparison.drifts, "run", as_of)
    assert len(movements) == sum(drift.bucket == CORRECTED_BUCKET for drift in comparison.drifts)
    correct(engines, 1, movements, comparison)

    # the same positions again, corrected by applying the movements through the engine one by one
    independent = engines_as_of(events, as_of)[0]
    before = published(independent)
    outputs = []
    for movement in sorted(movements, key=lambda movement: movement.sku):
        outputs += independent.apply(movement, independent.state.last_position + 1)
    after = published(independent)
    moved = Counter()
    for key in after.keys() | before.keys():
        moved[key[1][0]] += after.get(key, 0) - before.get(key, 0)
    assert {channel: units for channel, units in moved.items() if units} == dict(comparison.impact)
    assert all(isinstance(output, ChannelAvailability) or output.__class__.__name__ == "InventoryException"
               for output in outputs)
    for drift in comparison.drifts:
        if drift.correctable:
            assert independent.store.get_sku_state(drift.sku).positions[drift.location].sellable == \
                drift.export_on_hand
        record = drift_exception(drift, as_of, "run").to_record()
        assert (record["kind"], record["quantity"], record["event_time"]) == (
            "RECONCILIATION_DRIFT", drift.export_on_hand - drift.service_on_hand, as_of)
    # ranked by absolute drift
    sizes = [abs(drift.drift) for drift in comparison.drifts]
    assert sizes == sorted(sizes, reverse=True)


def test_a_capped_channel_moves_less_than_the_sum_of_the_rows():
    capped = policy(channels=(channel("ecommerce", max_advertised=10),))
    from tests.engine.factories import receipt

    events = [capped, receipt(4, "S1", time=10), receipt(4, "S2", time=10)]
    engines = engines_as_of(events, 100)
    rows = [ExportRow(2, "SKU1", "S1", "SELLABLE", 9), ExportRow(3, "SKU1", "S2", "SELLABLE", 9)]
    comparison = compare(engines, 1, rows)
    assert [drift.drift for drift in comparison.drifts] == [5, 5]
    correct(engines, 1, corrections(comparison.drifts, "run", 100), comparison)
    assert comparison.impact == Counter({"ecommerce": 2})  # 8 -> 10 (cap), not 8 -> 18


def test_positions_are_those_of_the_entries_stamped_up_to_the_as_of_time():
    from tests.engine.factories import receipt, sale

    events = [policy(), receipt(10, "S1", time=100), sale(3, "S1", time=300)]
    rows = [ExportRow(2, "SKU1", "S1", "SELLABLE", 10)]
    assert compare(engines_as_of(events, 200), 1, rows).drifts == []
    [drift] = compare(engines_as_of(events, 300), 1, rows).drifts
    assert (drift.export_on_hand, drift.service_on_hand, drift.drift) == (10, 7, 3)
