"""The baselines' stateful job (benchmarks/baseline_job.py), without a broker: the same function the confluent-kafka
loop and the Quix Streams app run, with worked numbers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from benchmarks.baseline_job import SAFETY_STOCK, SkuState, apply_event, source_events


def movement(kind: str, location: str, quantity: int | None = None, **fields) -> dict:
    return {"sku": "SKU1", "location": location, "type": kind, "quantity": quantity, "delta": None,
            "disposition": None, **fields}


def command(action: str, reservation_id: str, quantity: int = 0, location: str | None = None) -> dict:
    return {"sku": "SKU1", "command": action, "reservation_id": reservation_id, "quantity": quantity,
            "location": location}


def test_a_receipt_at_a_store_changes_ecommerce_and_the_store_pickup_key() -> None:
    state = SkuState()
    assert apply_event(state, movement("RECEIPT", "ST001", 10)) == [
        ("ecommerce|SKU1", 10 - SAFETY_STOCK), ("store-pickup|SKU1/ST001", 10 - SAFETY_STOCK)]
    assert apply_event(state, movement("SALE", "ST001", 2)) == [
        ("ecommerce|SKU1", 7), ("store-pickup|SKU1/ST001", 7)]


def test_marketplace_gets_half_of_the_distribution_centres_and_only_when_that_half_changes() -> None:
    state = SkuState()
    assert apply_event(state, movement("RECEIPT", "DC1", 11)) == [("ecommerce|SKU1", 10), ("marketplace|SKU1", 5)]
    assert apply_event(state, movement("ADJUSTMENT", "DC1", delta=1)) == [("ecommerce|SKU1", 11)]  # 11 // 2 == 5
    assert apply_event(state, movement("RECEIPT", "ST002", 3)) == [("ecommerce|SKU1", 13),
                                                                     ("store-pickup|SKU1/ST002", 2)]


def test_a_reservation_holds_units_until_fulfilled_or_released() -> None:
    state = SkuState()
    apply_event(state, movement("RECEIPT", "ST001", 6))  # 5 available
    assert apply_event(state, command("RESERVE", "r1", 2, "ST001")) == [("ecommerce|SKU1", 3),
                                                                         ("store-pickup|SKU1/ST001", 3)]
    assert apply_event(state, command("FULFIL", "r1")) == []  # the units leave the shelf: availability stays 3
    assert apply_event(state, command("RESERVE", "r2", 1, "ST001")) == [("ecommerce|SKU1", 2),
                                                                         ("store-pickup|SKU1/ST001", 2)]
    assert apply_event(state, command("RELEASE", "r2")) == [("ecommerce|SKU1", 3), ("store-pickup|SKU1/ST001", 3)]
    assert apply_event(state, command("RELEASE", "r2")) == []  # ended already
    assert "id:r1" not in state and "id:r2" not in state


def test_a_cycle_count_sets_stock_and_a_quarantined_return_adds_none() -> None:
    state = SkuState()
    apply_event(state, movement("RECEIPT", "ST001", 6))
    assert apply_event(state, movement("RETURN", "ST001", 1, disposition="QUARANTINE")) == []
    assert apply_event(state, movement("CYCLE_COUNT", "ST001", 3)) == [("ecommerce|SKU1", 2),
                                                                        ("store-pickup|SKU1/ST001", 2)]


def test_a_batch_record_holds_its_movements_and_a_single_record_itself() -> None:
    batch = {"movements": [movement("RECEIPT", "DC1", 1), movement("RECEIPT", "DC2", 2)]}
    assert list(source_events(batch)) == batch["movements"]
    single = movement("SALE", "ST001", 1)
    assert list(source_events(single)) == [single]


@given(st.lists(st.tuples(st.sampled_from(["RECEIPT", "SALE", "ADJUSTMENT"]),
                          st.sampled_from(["DC1", "ST001", "ST002"]), st.integers(1, 20)), max_size=40))
def test_ecommerce_is_always_the_sum_of_what_every_location_has_available(moves) -> None:
    state = SkuState()
    published = {}
    for kind, location, quantity in moves:
        event = movement(kind, location, None if kind == "ADJUSTMENT" else quantity,
                         delta=quantity if kind == "ADJUSTMENT" else None)
        published.update(apply_event(state, event))
    expected = sum(max(0, state.get(f"o:{location}", 0) - SAFETY_STOCK) for location in ("DC1", "ST001", "ST002"))
    assert published.get("ecommerce|SKU1", 0) == expected
