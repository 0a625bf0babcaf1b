"""The state store the engine reads and writes: one per ledger partition.

The service backs it with its tables (buffering a micro-batch's writes until the batch's records are acknowledged);
tests use MemoryStore. The engine mutates the objects it gets and always puts them back after a change.

Besides one SkuState per SKU and the PartitionState, a store keeps two records that live beside the SKU states, so a
SKU's state stays small however many events and reservations it has seen: the event ids seen per SKU (for source
duplicates) and the finished reservations (for idempotent reservation ids). Both carry an event time, and the store
may forget them once the partition clock has passed their window (`forget_before`); the engine never relies on a
store forgetting: it checks every record's time itself, so answers do not depend on when a store cleans up.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Protocol

from app.engine.codec import (
    decode_finished,
    decode_partition_state,
    decode_sku_state,
    encode_finished,
    encode_partition_state,
    encode_sku_state,
)
from app.engine.limits import HOUR_MS
from app.engine.state import FinishedReservation, PartitionState, SkuState


class StateStore(Protocol):
    def get_sku_state(self, sku: str) -> SkuState | None: ...

    def put_sku_state(self, state: SkuState) -> None: ...

    def get_partition_state(self) -> PartitionState | None: ...

    def put_partition_state(self, state: PartitionState) -> None: ...

    def skus(self) -> Iterable[str]:
        """Every SKU with a state in this partition, in sorted order."""
        ...

    def get_seen_event(self, sku: str, event_id: str) -> tuple[int, int] | None:
        """(event time, ledger position) of the first entry with this event id on this SKU, if still kept."""
        ...

    def put_seen_event(self, sku: str, event_id: str, event_time: int, position: int) -> None: ...

    def get_finished(self, sku: str, reservation_id: str) -> FinishedReservation | None: ...

    def put_finished(self, sku: str, finished: FinishedReservation) -> None: ...

    def forget_before(self, seen_before: int, finished_before: int) -> None:
        """The store may drop seen event ids with an event time below `seen_before` and finished reservations with
        a `finished_clock` below `finished_before` (the engine no longer answers from them)."""
        ...


class TimedIndex:
    """key -> value, each with an event time; whole buckets of `bucket_ms` are dropped once the horizon passes
    their end. What a memory store keeps of seen event ids and finished reservations."""

    def __init__(self, bucket_ms: int = HOUR_MS) -> None:
        self.bucket_ms = bucket_ms
        self._entries: dict[Hashable, tuple[int, Any]] = {}
        self._buckets: dict[int, list[Hashable]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> Any:
        found = self._entries.get(key)
        return None if found is None else found[1]

    def put(self, key: Hashable, value: Any, time: int) -> None:
        previous = self._entries.get(key)
        self._entries[key] = (time, value)
        bucket = time // self.bucket_ms
        if previous is None or previous[0] // self.bucket_ms != bucket:
            self._buckets.setdefault(bucket, []).append(key)

    def forget_before(self, horizon: int) -> int:
        """Drop the buckets that end at or before `horizon`; returns how many entries went."""
        bucket_ms = self.bucket_ms
        expired = [bucket for bucket in self._buckets if (bucket + 1) * bucket_ms <= horizon]
        dropped = 0
        for bucket in expired:
            for key in self._buckets.pop(bucket):
                found = self._entries.get(key)
                if found is not None and found[0] // bucket_ms == bucket:  # not put again in a later bucket
                    del self._entries[key]
                    dropped += 1
        return dropped


class _KeptRecords:
    """Seen event ids and finished reservations in TimedIndexes: the part both memory stores share."""

    def __init__(self) -> None:
        self.seen_events = TimedIndex()
        self.finished = TimedIndex()

    def get_seen_event(self, sku: str, event_id: str) -> tuple[int, int] | None:
        return self.seen_events.get((sku, event_id))

    def put_seen_event(self, sku: str, event_id: str, event_time: int, position: int) -> None:
        self.seen_events.put((sku, event_id), (event_time, position), event_time)

    def forget_before(self, seen_before: int, finished_before: int) -> None:
        self.seen_events.forget_before(seen_before)
        self.finished.forget_before(finished_before)


class MemoryStore(_KeptRecords):
    """Dict-backed store holding live objects."""

    def __init__(self) -> None:
        super().__init__()
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

    def get_finished(self, sku: str, reservation_id: str) -> FinishedReservation | None:
        return self.finished.get((sku, reservation_id))

    def put_finished(self, sku: str, finished: FinishedReservation) -> None:
        self.finished.put((sku, finished.reservation_id), finished, finished.finished_clock)


class EncodingStore(_KeptRecords):
    """Store that keeps only encoded bytes, as a table would: every get decodes, every put encodes. Used to prove
    that a run through the codec gives the same outputs as a run on live objects."""

    def __init__(self) -> None:
        super().__init__()
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

    def get_finished(self, sku: str, reservation_id: str) -> FinishedReservation | None:
        value = self.finished.get((sku, reservation_id))
        return None if value is None else decode_finished(value)

    def put_finished(self, sku: str, finished: FinishedReservation) -> None:
        self.finished.put((sku, finished.reservation_id), encode_finished(finished), finished.finished_clock)
