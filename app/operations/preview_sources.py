"""Where a policy preview reads the current states from.

- `availability preview`: the table changelogs (`<app_id>-sku-state-changelog`, `<app_id>-partition-state-changelog`),
  read to the end they had when it started, the latest value of every key kept. They hold what the workers wrote
  back: up to AVAILABILITY_WRITE_BACK_INTERVAL_SECONDS behind the live states (docs/ARCHITECTURE.md).
- POST /policy/preview: the worker's own states (app/http/policy_preview.py), live first, as lookups read them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from app.engine import decode_partition_state, decode_sku_state
from app.operations.preview import PolicyPreviewer
from app.replay.reading import PartitionsReader
from tables.declarations import PARTITION_STATE_TABLE, SKU_STATE_TABLE, partition_state_key
from tables.kept_records import is_kept_record_key

if TYPE_CHECKING:
    from app.settings import Settings


def changelog_topic(settings: Settings, table: str) -> str:
    return f"{settings.app_id}-{table}-changelog"


def latest_values(settings: Settings, bootstrap_servers: str, topic: str, on_progress=None) -> dict[int, dict]:
    """Per partition, key -> latest value of a compacted topic (a key whose latest value is null is left out)."""
    values: dict[int, dict] = {}
    with PartitionsReader(bootstrap_servers, topic, settings=settings, through_start_ends=True) as reader:
        for partition in reader.starts:
            values[partition] = {}
        expected, done = reader.expected_records, 0
        for batch in reader.batches():
            for message in batch:
                key, value = message.key(), message.value()
                if value is None:
                    values[message.partition()].pop(key, None)
                else:
                    values[message.partition()][key] = value
            done += len(batch)
            if on_progress is not None:
                on_progress(done, max(done, expected))
    return values


def preview_from_changelogs(settings: Settings, bootstrap_servers: str, previewer: PolicyPreviewer,
                            on_progress=None) -> tuple[float, float]:
    """Feed `previewer` every ledger partition's states as the changelogs hold them; returns the seconds spent
    (reading the changelogs, computing the preview)."""
    started = time.monotonic()
    partition_values = latest_values(settings, bootstrap_servers, changelog_topic(settings, PARTITION_STATE_TABLE))
    sku_values = latest_values(settings, bootstrap_servers, changelog_topic(settings, SKU_STATE_TABLE), on_progress)
    read = time.monotonic()
    for partition in sorted(sku_values.keys() | partition_values.keys()):
        stored = partition_values.get(partition, {}).get(partition_state_key(partition))
        values = sku_values.get(partition, {})
        skus = [key.decode() for key in values if not is_kept_record_key(key)]

        def load(sku: str, values=values):
            value = values.get(sku.encode())
            return None if value is None else decode_sku_state(value)

        previewer.add_partition(partition, None if stored is None else decode_partition_state(stored), skus, load)
    return read - started, time.monotonic() - read
