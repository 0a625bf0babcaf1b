"""The state store the engine reads and writes: one per ledger partition.

The service backs it with its tables (buffering a micro-batch's writes until the batch's records are acknowledged);
tests use MemoryStore. The engine mutates the objects it gets and always puts them back after a change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from app.engine.codec import decode_partition_state, decode_sku_state, encode_partition_state, encode_sku_state
from app.engine.state import PartitionState, SkuState


class StateStore(Protocol):
    def get_sku_state(self, sku: str) -> SkuState | None: ...

    def put_sku_state(self, state: SkuState) -> None: ...

    def get_partition_state(self) -> PartitionState | None: ...

    def put_partition_state(self, state: PartitionState) -> None: ...

    def skus(self) -> Iterable[str]:
        """Every SKU with a state in this partition, in sorted order."""
        ...


class MemoryStore:
    """Dict-backed store holding live objects."""

    def __init__(self) -> None:
        self.sku_states: dict[str, SkuState] = {}
        self.partition_state: PartitionState | None = None

    def get_sku_state(self, sku: str) -> SkuState | None:
        return self.sku_states.get(sku)

    def put_sku_state(self, state: SkuState) -> None:
        self.sku_states[state.sku] = state

    def get_partition_state(self) -> PartitionState | None:
        return self.partition_state

    def put_partition_state(self, state: PartitionState) -> None:
        self.partition_state = state

    def skus(self) -> list[str]:
        return sorted(self.sku_states)


class EncodingStore:
    """Store that keeps only encoded bytes, as a table would: every get decodes, every put encodes. Used to prove
    that a run through the codec gives the same outputs as a run on live objects."""

    def __init__(self) -> None:
        self.sku_values: dict[str, bytes] = {}
        self.partition_value: bytes | None = None

    def get_sku_state(self, sku: str) -> SkuState | None:
        value = self.sku_values.get(sku)
        return None if value is None else decode_sku_state(value)

    def put_sku_state(self, state: SkuState) -> None:
        self.sku_values[state.sku] = encode_sku_state(state)

    def get_partition_state(self) -> PartitionState | None:
        return None if self.partition_value is None else decode_partition_state(self.partition_value)

    def put_partition_state(self, state: PartitionState) -> None:
        self.partition_value = encode_partition_state(state)

    def skus(self) -> list[str]:
        return sorted(self.sku_values)
