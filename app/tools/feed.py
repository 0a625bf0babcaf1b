"""Put source events on the broker: a producer that routes each record to its source topic and encodes it as Avro.

Used by `availability produce` (JSON Lines files, the demo feed) and by `availability demo`. Records are plain dicts
with the Avro field names of avro/*.avsc; the codec validates them, so a malformed record fails before it is sent.

JSON Lines input: one object per line, `{"type": "<record>", ...fields}` where `<record>` is StockMovement,
StockMovementBatch, ReservationCommand or PolicyChange. StockMovement has a field called `type` of its own (the
movement type), so in that record the movement type is given as `movement_type`; a line whose `type` is a movement
type (`{"type": "SALE", ...}`) is read as a StockMovement too. `event_time` defaults to now, `source` to "cli",
`event_id` to a fresh id. An optional `key` sets the record key (default: the topic's natural key).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException, Producer

from app.errors import UserError
from app.kafka.client_config import client_config
from app.kafka.producing import produce_or_wait
from app.wire.serialization import AvroCodec
from app.wire.topics import POLICY_CHANGES, RESERVATION_COMMANDS, STOCK_MOVEMENTS, STORE_TRANSACTIONS, TopicSpec

if TYPE_CHECKING:
    from app.settings import Settings

MOVEMENT_TYPES = frozenset(
    {"RECEIPT", "SALE", "RETURN", "ADJUSTMENT", "CYCLE_COUNT", "TRANSFER_SHIPPED", "TRANSFER_RECEIVED", "BUCKET_MOVE"}
)
SOURCE_TOPIC_OF_RECORD: dict[str, TopicSpec] = {
    "StockMovement": STORE_TRANSACTIONS,
    "StockMovementBatch": STOCK_MOVEMENTS,
    "ReservationCommand": RESERVATION_COMMANDS,
    "PolicyChange": POLICY_CHANGES,
}
_MOVEMENT_OPTIONAL_FIELDS = ("quantity", "delta", "reason", "disposition", "counterparty_location", "from_bucket",
                             "to_bucket")
_DELIVERY_TIMEOUT_MS = 30_000


class FeedError(UserError):
    """A source record could not be read or sent. The message says which record (file:line) and why."""


@dataclass(frozen=True)
class SourceRecord:
    """One record ready to send: the source topic, its key and the Avro value (a dict of .avsc field names)."""

    topic: TopicSpec
    key: str
    value: dict[str, Any]
    origin: str = ""  # where it came from (file:line), for error messages


def now_ms() -> int:
    return int(time.time() * 1000)


def stock_movement(**fields: Any) -> dict[str, Any]:
    """A StockMovement value with every optional field present (null unless given)."""
    value = {name: None for name in _MOVEMENT_OPTIONAL_FIELDS}
    value.update(fields)
    return value


def natural_key(record_name: str, value: dict[str, Any]) -> str:
    """The key a real writer would use: reservation id, store/location id, or the policy id."""
    if record_name == "ReservationCommand":
        return value["reservation_id"]
    if record_name == "StockMovement":
        return value["location"]
    if record_name == "StockMovementBatch":
        movements = value.get("movements") or []
        return movements[0]["location"] if movements else ""
    return "policy"


def record_from_json(document: dict[str, Any], where: str = "record") -> SourceRecord:
    """A JSON Lines object (see module docstring) -> SourceRecord; FeedError names `where` when it is not one."""
    if not isinstance(document, dict):
        raise FeedError(f"{where}: expected a JSON object, got {type(document).__name__}")
    fields = dict(document)
    declared = fields.pop("type", None)
    key = fields.pop("key", None)
    if declared in MOVEMENT_TYPES:
        record_name, movement_type = "StockMovement", declared
    elif declared in SOURCE_TOPIC_OF_RECORD:
        record_name, movement_type = declared, fields.pop("movement_type", None)
    else:
        known = ", ".join(sorted(SOURCE_TOPIC_OF_RECORD))
        raise FeedError(f"{where}: \"type\" must be one of {known} (or a movement type such as SALE), got {declared!r}")
    if record_name == "StockMovement":
        if movement_type is None:
            raise FeedError(f"{where}: a StockMovement needs \"movement_type\" (RECEIPT, SALE, ...)")
        value = stock_movement(**_with_defaults(fields), type=movement_type)
        _require_fields("StockMovement", value, where)
    elif record_name == "StockMovementBatch":
        movements = fields.get("movements", [])
        if not isinstance(movements, list):
            raise FeedError(f"{where}: \"movements\" must be a list of movements")
        value = {"movements": [_batch_movement(item, f"{where} (movement {index})")
                               for index, item in enumerate(movements)]}
    else:
        value = _with_defaults(fields)
        _require_fields(record_name, value, where)
    return SourceRecord(SOURCE_TOPIC_OF_RECORD[record_name], key or natural_key(record_name, value), value, where)


def _require_fields(record_name: str, value: dict[str, Any], where: str) -> None:
    """FeedError naming the first field of the record's schema that has no default and is not in `value`."""
    from app.wire.serialization import load_schema_library

    for field in load_schema_library().parsed(record_name)["fields"]:
        if field["name"] not in value and "default" not in field:
            raise FeedError(f"{where}: missing field \"{field['name']}\" (a {record_name} needs it)")


def records_from_jsonl(path: Path, bad_lines: list[FeedError] | None = None) -> Iterator[SourceRecord]:
    """Read a JSON Lines file lazily; blank lines and lines starting with # are skipped. A line that is not a
    record raises FeedError (`file:line: what is wrong`), or, given a `bad_lines` list, is added to it and skipped."""
    try:
        lines = path.open(encoding="utf-8")
    except OSError as error:
        raise FeedError(f"cannot read {path}: {error.strerror or error}") from None
    with lines:
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            try:
                try:
                    document = json.loads(text)
                except json.JSONDecodeError as error:
                    raise FeedError(f"{path}:{number}: not valid JSON ({error.msg} at column {error.colno})") from None
                record = record_from_json(document, f"{path}:{number}")
            except FeedError as error:
                if bad_lines is None:
                    raise
                bad_lines.append(error)
                continue
            yield record


def _with_defaults(fields: dict[str, Any]) -> dict[str, Any]:
    defaults = {"event_id": f"cli-{uuid.uuid4().hex[:16]}", "event_time": now_ms(), "source": "cli"}
    return {**defaults, **fields}


def _batch_movement(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise FeedError(f"{where}: every element of \"movements\" must be an object")
    fields = dict(item)
    movement_type = fields.pop("movement_type", None) or fields.pop("type", None)
    if movement_type not in MOVEMENT_TYPES:
        raise FeedError(f"{where}: movement needs a movement_type among {sorted(MOVEMENT_TYPES)}")
    value = stock_movement(**_with_defaults(fields), type=movement_type)
    _require_fields("StockMovement", value, where)
    return value


class SourceProducer:
    """A confluent-kafka Producer that encodes SourceRecords with the project's codec.

    `send` validates and encodes synchronously (a bad record raises FeedError at once) and delivers asynchronously;
    `flush` waits for acknowledgements and raises FeedError if any delivery failed."""

    def __init__(self, settings: Settings, bootstrap_servers: str, logger: logging.Logger | None = None) -> None:
        self.codec = AvroCodec(settings)
        config: dict[str, Any] = client_config(settings, bootstrap_servers, **{
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",  # Kafka's default partitioner, as docs/CONTRACT.md states
            "message.timeout.ms": _DELIVERY_TIMEOUT_MS,
        })
        if logger is not None:
            config["logger"] = logger
        self._producer = Producer(config)
        self.sent = 0
        self.delivered = 0
        self._failures: list[str] = []

    def encode(self, record: SourceRecord) -> bytes:
        """The record's Avro value (Confluent framing); FeedError, naming the record's origin, if it does not fit."""
        from app.wire.serialization import SerializationError

        try:
            return self.codec.encode(record.topic, record.value)
        except SerializationError as error:
            where = f"{record.origin}: " if record.origin else ""
            if isinstance(error.__cause__, KeyError):  # how the encoder says a nested record lacks a field
                raise FeedError(f"{where}missing field {error.__cause__} in a {record.topic.value_record}") from None
            raise FeedError(f"{where}record does not fit {record.topic.value_record}: {error}") from None

    def send(self, record: SourceRecord) -> None:
        produce_or_wait(self._producer, record.topic.name, self.encode(record), record.key.encode(),
                        on_delivery=self._on_delivery, wait_seconds=0.1)
        self.sent += 1
        self._producer.poll(0)

    def send_all(self, records: Iterable[SourceRecord]) -> int:
        count = 0
        for record in records:
            self.send(record)
            count += 1
        self.flush()
        return count

    def flush(self, timeout: float = _DELIVERY_TIMEOUT_MS / 1000) -> None:
        try:
            remaining = self._producer.flush(timeout)
        except KafkaException as error:
            raise FeedError(f"delivery failed: {error}") from None
        if remaining:
            raise FeedError(f"{remaining} records not acknowledged within {timeout:.0f}s; is the broker reachable?")
        if self._failures:
            raise FeedError(f"{len(self._failures)} records not delivered, first: {self._failures[0]}")

    def _on_delivery(self, error, message) -> None:
        if error is None:
            self.delivered += 1
        else:
            self._failures.append(f"{message.topic()}: {error.str()}")
