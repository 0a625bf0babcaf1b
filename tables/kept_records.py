"""The records the engine keeps beside the SKU states, in the `sku-state` table: event ids seen per SKU (duplicates
sent by source systems, EngineLimits.duplicate_window_ms) and finished reservations (idempotent reservation ids,
EngineLimits.reservation_retention_ms). Keeping them out of the SKU values keeps a hot SKU's value small however many
events and reservations it has seen.

Keys (all start with `#`, which no SKU id can: they never mix with SKU keys, and sort before them in RocksDB):
- `#r/<sku>/<reservation id>`: one FinishedReservation (engine codec), through the changelog;
- `#f/<partition>/<end ms>/<seq>`: the (sku, reservation id) of finished reservations whose `finished_clock` falls
  before `end ms`, through the changelog: what to delete once the retention has passed `end ms`;
- `#s/<partition>/<end ms>/<seq>`: a segment of seen event ids (sku, event id, event time, ledger position) whose
  event time falls before `end ms`, through the changelog: one record per write-back, not one per event;
- `#n/<partition>`: the next segment number, through the changelog, written before the segments it numbers;
- `#e/<sku>/<event id>`: the seen event's (event time, position), LOCAL ONLY (RocksDB, no changelog): the index
  a lookup reads; rebuilt from the segments by whoever opens the partition without it (`#m/<partition>`, local:
  the last segment number indexed here).

Write order, within one changelog partition (records of one partition keep their order, so a recovery sees a
prefix): sequence, segments and finished records first, then the SKU states. A SKU state in the changelog therefore
never lacks the records its entries made; the converse (records of entries whose SKU state was lost) is harmless,
because the engine does not let a record answer the entry that wrote it (app.engine.partition). Expired buckets are
deleted at a write-back (tombstones); the engine checks every record's time itself, so when that happens changes
no answer.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import orjson
from rocksdict import WriteBatch

from app.engine import FinishedReservation
from app.engine.codec import decode_finished, encode_finished
from app.engine.limits import DEFAULT_LIMITS, EngineLimits

FINISHED_READ_CACHE = 1_000  # finished reservations read or written, kept decoded per partition (memory)
SEGMENT_MAX_ENTRIES = 5_000  # keeps a segment record far below Kafka's 1 MB (ids are at most 64 characters)
_SEEN_VALUE = struct.Struct(">qq")  # (event time, ledger position)

Write = tuple[bytes, bytes | None]  # a changelog write: key, value (None deletes the key)


def bucket_width(window_ms: int) -> int:
    """Width of the event-time buckets records expire by: a 24th of the window, at least a minute."""
    return max(60_000, window_ms // 24)


class PartitionDB:
    """The local RocksDB (or, in agent tests, memory) store of one table partition, read and written directly:
    no changelog, no current event needed."""

    def __init__(self, data, partition: int) -> None:
        db_for_partition = getattr(data, "_db_for_partition", None)
        self._db = db_for_partition(partition) if db_for_partition is not None else None
        self._data = data

    def get(self, key: bytes) -> bytes | None:
        if self._db is not None:
            return self._db.get(key)
        return self._data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        if self._db is not None:
            self._db.put(key, value)
        else:
            self._data[key] = value

    def delete(self, key: bytes) -> None:
        if self._db is not None:
            self._db.delete(key)
        else:
            self._data.pop(key, None)

    def write_many(self, items: list[tuple[bytes, bytes | None]]) -> None:
        """Puts (and deletions, for None) in one RocksDB write batch: a third of the cost of a put each."""
        if self._db is None:
            for key, value in items:
                if value is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = value
            return
        batch = WriteBatch(raw_mode=True)  # as Faust opens its databases (raw keys and values)
        for key, value in items:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self._db.write(batch)

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of every key starting with `prefix`, in key order."""
        if self._db is not None:
            for key, value in self._db.items(from_key=prefix):
                if not key.startswith(prefix):
                    return
                yield key, value
            return
        for key in sorted(key for key in list(self._data.keys()) if key.startswith(prefix)):
            yield key, self._data[key]


def _end_and_seq(key: bytes) -> tuple[int, int]:
    *_, end, seq = key.split(b"/")
    return int(end), int(seq)


class KeptRecords:
    """Seen event ids and finished reservations of one ledger partition, over its PartitionDB. Reads see the changes
    not written back yet; `changelog_writes()` gives what the next write-back sends, and `written()` then updates
    the local index."""

    def __init__(self, partition: int, db: PartitionDB, limits: EngineLimits = DEFAULT_LIMITS) -> None:
        self.partition = partition
        self._db = db
        self._seen_width = bucket_width(limits.duplicate_window_ms)
        self._finished_width = bucket_width(limits.reservation_retention_ms)
        self._seen_new: dict[tuple[str, str], tuple[int, int]] = {}
        self._finished_new: dict[tuple[str, str], FinishedReservation] = {}
        self._finished_read: dict[tuple[str, str], FinishedReservation | None] = {}
        self._seen_segments: dict[int, list[bytes]] = {}  # bucket end -> segment keys
        self._finished_segments: dict[int, list[bytes]] = {}
        self._seen_before = self._finished_before = -1  # horizons given by the engine
        self._next_seq = 0
        self._plan: _Plan | None = None  # what the pending write-back changes, from changelog_writes()
        self._load()

    # -- the engine's view (StateStore) ---------------------------------------------------------------------------

    def get_seen_event(self, sku: str, event_id: str) -> tuple[int, int] | None:
        found = self._seen_new.get((sku, event_id))
        if found is not None:
            return found
        value = self._db.get(_seen_key(sku, event_id))
        return None if value is None else _SEEN_VALUE.unpack(value)

    def put_seen_event(self, sku: str, event_id: str, event_time: int, position: int) -> None:
        self._seen_new[(sku, event_id)] = (event_time, position)

    def get_finished(self, sku: str, reservation_id: str) -> FinishedReservation | None:
        key = (sku, reservation_id)
        found = self._finished_new.get(key)
        if found is not None:
            return found
        try:
            return self._finished_read[key]
        except KeyError:
            value = self._db.get(_finished_key(sku, reservation_id))
            found = None if value is None else decode_finished(value)
            self._keep_decoded(key, found)
            return found

    def put_finished(self, sku: str, finished: FinishedReservation) -> None:
        self._finished_new[(sku, finished.reservation_id)] = finished

    def _keep_decoded(self, key: tuple[str, str], finished: FinishedReservation | None) -> None:
        """Keeps a finished reservation read or written, at most FINISHED_READ_CACHE of them. A read cache only:
        every one is in the database, so dropping them changes no answer."""
        if len(self._finished_read) >= FINISHED_READ_CACHE:
            self._finished_read.clear()
        self._finished_read[key] = finished

    def forget_before(self, seen_before: int, finished_before: int) -> None:
        self._seen_before = max(self._seen_before, seen_before)
        self._finished_before = max(self._finished_before, finished_before)

    # -- write-back -----------------------------------------------------------------------------------------------

    @property
    def is_dirty(self) -> bool:
        return bool(self._seen_new or self._finished_new) or self._expired_buckets() != ([], [])

    def changelog_writes(self) -> list[Write]:
        """What the write-back sends before the SKU states: the next segment number, new segments and finished
        records, then deletions of what has expired. Changes nothing until `written()`: calling it again gives the
        same writes."""
        plan = self._plan = _Plan(self._next_seq)
        writes: list[Write] = []
        seen_by_bucket: dict[int, list] = {}
        width = self._seen_width
        bucket_end, bucket = None, None
        for (sku, event_id), (event_time, position) in self._seen_new.items():
            end = (event_time // width + 1) * width
            if end != bucket_end:  # a write-back's events mostly share one bucket
                bucket_end, bucket = end, seen_by_bucket.setdefault(end, [])
            bucket.append((sku, event_id, event_time, position))  # orjson writes a tuple as an array
        finished_by_bucket: dict[int, list] = {}
        width = self._finished_width
        for (sku, reservation_id), finished in self._finished_new.items():
            writes.append((_finished_key(sku, reservation_id), encode_finished(finished)))
            end = (finished.finished_clock // width + 1) * width
            finished_by_bucket.setdefault(end, []).append([sku, reservation_id])
        segments: list[Write] = []
        for prefix, buckets in ((b"#s", seen_by_bucket), (b"#f", finished_by_bucket)):
            for end in sorted(buckets):
                entries = buckets[end]
                for start in range(0, len(entries), SEGMENT_MAX_ENTRIES):
                    key = b"%s/%d/%015d/%012d" % (prefix, self.partition, end, plan.next_seq)
                    plan.next_seq += 1
                    part = entries[start:start + SEGMENT_MAX_ENTRIES]
                    segments.append((key, orjson.dumps(part)))
                    plan.new_segments.append((prefix, end, key, part))
        if segments:
            writes.insert(0, (_sequence_key(self.partition), str(plan.next_seq).encode()))
            writes[1:1] = segments
        writes += self._expiry_writes(plan)
        return writes

    def written(self) -> None:
        """The changelog writes are sent: update the local index (new seen ids in, expired ones out), note the last
        segment indexed, and forget what changed."""
        plan, self._plan = self._plan, None
        if plan is None:
            plan = _Plan(self._next_seq)
        db = self._db
        for key in plan.index_deletions:
            db.delete(key)
        for end in plan.expired_seen:
            self._seen_segments.pop(end, None)
        for end in plan.expired_finished:
            self._finished_segments.pop(end, None)
        for key in plan.finished_deleted:
            self._finished_read.pop(key, None)
        last_indexed = None
        index: list[tuple[bytes, bytes]] = []
        pack = _SEEN_VALUE.pack
        for prefix, end, key, entries in plan.new_segments:
            (self._seen_segments if prefix == b"#s" else self._finished_segments).setdefault(end, []).append(key)
            if prefix == b"#s":
                index += [(_seen_key(sku, event_id), pack(event_time, position))
                          for sku, event_id, event_time, position in entries]
                last_indexed = _end_and_seq(key)[1]
        if last_indexed is not None:
            index.append((_marker_key(self.partition), str(last_indexed).encode()))
            db.write_many(index)
        self._next_seq = plan.next_seq
        self._seen_new.clear()
        for key, finished in self._finished_new.items():
            self._keep_decoded(key, finished)
        self._finished_new.clear()

    # -- loading and expiry ---------------------------------------------------------------------------------------

    def _load(self) -> None:
        """Find the partition's segments, and index the seen ids of those this local store has not indexed yet
        (a restore from the changelog, a standby promoted, a worker that never owned the partition)."""
        db = self._db
        next_seq = db.get(_sequence_key(self.partition))
        marker = db.get(_marker_key(self.partition))
        indexed_up_to = -1 if marker is None else int(marker)
        self._next_seq = 0 if next_seq is None else int(next_seq)
        for key, _ in db.scan(b"#f/%d/" % self.partition):
            end, seq = _end_and_seq(key)
            self._finished_segments.setdefault(end, []).append(key)
            self._next_seq = max(self._next_seq, seq + 1)
        last = indexed_up_to
        for key, value in db.scan(b"#s/%d/" % self.partition):
            end, seq = _end_and_seq(key)
            self._seen_segments.setdefault(end, []).append(key)
            self._next_seq = max(self._next_seq, seq + 1)
            if seq > indexed_up_to:
                for sku, event_id, event_time, position in orjson.loads(value):
                    db.put(_seen_key(sku, event_id), _SEEN_VALUE.pack(event_time, position))
                last = max(last, seq)
        if last > indexed_up_to:
            db.put(_marker_key(self.partition), str(last).encode())

    def _expired_buckets(self) -> tuple[list[int], list[int]]:
        return ([end for end in self._seen_segments if end <= self._seen_before],
                [end for end in self._finished_segments if end <= self._finished_before])

    def _expiry_writes(self, plan: _Plan) -> list[Write]:
        """Tombstones for the records of the buckets past their windows; the local index entries they held go in
        `written()`."""
        writes: list[Write] = []
        plan.expired_seen, plan.expired_finished = (sorted(ends) for ends in self._expired_buckets())
        db = self._db
        for end in plan.expired_seen:
            for key in self._seen_segments[end]:
                value = db.get(key)
                for sku, event_id, event_time, _ in (orjson.loads(value) if value is not None else ()):
                    index_key = _seen_key(sku, event_id)
                    current = db.get(index_key)
                    if current is not None and _SEEN_VALUE.unpack(current)[0] == event_time:
                        plan.index_deletions.append(index_key)  # unless seen again since, in a later bucket
                writes.append((key, None))
        width = self._finished_width
        for end in plan.expired_finished:
            for key in self._finished_segments[end]:
                value = db.get(key)
                for sku, reservation_id in (orjson.loads(value) if value is not None else ()):
                    if (sku, reservation_id) in self._finished_new:
                        continue  # finished again since: written by this write-back, in a later bucket
                    record_key = _finished_key(sku, reservation_id)
                    current = db.get(record_key)
                    if current is not None and (decode_finished(current).finished_clock // width + 1) * width == end:
                        writes.append((record_key, None))  # unless finished again since, in a later bucket
                        plan.finished_deleted.append((sku, reservation_id))
                writes.append((key, None))
        return writes


class _Plan:
    """What one write-back changes in the bookkeeping, applied by `KeptRecords.written()`."""

    def __init__(self, next_seq: int) -> None:
        self.next_seq = next_seq
        self.new_segments: list[tuple[bytes, int, bytes, list]] = []  # (prefix, bucket end, key, entries)
        self.expired_seen: list[int] = []
        self.expired_finished: list[int] = []
        self.index_deletions: list[bytes] = []
        self.finished_deleted: list[tuple[str, str]] = []


def _seen_key(sku: str, event_id: str) -> bytes:
    return f"#e/{sku}/{event_id}".encode()


def _finished_key(sku: str, reservation_id: str) -> bytes:
    return f"#r/{sku}/{reservation_id}".encode()


def _sequence_key(partition: int) -> bytes:
    return b"#n/%d" % partition


def _marker_key(partition: int) -> bytes:
    return b"#m/%d" % partition


def finished_record_key(sku: str, reservation_id: str) -> bytes:
    """The table key of a SKU's finished reservation (for readers outside the stage: the HTTP API)."""
    return _finished_key(sku, reservation_id)


def is_kept_record_key(key: bytes) -> bool:
    """Whether a `sku-state` key holds one of these records rather than a SKU state."""
    return key.startswith(b"#")
