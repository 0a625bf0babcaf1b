"""The ledger applied again on fresh state: one PartitionEngine per ledger partition, fed the entries of ledger
records in offset order. Replay publishes what comes out; reconciliation (app/operations/reconcile.py) keeps only
the states, as of an event time.

The SKU and partition states are live objects in memory (MemoryStore). The seen event ids and finished reservations,
which grow with every event of their windows, go to disk with `kept_on_disk` (app/replay/kept_on_disk.py), as the
live service keeps them in RocksDB; the applier is then closed after use, which deletes them.

`keep` chooses the entries applied (None: all of them). An entry left out is as if it were not on the ledger: the
engine never sees it, so it moves no clock and publishes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

from app.engine import EngineLimits, Event, MemoryStore, Output, PartitionEngine, Rejection
from app.engine.positions import ledger_position
from app.replay.kept_on_disk import KeptOnDisk
from app.wire.ledger import LedgerItem, Unreadable, apply_ledger_record, read_ledger_record
from app.wire.serialization import RecordSerde

EntryFilter = Callable[[Event], bool]


class LedgerApplier:
    """Applies ledger records to fresh per-partition engines. `apply(partition, offset, value)` returns, in order,
    (the entry, or None for a record that does not decode; output) for everything the entries gave: engine outputs,
    and a Rejection with reason UNDECODABLE_RECORD (or the decoder's reason) for what could not be read."""

    def __init__(self, ledger_serde: RecordSerde, channels: frozenset[str], limits: EngineLimits,
                 keep: EntryFilter | None = None, kept_on_disk: bool = False) -> None:
        self._ledger = ledger_serde
        self._channels = frozenset(channels)
        self._limits = limits
        self._keep = keep
        self.engines: dict[int, PartitionEngine] = {}
        self.events = 0  # ledger entries read (a batch record holds many; an undecodable record counts as one)
        self._kept_on_disk = kept_on_disk
        self._kept: KeptOnDisk | None = None  # made with the first engine: an applier never used leaves nothing
        self.peak_disk_bytes = 0  # the most its records took on disk, known once it is closed

    def __enter__(self) -> LedgerApplier:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def close(self) -> None:
        """Deletes what was kept on disk; the engines' stores answer no more."""
        if self._kept is not None:
            self._kept.close()
            self.peak_disk_bytes = self._kept.peak_disk_bytes
            self._kept = None

    def engine(self, partition: int) -> PartitionEngine:
        engine = self.engines.get(partition)
        if engine is None:
            if self._kept_on_disk and self._kept is None:
                self._kept = KeptOnDisk(self._limits)
            store = MemoryStore() if self._kept is None else self._kept.store(partition)
            engine = self.engines[partition] = PartitionEngine(partition, store, self._channels, limits=self._limits)
        return engine

    def apply(self, partition: int, offset: int, value: bytes | None,
              collect: bool = True) -> list[tuple[LedgerItem | None, Output]]:
        """`collect=False`: only the states matter (reconciliation); the engine's outputs are dropped."""
        results: list[tuple[LedgerItem | None, Output]] = []
        items = read_ledger_record(self._ledger, value)
        if type(items) is Unreadable:
            self.events += 1
            results.append((None, _unreadable(items, partition, offset)))
            return results
        self.events += len(items)
        base_position = ledger_position(offset)
        for item, _, outputs in apply_ledger_record(self.engine(partition), items, offset, self._keep):
            if type(outputs) is Unreadable:
                results.append((item, _unreadable(outputs, partition, base_position + item.index)))
            elif collect:
                for output in outputs:
                    results.append((item, output))
        return results


def _unreadable(unreadable: Unreadable, partition: int, position: int) -> Rejection:
    return Rejection(unreadable.reason, unreadable.error, None, None, partition, position)
