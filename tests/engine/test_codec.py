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
