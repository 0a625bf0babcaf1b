"""What a replay keeps beside the SKU states, on disk: the seen event ids (duplicate window) and the finished
reservations (reservation retention), as the live service keeps them in RocksDB (tables/kept_records.py).

Held in memory they grew with every event of their windows, about 350 bytes per seen id and 440 per finished
reservation: 2.9 GB for a replay of 5 million events inside one day (docs/REPLAY.md, "Memory and disk"). Here each
kind lives in RocksDB databases of one *generation* each, a window of event time wide (at least an hour): a record
goes to the generation of its own time, and a whole generation is dropped (its directory deleted) once every
partition's horizon has passed its end. The disk holds about two windows of records, and memory none of them.

Answers are those of a store that forgets nothing, which is what the engine relies on (app.engine.store): a record
is dropped only once its time is below the horizon of its partition, where the engine no longer answers from it.
A key put again lands in the generation of its new time; a lookup reads the writes not flushed yet, then the
generations from the newest. The copy found is not always the last put: a late event's id, seen again once its
first copy left the window, lands in an older generation than that copy. Both copies are then outside the window,
so the engine's answer (not a duplicate) is the same. Finished reservations are put at the partition clock, which
only grows.

A process killed with -9 cannot delete its directory. Each directory holds a lock file its process keeps locked
(`flock`, released by the kernel however the process ends), and every new KeptOnDisk deletes the directories beside
its own whose lock nobody holds: what a killed replay left is gone at the next replay or reconciliation.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rocksdict import BlockBasedOptions, Options, Rdict, WriteBatch, WriteOptions

from app.engine import FinishedReservation, MemoryStore
from app.engine.codec import decode_finished, encode_finished
from app.engine.limits import HOUR_MS, EngineLimits
from app.service.memory import disk_usage_bytes

PENDING_LIMIT = 10_000  # writes held in a dict, then written in one batch: a quarter cheaper than a put each
WRITE_BUFFER_BYTES = 4 << 20  # per generation database: a replay holds a few of them per kind
_SEEN_VALUE = struct.Struct(">qq")  # (event time, ledger position)
DIRECTORY_PREFIX = "availability-replay-"
OWNER_LOCK = "owner.lock"  # locked by the process that owns the directory for as long as it runs
ABANDONED_AFTER_SECONDS = 60.0  # a younger lock file may be one its process is about to lock

logger = logging.getLogger(__name__)


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    table = BlockBasedOptions()
    table.set_bloom_filter(10, False)  # nearly every lookup misses (a new event id): answered without a read
    options.set_block_based_table_factory(table)
    options.set_memtable_whole_key_filtering(True)  # the same for what is still in the memtable
    options.set_memtable_prefix_bloom_ratio(0.1)
    return options


class GenerationIndex:
    """key -> value, each with an event time, in one RocksDB database per generation of `width_ms` event time. Keys
    start with their partition's prefix; `forget_before(partition, horizon)` gives each partition's horizon, and a
    generation goes once all of them have passed its end."""

    def __init__(self, directory: Path, width_ms: int, before_drop: Callable[[], None] = lambda: None) -> None:
        self._directory = directory
        self._before_drop = before_drop  # the disk holds the most just before a generation goes
        self._width = max(1, width_ms)
        self._generations: dict[int, Rdict] = {}  # generation number -> database
        self._newest_first: list[Rdict] = []
        self._horizons: dict[int, int] = {}  # partition -> the time below which its records no longer answer
        self._lowest = -1  # the lowest of them: a generation ending at or before it holds nothing that answers
        self._pending: dict[bytes, bytes] = {}  # the latest writes of the newest generation, not written yet
        self._pending_generation = -1
        self.dropped = 0  # generations dropped, for tests

    def register(self, partition: int) -> None:
        """A partition whose records this index holds: no generation goes before it has given a horizon."""
        self._horizons.setdefault(partition, -1)
        self._lowest = min(self._horizons.values())

    def get(self, key: bytes) -> bytes | None:
        value = self._pending.get(key)
        if value is not None:
            return value
        for database in self._newest_first:
            # nearly every lookup misses (a new event id): the bloom filters say so without a read
            if database.key_may_exist(key):
                value = database.get(key)
                if value is not None:
                    return value
        return None

    def put(self, key: bytes, value: bytes, time: int) -> None:
        generation = time // self._width
        if generation == self._pending_generation:
            pending = self._pending
            pending[key] = value
            if len(pending) >= PENDING_LIMIT:
                self.flush()
        elif (generation + 1) * self._width <= self._lowest:
            return  # a late event's, below every partition's horizon: it could answer nothing
        elif generation > self._pending_generation:
            self.flush()
            self._pending_generation = generation
            self._pending[key] = value
        else:  # a late event's: written at once, in its generation
            database = self._generations.get(generation)
            if database is None:
                database = self._open(generation)
            database.put(key, value)

    def flush(self) -> None:
        """Writes the pending records to their generation's database in one write batch."""
        if not self._pending:
            return
        database = self._generations.get(self._pending_generation)
        if database is None:
            database = self._open(self._pending_generation)
        batch = WriteBatch(raw_mode=True)
        put = batch.put
        for key, value in self._pending.items():
            put(key, value)
        database.write(batch)
        self._pending.clear()

    def forget_before(self, partition: int, horizon: int) -> None:
        if horizon <= self._horizons.get(partition, -1):
            return
        self._horizons[partition] = horizon
        lowest = self._lowest = min(self._horizons.values())
        expired = [generation for generation in self._generations if (generation + 1) * self._width <= lowest]
        if (self._pending_generation + 1) * self._width <= lowest:
            self._pending.clear()  # below every partition's horizon: they could answer nothing
        if expired:
            self._before_drop()
        for generation in expired:
            database = self._generations.pop(generation)
            database.close()
            Rdict.destroy(str(self._path(generation)))
            self.dropped += 1
        if expired:
            self._order()

    def close(self) -> None:
        for database in self._generations.values():
            database.close()
        self._generations.clear()
        self._newest_first = []
        self._pending.clear()

    def _path(self, generation: int) -> Path:
        return self._directory / f"g{generation}"

    def _open(self, generation: int) -> Rdict:
        database = self._generations[generation] = Rdict(str(self._path(generation)), options=_options())
        write_options = WriteOptions()
        write_options.disable_wal = True  # a replay's records die with it: nothing to recover
        database.set_write_options(write_options)
        self._order()
        return database

    def _order(self) -> None:
        self._newest_first = [self._generations[g] for g in sorted(self._generations, reverse=True)]


class KeptOnDisk:
    """The seen ids and finished reservations of every partition one replay process applies, in a temporary
    directory (under TMPDIR, or `parent`) that `close()` deletes."""

    def __init__(self, limits: EngineLimits, parent: str | None = None, min_width_ms: int = HOUR_MS) -> None:
        removed = remove_abandoned(Path(parent if parent is not None else tempfile.gettempdir()))
        if removed:
            logger.warning("deleted %d replay director%s left by processes that ended without deleting them: %s",
                           len(removed), "y" if len(removed) == 1 else "ies", ", ".join(str(path) for path in removed))
        self.directory = Path(tempfile.mkdtemp(prefix=DIRECTORY_PREFIX, dir=parent))
        self._owner_lock = os.open(self.directory / OWNER_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._owner_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # a generation is a window wide, and at least `min_width_ms`: a short window would open a database for
        # every few seconds of event time (a record kept longer changes no answer)
        self.seen = GenerationIndex(self.directory / "seen", max(limits.duplicate_window_ms, min_width_ms),
                                    self.note_disk_use)
        self.finished = GenerationIndex(self.directory / "finished",
                                        max(limits.reservation_retention_ms, min_width_ms), self.note_disk_use)
        self.peak_disk_bytes = 0  # the most the directory held when measured: before each drop and at the end

    def store(self, partition: int) -> DiskKeptStore:
        self.seen.register(partition)
        self.finished.register(partition)
        return DiskKeptStore(partition, self)

    def note_disk_use(self) -> None:
        """Measure what the directory holds on disk now into `peak_disk_bytes`."""
        self.peak_disk_bytes = max(self.peak_disk_bytes, disk_usage_bytes(self.directory))

    def close(self) -> None:
        self.seen.close()
        self.finished.close()
        self.note_disk_use()
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._owner_lock >= 0:
            os.close(self._owner_lock)
            self._owner_lock = -1


def remove_abandoned(parent: Path) -> list[Path]:
    """Delete the replay directories in `parent` whose lock no process holds (their process ended without deleting
    them: killed with -9, or the machine lost); returns them. One without a lock file, or whose lock file was made in
    the last minute, is left alone: it may be one being made."""
    removed = []
    for directory in sorted(parent.glob(f"{DIRECTORY_PREFIX}*")):
        lock = directory / OWNER_LOCK
        try:
            if time.time() - lock.stat().st_mtime < ABANDONED_AFTER_SECONDS:
                continue
            descriptor = os.open(lock, os.O_RDWR)
        except OSError:  # no lock file, or not ours to open
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # held: its process is running
            os.close(descriptor)
            continue
        try:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
        finally:
            os.close(descriptor)
    return removed


class DiskKeptStore(MemoryStore):
    """A partition's store for a replay: SKU and partition states as live objects in memory, as MemoryStore keeps
    them; seen ids and finished reservations in the process's KeptOnDisk."""

    def __init__(self, partition: int, kept: KeptOnDisk) -> None:
        super().__init__()
        self._partition = partition
        self._prefix = f"{partition}/"
        self._seen = kept.seen
        self._finished = kept.finished

    def get_seen_event(self, sku: str, event_id: str) -> tuple[int, int] | None:
        value = self._seen.get(f"{self._prefix}{sku}/{event_id}".encode())
        return None if value is None else _SEEN_VALUE.unpack(value)

    def put_seen_event(self, sku: str, event_id: str, event_time: int, position: int) -> None:
        self._seen.put(f"{self._prefix}{sku}/{event_id}".encode(), _SEEN_VALUE.pack(event_time, position),
                       event_time)

    def get_finished(self, sku: str, reservation_id: str) -> FinishedReservation | None:
        value = self._finished.get(f"{self._prefix}{sku}/{reservation_id}".encode())
        return None if value is None else decode_finished(value)

    def put_finished(self, sku: str, finished: FinishedReservation) -> None:
        self._finished.put(f"{self._prefix}{sku}/{finished.reservation_id}".encode(), encode_finished(finished),
                           finished.finished_clock)

    def forget_before(self, seen_before: int, finished_before: int) -> None:
        self._seen.forget_before(self._partition, seen_before)
        self._finished.forget_before(self._partition, finished_before)
