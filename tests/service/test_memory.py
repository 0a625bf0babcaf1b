"""What `availability_memory_bytes` reports (app.service.memory), read from a real RocksDB database and this
process."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from rocksdict import Rdict

from app.service import memory
from app.service.memory import ROCKSDB_PROPERTIES, memory_parts, open_databases, rocksdb_bytes


@pytest.fixture
def database(tmp_path):
    opened = Rdict(str(tmp_path / "db"))
    yield opened
    opened.close()


def test_rocksdb_parts_grow_with_what_the_memtables_hold(database):
    before = rocksdb_bytes([database])
    assert set(before) == set(ROCKSDB_PROPERTIES)
    for index in range(20_000):
        database[f"SKU{index:06d}".encode()] = b"x" * 100
    after = rocksdb_bytes([database, database])  # summed over databases
    assert after["rocksdb_memtables"] >= 2 * 20_000 * 100
    assert after["rocksdb_memtables"] > 2 * before["rocksdb_memtables"]


def test_the_resident_set_and_the_allocators_heap_are_read_where_the_platform_tells_them(database):
    if memory._MALLINFO2 is None:
        pytest.skip("this C library has no mallinfo2 (not glibc 2.33+): the allocator's parts are left out")
    parts = memory_parts([database])
    assert set(parts) == {"resident", "malloc_in_use", "malloc_free", *ROCKSDB_PROPERTIES}
    assert parts["resident"] > parts["rocksdb_memtables"] >= 0
    held = bytearray(64 * 2**20)  # handed out by malloc (mmap'd: counted in malloc_in_use)
    assert memory_parts([])["malloc_in_use"] >= parts["malloc_in_use"] + len(held) // 2
    del held


def test_the_open_databases_are_those_of_the_tables_rocksdb_stores(database):
    rocksdb_table = SimpleNamespace(data=SimpleNamespace(_dbs={0: database, 3: database}))
    memory_table = SimpleNamespace(data=SimpleNamespace())  # memory:// store: nothing on disk
    assert open_databases([rocksdb_table, memory_table]) == [database, database]
