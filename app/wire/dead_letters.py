"""Dead letters: what a record that cannot be processed becomes on `dead-letters` (docs/CONTRACT.md, "Dead letters").

The original key, value and headers, plus headers saying why and where from, cut to fit one Kafka record. Used by
the ingest stage (a source record), the availability stage and replay (a ledger record, or one entry of a batch),
so that replay's dead letters are byte for byte the availability stage's.
"""

from __future__ import annotations

from app.wire.ledger import LedgerItem, entry_record, item_key
from app.wire.topics import (
    DEAD_LETTER_ERROR_HEADER,
    DEAD_LETTER_LEDGER_INDEX_HEADER,
    DEAD_LETTER_REASON_HEADER,
    DEAD_LETTER_SOURCE_OFFSET_HEADER,
    DEAD_LETTER_SOURCE_PARTITION_HEADER,
    DEAD_LETTER_SOURCE_TOPIC_HEADER,
    DEAD_LETTER_TRUNCATED_HEADER,
    LEDGER,
)

MOVEMENT_INDEX_HEADER = "movement-index"  # which movement of a StockMovementBatch a dead letter is about

# A dead letter must fit in one Kafka record (the producer refuses requests above ~1 MB, and a refused send would
# end the worker on every retry of the batch: a poison pill). Values and keys above these sizes are cut, and the
# original headers are kept only up to a total size.
DEAD_LETTER_MAX_VALUE_BYTES = 256 * 1024
DEAD_LETTER_MAX_KEY_BYTES = 1024
DEAD_LETTER_MAX_ORIGINAL_HEADER_BYTES = 64 * 1024


def dead_letter_headers(
    reason: str, error: str, topic: str, partition: int, offset: int, original: list | tuple | None = None
) -> list[tuple[str, bytes]]:
    """The original record's headers followed by the dead-letter headers (reason, error, source position)."""
    headers, kept_bytes = [], 0
    for name, value in original or ():
        if name in _DEAD_LETTER_HEADER_NAMES:
            continue
        kept_bytes += len(name) + len(value or b"")
        if kept_bytes > DEAD_LETTER_MAX_ORIGINAL_HEADER_BYTES:
            break
        headers.append((name, value))
    headers += [
        (DEAD_LETTER_REASON_HEADER, reason.encode()),
        (DEAD_LETTER_ERROR_HEADER, error.encode("utf-8", "replace")),
        (DEAD_LETTER_SOURCE_TOPIC_HEADER, topic.encode()),
        (DEAD_LETTER_SOURCE_PARTITION_HEADER, str(partition).encode()),
        (DEAD_LETTER_SOURCE_OFFSET_HEADER, str(offset).encode()),
    ]
    return headers


def fit_dead_letter(key: bytes | None, value: bytes | None, headers: list) -> tuple[bytes | None, bytes | None, list]:
    """The key, value and headers of a dead letter, cut to fit one Kafka record. A cut value keeps its first
    DEAD_LETTER_MAX_VALUE_BYTES and gets the `value-truncated-from` header (the original size)."""
    if key is not None and len(key) > DEAD_LETTER_MAX_KEY_BYTES:
        key = key[:DEAD_LETTER_MAX_KEY_BYTES]
    if value is not None and len(value) > DEAD_LETTER_MAX_VALUE_BYTES:
        headers = [*headers, (DEAD_LETTER_TRUNCATED_HEADER, str(len(value)).encode())]
        value = value[:DEAD_LETTER_MAX_VALUE_BYTES]
    return key, value, headers


def ledger_dead_letter(ledger_serde, reason: str, error: str, partition: int, offset: int, key: bytes | None,
                       value: bytes | None, original_headers, item: LedgerItem | None):
    """(key, value, headers) of the dead letter of ledger record `partition`@`offset`, or of one entry of it when
    it is a batch record (`item`): that entry alone, as a LedgerEntry keyed by its SKU, with its index in the
    `ledger-index` header. The availability stage and replay both use it, so their dead letters are identical."""
    headers = dead_letter_headers(reason, error, LEDGER.name, partition, offset, original_headers)
    if item is not None and item.batched:
        key, value = item_key(item), ledger_serde.encode(entry_record(item))
        headers.append((DEAD_LETTER_LEDGER_INDEX_HEADER, str(item.index).encode()))
    return fit_dead_letter(key, value, headers)


_DEAD_LETTER_HEADER_NAMES = frozenset(
    {
        DEAD_LETTER_LEDGER_INDEX_HEADER,
        DEAD_LETTER_TRUNCATED_HEADER,
        DEAD_LETTER_REASON_HEADER,
        DEAD_LETTER_ERROR_HEADER,
        DEAD_LETTER_SOURCE_TOPIC_HEADER,
        DEAD_LETTER_SOURCE_PARTITION_HEADER,
        DEAD_LETTER_SOURCE_OFFSET_HEADER,
    }
)
