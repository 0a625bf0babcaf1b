"""ChannelAvailability values for the connector tests, built and encoded the way the service writes them."""

from __future__ import annotations

from typing import Any

from app.wire.serialization import AvroCodec
from app.wire.topics import availability_topic, parse_availability_key


def availability_value(channel: str, key: str, version: int, *, quantity: int | None = None,
                       snapshot: bool = False) -> dict[str, Any]:
    sku, location = parse_availability_key(key)
    quantity = version * 10 if quantity is None else quantity
    return {
        "channel": channel, "sku": sku, "location": location, "quantity": quantity,
        "status": "IN_STOCK" if quantity > 5 else ("LOW_STOCK" if quantity else "OUT_OF_STOCK"),
        "version": version, "event_id": f"event-{key.replace('/', '-')}-{version}", "ledger_partition": 0,
        "ledger_offset": version, "policy_version": 1, "event_time": 1_700_000_000_000 + version, "snapshot": snapshot,
    }


def encoded(codec: AvroCodec, channel: str, key: str, version: int, **fields: Any) -> bytes:
    return codec.encode(availability_topic(channel).name, availability_value(channel, key, version, **fields))
