"""Availability records encoded straight from the engine's ChannelAvailability outputs.

The availability stage and replay publish one availability record per published change (about 1.1 per ledger entry
on the peak workload's mix). `ChannelAvailability.to_record()` makes a dict of 14 fields that the record's compiled
encoder then reads back; `availability_encoder` writes the same bytes from the output's attributes without the dict
(app.wire.avro_encoder.compile_object_encoder). SOURCES says where each field of avro/ChannelAvailability.avsc
comes from, as `to_record()` does; tests/wire/test_output_encoders.py checks both give the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable

from app.engine import ChannelAvailability
from app.engine.outputs import INDEX_MASK, POSITION_SHIFT
from app.wire.serialization import RecordSerde

SOURCES = {
    "channel": "value.channel",
    "sku": "value.sku",
    "location": "value.location",
    "quantity": "value.quantity",
    "status": "value.status.value",
    "version": "value.version",
    "event_id": "value.event_id",
    "ledger_partition": "value.ledger_partition",
    "ledger_offset": f"value.ledger_position >> {POSITION_SHIFT}",
    "ledger_index": f"value.ledger_position & {INDEX_MASK}",
    "policy_version": "value.policy_version",
    "event_time": "value.event_time",
    "snapshot": "value.snapshot",
    "fallbacks": "value.fallbacks",
}


def availability_encoder(serde: RecordSerde) -> Callable[[ChannelAvailability], bytes]:
    """The bytes of `serde.encode(output.to_record())` for an availability topic's serde, without the dict."""
    return serde.object_encoder(SOURCES, ChannelAvailability.to_record)
