"""The availability stage's state: `sku-state` and `partition-state`.

- `sku-state`: key = SKU (UTF-8), value = `encode_sku_state(SkuState)`: every location's position, the SKU's
  active reservations and the last published version of each output key, in ONE value so that one event's changes
  are written together. Beside them, under keys starting with `#`, the seen event ids and finished reservations
  (tables/kept_records.py), in the same changelog so that their write order is kept.
- `partition-state`: key = `partition_state_key(p)`, value = `encode_partition_state(PartitionState)`: the policy
  history with effective ledger offsets, the event-time clock and the expiry index of ledger partition p.

Values are raw bytes encoded by the engine's codec, so the table knows nothing of the engine's types and the
changelog holds exactly what RocksDB holds. RocksDB through rocksdict (`rocksdb://`), changelog-backed (compacted
`<app_id>-<table>-changelog`), with `settings.standby_replicas` standbys (set on the app, see app.service.app).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import faust

if TYPE_CHECKING:
    from app.settings import Settings

SKU_STATE_TABLE = "sku-state"
PARTITION_STATE_TABLE = "partition-state"
ROCKSDB_STORE = "rocksdb://"


def partition_state_key(partition: int) -> bytes:
    """One partition-state value per ledger partition. `#` cannot occur in a SKU id, so no key clash is possible
    even if both tables were ever merged."""
    return f"#partition-{partition}".encode()


MIB = 1024 * 1024


def rocksdb_options(write_buffer_mib: int, block_cache_mib: int) -> dict:
    """Faust's RocksDBOptions for one table, per database (one per table partition a worker holds). Faust's defaults
    (64 MiB memtables x 3 and a 2 GiB block cache per database) let a worker's memory grow with its data; these
    bound it: databases x (2 x write buffer + block cache). Bloom filters of 10 bits per key: most lookups of seen
    event ids are for ids never seen, and answer from the filter (about 1% false positives) without a disk read."""
    return {
        "write_buffer_size": write_buffer_mib * MIB,
        "max_write_buffer_number": 2,
        "block_cache_size": block_cache_mib * MIB,
        "bloom_filter_size": 10,
    }


@dataclass(frozen=True)
class AvailabilityTables:
    sku_state: faust.Table
    partition_state: faust.Table
    partitions: int


def declare_tables(app: faust.App, settings: Settings) -> AvailabilityTables:
    """Declare both tables on `app` (co-partitioned with the ledger: `settings.partitions` partitions)."""
    # Changelog topics are created by Faust; the embedded broker wants an explicit retention on every topic, and a
    # compacted changelog must keep each key's latest value forever.
    changelog_configs = {"retention.ms": "-1"}
    common = dict(
        partitions=settings.partitions,
        store=ROCKSDB_STORE,
        key_type=bytes,  # bytes keys and values: Faust's "raw" serializer, no JSON on the way to RocksDB
        value_type=bytes,
        extra_topic_configs=changelog_configs,
    )
    sku_state = app.Table(SKU_STATE_TABLE, help="SkuState per SKU (engine codec bytes)",
                          options=rocksdb_options(settings.rocksdb_write_buffer_mib, settings.rocksdb_block_cache_mib),
                          **common)
    partition_state = app.Table(
        PARTITION_STATE_TABLE, help="PartitionState per ledger partition (engine codec bytes)",
        options=rocksdb_options(1, 1), **common,  # one small value per partition
    )
    return AvailabilityTables(sku_state=sku_state, partition_state=partition_state, partitions=settings.partitions)
