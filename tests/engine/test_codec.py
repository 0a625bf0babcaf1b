"""Table value codec: orjson's bytes, and values written by the standard library's encoder still decode."""

from __future__ import annotations

import dataclasses
import json

from app.engine import decode_partition_state, encode_partition_state
from app.engine.positions import ledger_position
from tests.engine.factories import Ledger, policy


def test_text_outside_ascii_round_trips_and_escaped_values_still_decode():
    ledger = Ledger()
    ledger.apply(dataclasses.replace(policy(), source="Zentrale-Süd/東京"))
    value = encode_partition_state(ledger.engine.state)
    assert "Zentrale-Süd/東京".encode() in value  # UTF-8, not escapes
    assert encode_partition_state(decode_partition_state(value)) == value
    escaped = value[:1] + json.dumps(json.loads(value[1:]), separators=(",", ":"), ensure_ascii=True).encode()
    assert escaped != value and decode_partition_state(escaped).policies[0][1].source == "Zentrale-Süd/東京"
    assert decode_partition_state(escaped).last_position == ledger_position(0)


def test_decoded_states_share_their_names_and_encode_to_the_same_bytes():
    from app.engine import decode_sku_state, encode_sku_state
    from tests.engine.test_explain import worked_ledger

    value = encode_sku_state(worked_ledger().sku())
    first, second = decode_sku_state(value), decode_sku_state(value)
    assert encode_sku_state(first) == value
    # one copy per name across every cached state (about a quarter of a state's memory), not one per decode
    def names(state):
        return [*state.positions, *(name for key in state.published for name in key if name), *state.sources]

    assert names(first) and all(a is b for a, b in zip(names(first), names(second), strict=True))
    assert first.history and all(
        a[1] is b[1] and a[4] is b[4] for a, b in zip(first.history, second.history, strict=True))
    assert all(a.status is b.status for a, b in zip(first.published.values(), second.published.values(), strict=True))
    assert all(a is b for a, b in zip(first.published, second.published, strict=True))  # the keys themselves


def test_a_journal_is_kept_as_64_bit_integers_and_encodes_as_the_list_it_holds():
    from array import array

    from app.engine import decode_sku_state, encode_sku_state
    from tests.engine.factories import count, receipt, sale

    ledger = Ledger()
    ledger.feed(policy(), receipt(10, time=5), sale(2, time=6), sale(1, time=8))
    value = encode_sku_state(ledger.sku())
    assert b'"S1",7,0,0,0,0,null,-1,[5,10,6,-2,8,-1]' in value  # the same JSON as a list of ints would give
    decoded = decode_sku_state(value)
    assert type(decoded.positions["S1"].journal) is array and decoded.positions["S1"].journal.typecode == "q"
    assert encode_sku_state(decoded) == value
    ledger.feed(count(20, time=7))  # a count keeps the deltas after it, still as an array
    journal = ledger.sku().positions["S1"].journal
    assert type(journal) is array and journal.tolist() == [8, -1] and ledger.sku().positions["S1"].sellable == 19
