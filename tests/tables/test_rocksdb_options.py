"""The tables' RocksDB memory is bounded by the settings, not Faust's defaults (64 MiB memtables x 3 and a 2 GiB
read cache per database, which let a worker's memory grow with its data)."""

from __future__ import annotations

from app.service.app import build_service
from tables.declarations import MIB


def test_each_table_database_is_opened_with_bounded_memory(settings_factory, tmp_path):
    settings = settings_factory(rocksdb_write_buffer_mib=4, rocksdb_block_cache_mib=12)
    service = build_service(settings, "127.0.0.1:1")  # nothing connects: declaring the tables is enough
    options = service.tables.sku_state.data.rocksdb_options
    assert (options.write_buffer_size, options.max_write_buffer_number, options.block_cache_size,
            options.bloom_filter_size) == (4 * MIB, 2, 12 * MIB, 10)
    small = service.tables.partition_state.data.rocksdb_options
    assert (small.write_buffer_size, small.block_cache_size) == (1 * MIB, 1 * MIB)
    database = service.tables.sku_state.data._db_for_partition(0)  # opened with those options: it works
    database.put(b"k", b"v")
    assert database.get(b"k") == b"v"
