"""Explanations of a SKU's numbers (app.engine.explain), the per-SKU entry history behind them, and the repeated
reserve answers the synchronous reservation API relies on."""

from __future__ import annotations

from hypothesis import given

from app.engine import ReservationOutcome, decode_sku_state, encode_sku_state, reasons
from app.engine.codec import SKU_STATE_FORMAT, StateDecodeError
from app.engine.explain import explain_sku, quantity_steps
from app.engine.positions import ledger_position
from app.engine.state import HISTORY_LIMIT
from tests.engine.factories import Ledger, decisions, receipt, release, reserve, sale, tick
from tests.engine.test_properties import SETTINGS, SKUS, run, scenarios
from tests.engine.test_rules import worked_ledger


def key_of(document: dict, channel: str, location: str | None = None) -> dict:
    [plan] = [c for c in document["channels"] if c["channel"] == channel]
    [key] = [k for k in plan["keys"] if k["location"] == location]
    return key


# -- the worked example of docs/RULES.md, explained ---------------------------------------------------------------


def test_worked_example_is_explained_step_by_step():
    ledger = worked_ledger()
    document = explain_sku(ledger.sku(), ledger.engine.state)

    assert document["policy"] == {"version": 1, "event_id": "policy-1", "effective_offset": 0}
    locations = {row["location"]: row for row in document["locations"]}
    assert locations["S1"]["safety_stock"] == {"quantity": 2, "rule": "LOCATION_TYPE"}
    assert locations["S2"]["safety_stock"] == {"quantity": 0, "rule": "SKU_LOCATION"}  # specificity, not size
    assert locations["DC1"]["safety_stock"] == {"quantity": 0, "rule": None}
    assert (locations["S1"]["atp"], locations["DC1"]["atp"], locations["DC1"]["atp_with_transit"]) == (8, 40, 46)
    assert locations["DC1"]["channels"] == ["ecommerce", "marketplace", "wholesale"]

    marketplace = key_of(document, "marketplace")
    # 40 - 3 = 37; 50% -> 18; min(18, 40) = 18; - 3 = 15; cap 12
    assert marketplace["steps"] == {"pool": 40, "own_reserved": 0, "gross": 40, "after_waterfall": 37, "share": 18,
                                    "free": 18, "after_buffer": 15, "quantity": 12}
    assert (marketplace["quantity"], marketplace["status"]) == (12, "IN_STOCK")
    assert marketplace["published"]["quantity"] == 12 and marketplace["matches_published"]
    plan = next(c for c in document["channels"] if c["channel"] == "marketplace")
    assert plan["rule"]["protected_above"] == 3 and plan["rule"]["max_advertised"] == 12
    assert plan["rule"]["locations"] == ["DC1"]

    wholesale = key_of(document, "wholesale")
    assert wholesale["pool_locations"] == [{"location": "DC1", "units": 46}]  # in transit counted
    pickup_s2 = key_of(document, "store-pickup", "S2")
    assert (pickup_s2["quantity"], pickup_s2["status"], pickup_s2["key"]) == (1, "LOW_STOCK", "SKU1/S2")
    assert [c["channel"] for c in document["channels"]] == ["ecommerce", "marketplace", "wholesale", "store-pickup"]


def test_reservations_show_as_own_reserved_and_in_the_history():
    ledger = worked_ledger()
    ledger.feed(reserve("r1", 10, channel_name="marketplace", event_id="c-r1"))
    document = explain_sku(ledger.sku(), ledger.engine.state, channel="marketplace")

    assert [c["channel"] for c in document["channels"]] == ["marketplace"]
    steps = key_of(document, "marketplace")["steps"]
    # pool 30, own 10: 30 + 10 - 3 = 37; 50% -> 18; - own 10 = 8; - buffer 3 = 5
    assert (steps["pool"], steps["own_reserved"], steps["share"], steps["free"], steps["quantity"]) == (30, 10, 18, 8, 5)
    assert document["reservations"] == [
        {"reservation_id": "r1", "channel": "marketplace", "requested_quantity": 10, "reserved_quantity": 10,
         "lines": [{"location": "DC1", "quantity": 10}], "expires_at": None}
    ]
    newest = document["recent_entries"][0]
    assert newest == {"event_id": "c-r1", "kind": "RESERVE", "ledger_partition": 0,
                      "ledger_offset": ledger.offset, "ledger_index": 0, "result": "ACCEPTED", "reservation_id": "r1"}


def test_location_filter_keeps_network_channels_whole():
    ledger = worked_ledger()
    document = explain_sku(ledger.sku(), ledger.engine.state, location="S2")
    assert [row["location"] for row in document["locations"]] == ["S2"]
    assert [k["location"] for k in next(c for c in document["channels"] if c["channel"] == "store-pickup")["keys"]] \
        == ["S2"]
    assert key_of(document, "ecommerce")["quantity"] == 53  # the whole network pool
    assert explain_sku(ledger.sku(), ledger.engine.state, location="S9") is None


def test_before_any_policy_there_is_nothing_to_explain_per_channel():
    ledger = Ledger()
    ledger.feed(receipt(3))  # a fact: applied before any policy, published by no channel until one arrives
    assert ledger.sku().positions["S1"].sellable == 3 and ledger.outputs == []
    document = explain_sku(ledger.sku(), None)
    assert document["policy"] is None and document["channels"] == []
    assert explain_sku(worked_ledger().sku(), None)["channels"] == []


def test_explaining_does_not_change_the_state():
    ledger = worked_ledger()
    before = encode_sku_state(ledger.sku())
    explain_sku(ledger.sku(), ledger.engine.state)
    assert encode_sku_state(ledger.sku()) == before
    assert ledger.sku().policy is ledger.engine.policy_at(ledger.position)


# -- the entry history -------------------------------------------------------------------------------------------


def test_history_keeps_the_last_entries_with_their_positions_and_results():
    ledger = Ledger(partition=3)
    from tests.engine.factories import policy

    ledger.feed(policy(), receipt(2, event_id="m1"), sale(5, event_id="m2"))  # a fact: applied, stock below 0
    ledger.feed(reserve("big", 1, event_id="c0"), receipt(10, event_id="m3"))  # refused: nothing to promise
    ledger.feed(reserve("r1", 1, expires_at=50, event_id="c1"), tick(60))
    history = [list(entry) for entry in ledger.sku().history]
    assert history == [
        ["m1", "RECEIPT", 3, ledger_position(1), "APPLIED", None],
        ["m2", "SALE", 3, ledger_position(2), "APPLIED", None],
        ["c0", "RESERVE", 3, ledger_position(3), reasons.INSUFFICIENT_STOCK, "big"],
        ["m3", "RECEIPT", 3, ledger_position(4), "APPLIED", None],
        ["c1", "RESERVE", 3, ledger_position(5), "ACCEPTED", "r1"],
        ["tick-3-6", "EXPIRY", 3, ledger_position(6), "EXPIRED", "r1"],
    ]
    for n in range(HISTORY_LIMIT + 5):
        ledger.feed(receipt(1, event_id=f"more{n}"))
    assert len(ledger.sku().history) == HISTORY_LIMIT
    assert ledger.sku().history[-1][0] == f"more{HISTORY_LIMIT + 4}"


def test_a_policy_change_is_an_entry_of_every_sku_it_reevaluates():
    from tests.engine.factories import policy

    ledger = worked_ledger()
    ledger.feed(policy(version=2))
    assert list(ledger.sku().history[-1]) == ["policy-2", "POLICY", 0, ledger.position, "APPLIED", None]


def test_state_formats_1_and_2_still_decode_with_their_kept_records_as_legacy():
    state = worked_ledger().sku()
    current = encode_sku_state(state)
    assert current[0] == SKU_STATE_FORMAT == 3
    import json

    sku, position, positions, reservations, _sources, published, history = json.loads(current[1:])
    finished = [["R-old", "ecommerce", 2, None, "RELEASED", ["S1", 2]]]
    format_2 = [sku, position, positions, reservations, finished, ["e-old"], published, history]
    for format_byte, body in ((2, format_2), (1, format_2[:-1])):
        decoded = decode_sku_state(bytes((format_byte,)) + json.dumps(body, separators=(",", ":")).encode())
        assert decoded.positions.keys() == state.positions.keys()
        assert [list(entry) for entry in decoded.history] == (history if format_byte == 2 else [])
        legacy_finished, legacy_ids = decoded.legacy
        assert [f.reservation_id for f in legacy_finished] == ["R-old"] and legacy_ids == ["e-old"]
        assert legacy_finished[0].lines == (("S1", 2),) and legacy_finished[0].final_outcome == "RELEASED"
    try:
        decode_sku_state(bytes((4,)) + current[1:])
    except StateDecodeError:
        pass
    else:
        raise AssertionError("an unknown format byte must not decode")


# -- repeated reserves: the original answer (what POST /reservations relies on) ------------------------------------


def test_a_repeated_reserve_gets_the_original_decision_whatever_changed_since():
    ledger = worked_ledger()
    refused = decisions(ledger.feed(reserve("big", 500)))[0]
    assert refused.reason == reasons.INSUFFICIENT_STOCK
    ledger.feed(receipt(1000, "DC1"))
    again = decisions(ledger.feed(reserve("big", 500)))[0]  # would fit now: still the first answer
    assert (again.outcome, again.reason, again.reserved_quantity) == (ReservationOutcome.REJECTED,
                                                                      reasons.INSUFFICIENT_STOCK, 0)

    accepted = decisions(ledger.feed(reserve("r1", 3)))[0]
    other_body = decisions(ledger.feed(reserve("r1", 7, allow_partial=True)))[0]  # same id, different request
    assert (other_body.outcome, other_body.requested_quantity, other_body.lines) == (
        accepted.outcome, accepted.requested_quantity, accepted.lines)
    ledger.feed(release("r1"))
    after_release = decisions(ledger.feed(reserve("r1", 3)))[0]  # finished: the reserve answer, nothing reserved
    assert (after_release.outcome, after_release.lines) == (ReservationOutcome.ACCEPTED, accepted.lines)
    assert sum(p.reserved for p in ledger.sku().positions.values()) == 0


def test_a_repeated_release_gets_the_same_outcome():
    ledger = worked_ledger()
    ledger.feed(reserve("r1", 3))
    first = decisions(ledger.feed(release("r1")))[0]
    second = decisions(ledger.feed(release("r1")))[0]
    assert first.outcome is second.outcome is ReservationOutcome.RELEASED
    assert first.lines == second.lines


# -- properties: the explanation agrees with what was published ---------------------------------------------------


@SETTINGS
@given(scenarios)
def test_explanations_agree_with_what_was_published(events):
    ledger, _ = run(events)
    for sku in SKUS:
        state = ledger.store.get_sku_state(sku)
        if state is None:
            continue
        document = explain_sku(state, ledger.engine.state)
        policy_now = ledger.engine.policy_at(state.last_position)
        for plan_document in document["channels"]:
            plan = policy_now.channel_by_name[plan_document["channel"]]
            for key in plan_document["keys"]:
                assert key["matches_published"], (sku, plan.name, key)
                assert key["quantity"] == ledger.shown(plan.name, sku, key["location"])
                steps = key["steps"]
                assert quantity_steps(plan, steps["pool"], steps["own_reserved"])["quantity"] == key["quantity"]
                assert steps["pool"] == sum(part["units"] for part in key["pool_locations"])
        for row in document["locations"]:
            assert row["safety_stock"]["quantity"] == policy_now.safety_stock(sku, row["location"])
        assert len(state.history) <= HISTORY_LIMIT
        offsets = [entry[3] for entry in state.history]
        assert offsets == sorted(offsets) and (not offsets or offsets[-1] <= state.last_position
                                               or state.history[-1][1] == "EXPIRY")
