"""Byte encoding of SkuState and PartitionState for table values (RocksDB).

Format: one format byte, then compact JSON of positional arrays (no field names). JSON because it is fast (orjson,
in C: a hot SKU's state is tens of KB and is written back after every micro-batch that touches it), portable across
Python versions (unlike marshal or pickle) and can be inspected with any tool. orjson writes the bytes the standard
library's compact encoder writes, except that text outside ASCII is UTF-8 rather than escapes (both decode the
same; identifiers are ASCII). Deterministic: the same state, reached by the same history, gives the same bytes (dicts
are written in insertion order, which the engine's deterministic processing fixes; the expiry index is sorted).
Derived fields are not written; the engine rebuilds them under the policy in force when it first uses a state.

Bump the format byte for any change of layout, and keep decoding the previous format for one release.
"""

from __future__ import annotations

import sys

import orjson

from app.engine.events import event_from_record, event_to_record
from app.engine.state import FinishedReservation, PartitionState, Position, Published, Reservation, SkuState

SKU_STATE_FORMAT = 3
"""2 added the entry history (SkuState.history); 3 moved finished reservations and seen event ids out of the SKU's
state into records of their own and added the applied source positions. Formats 1 and 2 still decode: their
finished reservations and event ids come out in `SkuState.legacy`, which the engine moves into the store."""
PARTITION_STATE_FORMAT = 2
"""2 added the feeds seen and the silent ones (docs/RULES.md, section 12); format 1 still decodes, with none."""
FINISHED_FORMAT = 1

_dumps = orjson.dumps  # compact; bytes
_loads = orjson.loads
# A decoded state's names (locations, channels, statuses, entry kinds and results, sources) are interned: every SKU
# shares one copy instead of a fresh string each, about a quarter of a cached state's memory (docs/PERFORMANCE.md).
_name = sys.intern
# So are the (channel, location) keys of published versions: a few thousand across every SKU.
_published_keys: dict[tuple[str, str | None], tuple[str, str | None]] = {}


def _published_key(channel: str, location: str | None) -> tuple[str, str | None]:
    key = (channel, location)
    shared = _published_keys.get(key)
    if shared is None:
        shared = _published_keys[key] = (_name(channel), location if location is None else _name(location))
    return shared


class StateDecodeError(ValueError):
    """A table value is not a state this version can read (wrong format byte or corrupt). Restore the table from
    its changelog, or run the version that wrote it."""


def _flat_lines(lines: tuple[tuple[str, int], ...]) -> list:
    flat: list = []
    for location, units in lines:
        flat.append(location)
        flat.append(units)
    return flat


def _lines(flat: list) -> tuple[tuple[str, int], ...]:
    return tuple((_name(flat[index]), flat[index + 1]) for index in range(0, len(flat), 2))


def encode_sku_state(state: SkuState) -> bytes:
    body = [
        state.sku,
        state.last_position,
        [
            [
                location,
                p.sellable,
                p.damaged,
                p.quarantine,
                p.in_transit,
                p.reserved,
                p.last_count_time,
                p.journal_floor,
                p.journal.tolist(),
            ]
            for location, p in state.positions.items()
        ],
        [
            [r.reservation_id, r.channel, r.requested, r.expires_at, _flat_lines(r.lines)]
            for r in state.reservations.values()
        ],
        list(state.sources.items()),
        [[channel, location, p.version, p.quantity, p.status] for (channel, location), p in state.published.items()],
        state.history,
    ]
    return bytes((SKU_STATE_FORMAT,)) + _dumps(body)


def decode_sku_state(value: bytes) -> SkuState:
    if not value or value[0] not in _SKU_STATE_FORMATS:
        raise StateDecodeError(f"unknown SkuState format {value[:1]!r}")
    try:
        body = _loads(value[1:])
        if value[0] == SKU_STATE_FORMAT:
            sku, last_position, positions, reservations, sources, published, history = body
            legacy = None
        else:
            if value[0] == 1:  # format 1: no history yet
                body.append([])
            sku, last_position, positions, reservations, finished, recent_ids, published, history = body
            sources = []
            legacy = (
                [FinishedReservation(item[0], item[1], item[2], _lines(item[5]), item[3], item[4]) for item in finished],
                list(recent_ids),
            )
        state = SkuState(sku)
        state.last_position = last_position
        state.positions = {
            _name(item[0]): Position(item[1], item[2], item[3], item[4], item[5], item[6], item[7], item[8])
            for item in positions
        }
        state.reservations = {
            item[0]: Reservation(item[0], _name(item[1]), item[2], _lines(item[4]), item[3]) for item in reservations
        }
        state.sources = {_name(source): position for source, position in sources}
        state.published = {
            _published_key(item[0], item[1]): Published(item[2], item[3], _name(item[4])) for item in published
        }
        state.history = [
            (event_id, _name(kind), partition, position, _name(result), reservation_id)
            for event_id, kind, partition, position, result, reservation_id in history
        ]
        state.legacy = legacy
    except (ValueError, TypeError, IndexError, AttributeError) as error:
        raise StateDecodeError(f"corrupt SkuState: {error!r}") from error
    return state


_SKU_STATE_FORMATS = frozenset({1, 2, SKU_STATE_FORMAT})


def encode_partition_state(state: PartitionState) -> bytes:
    body = [
        state.partition,
        state.last_position,
        state.clock,
        [[offset, event_to_record(change)[1]] for offset, change in state.policies],
        sorted([expires_at, sku, rid] for (sku, rid), expires_at in state.expiries.items()),
        sorted([feed, location, time] for (feed, location), time in state.feeds_seen.items()),
        sorted([feed, location, time] for (feed, location), time in state.silent.items()),
    ]
    return bytes((PARTITION_STATE_FORMAT,)) + _dumps(body)


def decode_partition_state(value: bytes) -> PartitionState:
    if not value or value[0] not in (1, PARTITION_STATE_FORMAT):
        raise StateDecodeError(f"unknown PartitionState format {value[:1]!r}")
    try:
        body = _loads(value[1:])
        if value[0] == 1:
            body += [[], []]
        partition, last_offset, clock, policies, expiries, feeds_seen, silent = body
        state = PartitionState(partition)
        state.last_position = last_offset
        state.clock = clock
        state.policies = [(offset, event_from_record("PolicyChange", record)) for offset, record in policies]
        state.expiries = {(sku, rid): expires_at for expires_at, sku, rid in expiries}
        state.rebuild_heap()
        state.feeds_seen = {(feed, location): time for feed, location, time in feeds_seen}
        state.silent = {(feed, location): time for feed, location, time in silent}
    except (ValueError, TypeError, IndexError) as error:
        raise StateDecodeError(f"corrupt PartitionState: {error!r}") from error
    return state


def encode_finished(finished: FinishedReservation) -> bytes:
    body = [
        finished.reservation_id,
        finished.channel,
        finished.requested,
        finished.reserve_reason,
        finished.final_outcome,
        _flat_lines(finished.lines),
        finished.position,
        finished.finished_clock,
    ]
    return bytes((FINISHED_FORMAT,)) + _dumps(body)


def decode_finished(value: bytes) -> FinishedReservation:
    if not value or value[0] != FINISHED_FORMAT:
        raise StateDecodeError(f"unknown FinishedReservation format {value[:1]!r}")
    try:
        rid, channel, requested, reason, outcome, lines, position, finished_clock = _loads(value[1:])
        return FinishedReservation(rid, channel, requested, _lines(lines), reason, outcome, position, finished_clock)
    except (ValueError, TypeError, IndexError) as error:
        raise StateDecodeError(f"corrupt FinishedReservation: {error!r}") from error
