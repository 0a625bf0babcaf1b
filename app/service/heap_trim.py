"""Giving the allocator's freed memory back to the system after a write-back.

A worker's memory is mostly what it frees again: decoded ledger records, event objects, output records, encoded
state values on their way to RocksDB. glibc's allocator keeps freed chunks in its arenas for reuse, and under the
availability stage's churn it held 115-170 MiB of them (`mallinfo2` in the worker, availability-stage benchmark with
1,000,000 events), counted in the worker's RSS. `malloc_trim(0)` returns the free pages of every arena. The
availability stage trims after a write-back and the ingest stage after each committed micro-batch (its decoded
source records are garbage then), each at most once per `min_interval_seconds`. A call is not free: 25-40 ms on a
synthetic heap of 65-330 MiB with a third of it kept (254 ms the first time, with 200 MiB to return), so about 3% of
a core at once a second; ctypes releases the GIL for it, and small Python objects are not allocated by malloc.
Where the C library has no `malloc_trim` (not glibc), the trimmer does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

MIN_INTERVAL_SECONDS = 1.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


class HeapTrimmer:
    """Call after a write-back; trims at most once per `min_interval_seconds`. `trims` and `seconds` say how often
    it ran and what it cost."""

    def __init__(self, min_interval_seconds: float = MIN_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic, trim: Callable[[int], int] | None = None) -> None:
        self._min_interval = min_interval_seconds
        self._clock = clock
        self._trim = trim if trim is not None else _malloc_trim()
        self._last = None
        self.trims = 0
        self.seconds = 0.0

    @property
    def available(self) -> bool:
        return self._trim is not None

    def __call__(self) -> None:
        if self._trim is None:
            return
        now = self._clock()
        if self._last is not None and now - self._last < self._min_interval:
            return
        self._trim(0)
        self._last = self._clock()
        self.trims += 1
        self.seconds += self._last - now
