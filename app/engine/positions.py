"""Ledger positions: the one total order of the entries of a ledger partition.

A ledger record holds one entry, or a batch of entries of one partition (`LedgerEntryBatch`, written by the ingest
stage for the movements and commands of one source micro-batch). Entry `index` of the record at `offset` is at
position `offset * POSITION_STRIDE + index`: positions grow with offsets and, inside a record, with the index, so
"applied up to position p" means what "applied up to offset o" meant for one entry per record. The engine orders,
deduplicates and versions by position; what it publishes carries the pair (`ledger_offset`, `ledger_index`).
"""

from __future__ import annotations

from typing import NamedTuple

POSITION_STRIDE = 1 << 20
"""More entries than any ledger record can hold (a record is at most about 1 MB, an entry at least 20 bytes)."""


def ledger_position(offset: int, index: int = 0) -> int:
    return offset * POSITION_STRIDE + index


def split_position(position: int) -> tuple[int, int]:
    """(ledger offset, index inside the record) of a position; (-1, 0) for "none yet" (-1)."""
    if position < 0:
        return position, 0
    return divmod(position, POSITION_STRIDE)


class EntryOrigin(NamedTuple):
    """Where a ledger entry came from, as its ledger record says (app/wire/ledger.py): what the engine needs to tell a
    repeat of an entry from a new one, and a timestamp from the future from a real one."""

    source: str | None
    """`topic/partition` of the source record; None for entries the service makes itself (clock ticks)."""
    source_position: int | None
    """The source record's offset and the entry's index inside it (a bulk record holds many movements), packed as
    ledger positions are (`ledger_position(offset, index)`); None when the ledger record does not say."""
    ingest_time: int | None
    """Wall-clock time the ingest stage appended the entry (ms); None when unknown (tests, old records)."""


NO_ORIGIN = EntryOrigin(None, None, None)
