"""Where a lookup's numbers come from (docs/OPERATIONS.md, Lookups): the availability stage's live state of the SKU
when it holds one, ahead of the table between write-backs; the table otherwise. No broker, no Faust app."""

from __future__ import annotations

from types import SimpleNamespace

from app.engine import SkuState, encode_sku_state
from app.engine.state import Published
from app.http.owner_state import current_sku_state


class LiveStore:
    def __init__(self, states: dict[str, SkuState]) -> None:
        self.states = states

    def cached_sku_state(self, sku: str) -> tuple[bool, SkuState | None]:
        return (True, self.states[sku]) if sku in self.states else (False, None)


def a_state(sku: str, version: int) -> SkuState:
    state = SkuState(sku)
    state.published[("ecommerce", None)] = Published(version, 10 * version, "IN_STOCK")
    return state


def service_with(live: dict[str, SkuState] | None, table: dict[bytes, bytes]):
    live_states = None if live is None else SimpleNamespace(live_store=lambda partition: LiveStore(live))
    return SimpleNamespace(live_states=live_states, tables=SimpleNamespace(sku_state=table))


def test_a_lookup_answers_from_the_live_state_ahead_of_the_table() -> None:
    table = {b"SKU-A": encode_sku_state(a_state("SKU-A", 1))}  # written back at v1
    service = service_with({"SKU-A": a_state("SKU-A", 3)}, table)  # applied up to v3, not written back yet
    assert current_sku_state(service, 0, "SKU-A").published[("ecommerce", None)].version == 3


def test_without_a_live_state_a_lookup_answers_from_the_table() -> None:
    table = {b"SKU-B": encode_sku_state(a_state("SKU-B", 2))}
    for service in (service_with({}, table), service_with(None, table)):  # not in the cache; no availability stage
        assert current_sku_state(service, 0, "SKU-B").published[("ecommerce", None)].version == 2
    assert current_sku_state(service_with({}, {}), 0, "SKU-C") is None
