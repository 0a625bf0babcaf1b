"""Where a worker's memory is: its resident set, the C allocator's heap (in use and held free), and what the RocksDB
databases of its tables hold (memtables, block caches, index and filter blocks). Exported by /metrics
(`availability_memory_bytes`, docs/OPERATIONS.md) so that an operator can tell which setting to turn:
`AVAILABILITY_ROCKSDB_WRITE_BUFFER_MIB` and `..._BLOCK_CACHE_MIB` for RocksDB, `AVAILABILITY_STATE_CACHE_SKUS` for the
decoded states, which live in Python's own arenas (the rest of the resident set).

The RocksDB figures are parts of the allocator's heap in use, not additions to it. Python's small objects are not
allocated by malloc: they are in what the resident set holds beyond the heap, with the loaded code. Reading all of
it takes microseconds; each part is left out where the platform cannot say (no glibc `mallinfo2`, no /proc).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable, Iterable
from pathlib import Path

ROCKSDB_PROPERTIES = {
    "rocksdb_memtables": "rocksdb.cur-size-all-mem-tables",
    "rocksdb_block_cache": "rocksdb.block-cache-usage",
    "rocksdb_table_readers": "rocksdb.estimate-table-readers-mem",
}
"""Part name -> the RocksDB property summed over every database (one per table partition a worker holds)."""


class _MallInfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (2.33 and later): every field a size_t
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return None
    function.argtypes = []
    function.restype = _MallInfo2
    return function


_MALLINFO2 = _mallinfo2()
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """The process's resident set, from /proc/self/statm; None where there is none."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


def allocator_bytes() -> dict[str, int]:
    """`malloc_in_use` (chunks handed out, mmap'd ones included) and `malloc_free` (freed chunks glibc keeps in its
    arenas, which `malloc_trim` returns: app/service/heap_trim.py); empty without glibc's mallinfo2."""
    if _MALLINFO2 is None:
        return {}
    info = _MALLINFO2()
    return {"malloc_in_use": info.uordblks + info.hblkhd, "malloc_free": info.fordblks}


def rocksdb_bytes(databases: Iterable) -> dict[str, int]:
    """Each ROCKSDB_PROPERTIES part summed over `databases` (rocksdict Rdicts); a property a database does not report
    counts 0."""
    totals = dict.fromkeys(ROCKSDB_PROPERTIES, 0)
    for database in databases:
        for part, name in ROCKSDB_PROPERTIES.items():
            value = database.property_int_value(name)
            if value is not None:
                totals[part] += value
    return totals


def memory_parts(databases: Iterable) -> dict[str, int]:
    """Every part this platform can say, in bytes: `resident`, the allocator's, RocksDB's."""
    parts: dict[str, int] = {}
    resident = resident_bytes()
    if resident is not None:
        parts["resident"] = resident
    parts.update(allocator_bytes())
    parts.update(rocksdb_bytes(databases))
    return parts


def open_databases(tables: Iterable) -> list:
    """The RocksDB databases the given Faust tables have open in this worker (none for memory:// stores)."""
    databases = []
    for table in tables:
        opened = getattr(table.data, "_dbs", None)  # faust.stores.rocksdb.Store: partition -> rocksdict.Rdict
        if opened:
            databases.extend(opened.values())
    return databases


def disk_usage_bytes(path: Path) -> int:
    """Bytes allocated on disk under `path`, like `du` (st_blocks x 512); 0 for what is gone meanwhile."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total
