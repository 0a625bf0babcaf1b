"""The stateful job of the baselines that do work (the plain confluent-kafka loop and the Quix Streams app): pure.

Per event (a StockMovement, one movement of a StockMovementBatch, or a ReservationCommand) it updates one SKU's
state and returns the channel keys whose availability changed, with their new value. The state is a mapping-like
object with `get(key, default)`, `set(key, value)` and `delete(key)`: Quix's `State` as it is, a `SkuState` dict in
the confluent-kafka loop. Both baselines run this one function, so what separates their figures is the framework.

The rules are a fixed, simplified version of the service's (docs/RULES.md), enough to be the same kind of work:
- on hand per SKU-location, set by movements (a cycle count sets it, a quarantined return adds nothing);
- reserved units per SKU-location, from RESERVE, released by RELEASE, taken from stock by FULFIL (the reservation's
  location and quantity are kept in the state under its id, as FULFIL and RELEASE do not carry them);
- available at a location = on hand - reserved - a fixed safety stock of SAFETY_STOCK, at least 0;
- `ecommerce` (per SKU) = the sum over all locations, `marketplace` (per SKU) = half of the sum over distribution
  centres (locations named `DC...`, as the generator names them), `store-pickup` (per SKU/location) = a store's own.
"""

from __future__ import annotations

from typing import Any, Protocol

SAFETY_STOCK = 1
DC_PREFIX = "DC"  # benchmarks.generator names distribution centres DC0.. and stores ST000..
_ON_HAND = "o:"
_RESERVED = "r:"
_RESERVATION = "id:"
_NETWORK = "n:all"
_DC_NETWORK = "n:dc"
_DECREASES = frozenset({"SALE", "TRANSFER_SHIPPED"})


class State(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def delete(self, key: str) -> None: ...


class SkuState(dict):
    """One SKU's state as a plain dict, with the method names of Quix's `State`."""

    set = dict.__setitem__

    def delete(self, key: str) -> None:
        self.pop(key, None)


def source_events(value: dict) -> list | tuple:
    """The events of one decoded source record: a StockMovementBatch's movements, or the record itself."""
    movements = value.get("movements")
    return movements if movements is not None else (value,)


def apply_event(state: State, event: dict) -> list[tuple[str, int]]:
    """Apply one event to its SKU's state; returns (channel key, units available) for every key that changed."""
    sku = event["sku"]
    command = event.get("command")
    if command is None:
        location = event["location"]
        on_hand = state.get(_ON_HAND + location, 0)
        reserved = state.get(_RESERVED + location, 0)
        before = _available(on_hand, reserved)
        kind = event["type"]
        if kind == "CYCLE_COUNT":
            on_hand = event["quantity"]
        elif kind == "ADJUSTMENT":
            on_hand += event["delta"]
        elif kind in _DECREASES:
            on_hand -= event["quantity"]
        elif kind != "RETURN" or event.get("disposition") == "RESTOCK":
            on_hand += event["quantity"]
        state.set(_ON_HAND + location, on_hand)
    else:
        reservation_key = _RESERVATION + event["reservation_id"]
        if command == "RESERVE":
            location, quantity = event["location"], event["quantity"]
            state.set(reservation_key, [location, quantity])
        else:
            held = state.get(reservation_key)
            if held is None:  # already ended, or never seen: nothing to change
                return []
            location, quantity = held
            state.delete(reservation_key)
        on_hand = state.get(_ON_HAND + location, 0)
        reserved = state.get(_RESERVED + location, 0)
        before = _available(on_hand, reserved)
        if command == "RESERVE":
            reserved += quantity
        else:
            reserved -= quantity
            if command == "FULFIL":
                on_hand -= quantity
                state.set(_ON_HAND + location, on_hand)
        state.set(_RESERVED + location, reserved)
    change = _available(on_hand, reserved) - before
    if not change:
        return []
    network = state.get(_NETWORK, 0) + change
    state.set(_NETWORK, network)
    changed = [(f"ecommerce|{sku}", network)]
    if location.startswith(DC_PREFIX):
        dc_before = state.get(_DC_NETWORK, 0)
        state.set(_DC_NETWORK, dc_before + change)
        if (dc_before + change) // 2 != dc_before // 2:
            changed.append((f"marketplace|{sku}", (dc_before + change) // 2))
    else:
        changed.append((f"store-pickup|{sku}/{location}", before + change))
    return changed


def _available(on_hand: int, reserved: int) -> int:
    return max(0, on_hand - reserved - SAFETY_STOCK)
