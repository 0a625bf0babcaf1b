"""Policy preview, the pure part: what a candidate policy would change, computed by the engine itself.

Per ledger partition, a PartitionEngine over a throwaway store applies the candidate after the partition's last
entry, exactly as the availability stage applies a policy change: every SKU evaluated again under it (with the
fallbacks of the feeds the partition holds silent). The store hands the engine a fresh copy of each SKU state and
compares what the SKU would publish with what it published last, so nothing the caller holds is changed and
nothing is published. The candidate is previewed as the next version, at the partition's clock (it moves no clock,
so no reservation expires); `stale_version` says when its own version would be refused as it is.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from app.engine import EngineLimits, PartitionEngine, PartitionState, PolicyChange, SkuState
from app.engine.outputs import AvailabilityStatus

OUT_OF_STOCK = AvailabilityStatus.OUT_OF_STOCK
PREVIEW_EVENT_ID = "policy-preview"


@dataclass(frozen=True, slots=True)
class KeyChange:
    sku: str
    channel: str
    location: str | None
    before: int
    after: int
    before_status: str
    after_status: str

    @property
    def change(self) -> int:
        return self.after - self.before

    def to_json(self) -> dict:
        return {"sku": self.sku, "location": self.location, "before": self.before, "after": self.after,
                "change": self.change, "before_status": self.before_status, "after_status": self.after_status}


@dataclass
class ChannelPreview:
    changed_keys: int = 0
    units_gained: int = 0
    units_lost: int = 0
    out_of_stock: int = 0  # keys that showed units and would show none
    largest: list = field(default_factory=list)  # heap of (|change|, order, KeyChange); sorted by `top()`

    def top(self) -> list[KeyChange]:
        return [change for _, _, change in sorted(self.largest, key=lambda item: (-item[0], -item[1]))]

    def to_json(self) -> dict:
        return {"changed_keys": self.changed_keys, "units_gained": self.units_gained, "units_lost": self.units_lost,
                "out_of_stock": self.out_of_stock, "largest": [change.to_json() for change in self.top()]}


@dataclass
class PolicyPreview:
    candidate_version: int
    current_version: int | None = None  # the highest version in force over the partitions seen
    skus: int = 0
    partitions: list[int] = field(default_factory=list)
    channels: dict[str, ChannelPreview] = field(default_factory=dict)
    changes: list[KeyChange] | None = None  # every changed key, when asked for (tests)

    @property
    def stale_version(self) -> bool:
        return self.current_version is not None and self.candidate_version <= self.current_version

    def to_json(self) -> dict:
        return {"candidate_version": self.candidate_version, "current_version": self.current_version,
                "stale_version": self.stale_version, "skus": self.skus, "partitions": sorted(self.partitions),
                "channels": {name: self.channels[name].to_json() for name in sorted(self.channels)}}


StateLoader = Callable[[str], SkuState | None]
"""A fresh SkuState of a SKU (decoded for this call: the preview changes it)."""


class _PreviewStore:
    """StateStore whose SKU states are fresh copies, and whose writes are compared with what the SKU published
    last and then dropped."""

    def __init__(self, partition_state: PartitionState | None, skus: Iterable[str], load: StateLoader,
                 on_changed: Callable[..., None], counted: Callable[[], None]) -> None:
        self._partition_state = partition_state
        self._skus = sorted(skus)
        self._load = load
        self._on_changed = on_changed
        self._counted = counted
        self._before: tuple[str, dict] | None = None

    def get_sku_state(self, sku: str) -> SkuState | None:
        state = self._load(sku)
        if state is not None:
            self._before = (sku, {key: (last.quantity, last.status) for key, last in state.published.items()})
        return state

    def put_sku_state(self, state: SkuState) -> None:
        sku, before = self._before
        assert sku == state.sku, "the engine re-evaluates one SKU at a time"
        self._counted()
        on_changed = self._on_changed
        for key, last in state.published.items():
            quantity, status = last.quantity, last.status  # a status is an AvailabilityStatus or its name: equal
            previous = before.get(key)
            if previous is None:
                if quantity or status != OUT_OF_STOCK:
                    on_changed(sku, key, 0, quantity, OUT_OF_STOCK, status)
            elif previous[0] != quantity or previous[1] != status:
                on_changed(sku, key, previous[0], quantity, previous[1], status)

    def get_partition_state(self) -> PartitionState | None:
        return self._partition_state

    def put_partition_state(self, state: PartitionState) -> None:
        self._partition_state = state

    def skus(self) -> list[str]:
        return self._skus

    def get_seen_event(self, sku: str, event_id: str):
        return None

    def put_seen_event(self, sku: str, event_id: str, event_time: int, position: int) -> None:
        pass

    def get_finished(self, sku: str, reservation_id: str):
        return None

    def put_finished(self, sku: str, finished) -> None:
        pass

    def forget_before(self, seen_before: int, finished_before: int) -> None:
        pass


class PolicyPreviewer:
    """Feed it partition by partition (`add_partition`), then read `result`."""

    def __init__(self, candidate: PolicyChange, channels_with_topics: frozenset[str], limits: EngineLimits,
                 limit: int = 10, keep_changes: bool = False) -> None:
        self.candidate = candidate
        self.channels = frozenset(channels_with_topics)
        self.limits = limits
        self.limit = limit
        self.result = PolicyPreview(candidate.version, changes=[] if keep_changes else None)
        self._order = 0

    def add_partition(self, partition: int, partition_state: PartitionState | None, skus: Iterable[str],
                      load: StateLoader) -> None:
        """Preview the candidate on one ledger partition: its state (a copy: it is changed) and its SKUs."""
        state = partition_state or PartitionState(partition)
        current = state.policies[-1][1].version if state.policies else None
        result = self.result
        if current is not None and (result.current_version is None or current > result.current_version):
            result.current_version = current
        candidate = dataclasses.replace(self.candidate, event_id=PREVIEW_EVENT_ID, event_time=state.clock,
                                        version=max(self.candidate.version, (current or 0) + 1))
        store = _PreviewStore(state, skus, load, self._changed, self._counted)
        engine = PartitionEngine(partition, store, self.channels, limits=self.limits)
        engine.apply(candidate, state.last_position + 1)
        result.partitions.append(partition)

    def _counted(self) -> None:
        self.result.skus += 1

    def _changed(self, sku: str, key: tuple, before: int, after: int, before_status, after_status) -> None:
        channel = self.result.channels.get(key[0])
        if channel is None:
            channel = self.result.channels[key[0]] = ChannelPreview()
        channel.changed_keys += 1
        units = after - before
        if units > 0:
            channel.units_gained += units
        else:
            channel.units_lost -= units
        if before > 0 and after == 0:
            channel.out_of_stock += 1
        self._order += 1
        largest = channel.largest
        size = units if units >= 0 else -units
        if self.result.changes is None and len(largest) >= self.limit and (size, -self._order) <= largest[0][:2]:
            return  # neither kept nor among the largest: no record of it needed
        change = KeyChange(sku, key[0], key[1], before, after, _name(before_status), _name(after_status))
        if self.result.changes is not None:
            self.result.changes.append(change)
        entry = (size, -self._order, change)
        if len(largest) < self.limit:
            heapq.heappush(largest, entry)
        elif entry[:2] > largest[0][:2]:
            heapq.heapreplace(largest, entry)


def _name(status) -> str:
    return status.value if isinstance(status, AvailabilityStatus) else str(status)


def merge_preview_documents(documents: list[dict], limit: int) -> dict:
    """One preview document from those of workers covering different partitions (`PolicyPreview.to_json()`)."""
    current = [document["current_version"] for document in documents if document["current_version"] is not None]
    merged = {
        "candidate_version": documents[0]["candidate_version"] if documents else None,
        "current_version": max(current) if current else None,
        "skus": sum(document["skus"] for document in documents),
        "partitions": sorted(p for document in documents for p in document["partitions"]),
        "channels": {},
    }
    merged["stale_version"] = merged["current_version"] is not None and merged["candidate_version"] is not None \
        and merged["candidate_version"] <= merged["current_version"]
    for document in documents:
        for name, channel in document["channels"].items():
            into = merged["channels"].setdefault(name, {"changed_keys": 0, "units_gained": 0, "units_lost": 0,
                                                        "out_of_stock": 0, "largest": []})
            for counter in ("changed_keys", "units_gained", "units_lost", "out_of_stock"):
                into[counter] += channel[counter]
            into["largest"] += channel["largest"]
    for channel in merged["channels"].values():
        channel["largest"] = sorted(channel["largest"], key=lambda change: -abs(change["change"]))[:limit]
    merged["channels"] = dict(sorted(merged["channels"].items()))
    return merged
