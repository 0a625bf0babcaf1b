"""Faust table declarations of the availability stage.

Both tables are co-partitioned with the `ledger` topic: they have `settings.partitions` partitions, and a value is
always written while a ledger event of the same partition is current, so the value of partition p lives in RocksDB
partition p and changelog partition p, next to the ledger records that change it. A worker that is assigned ledger
partition p is therefore assigned (and recovers) exactly the table partitions it needs.
"""

from tables.declarations import AvailabilityTables, declare_tables

__all__ = ["AvailabilityTables", "declare_tables"]
