"""The event ids of ledger records, read without decoding the rest: what the peak benchmark's ledger tail needs.

The harness reads the whole ledger while the workers run, on the same cores, to count events per ledger position
(benchmarks/harness.py `LedgerTail`). A full decode (`RecordSerde.decode` + `app.wire.ledger.ledger_items`) builds every
field of every event, and the harness only needs each entry's `event_id` and the record's shape (one entry or a
LedgerEntryBatch). So it reads a projection:

- `projection_schema` derives, from the LedgerEntry schema the codec registers, a reader schema that keeps of each
  record only the fields `entry`, `entries` and `event_id` (a ClockTick keeps none: it is no event). Avro schema
  resolution drops the writer's other fields; `fastavro.schemaless_reader(buffer, writer, projection)` reads it.
- fastavro's schema resolution skips a dropped field about as slowly as it decodes it: for the ledger of 200,000
  mixed events (the slow test in tests/benchmarks/test_ledger_projection.py) a full decode by fastavro took 2.2-2.8 s
  of CPU, fastavro's projection 1.7-2.2 s. So `compile_projection` generates Python code for the same projection of
  one writer schema with the codec's compiled decoder (app/wire/avro_decoder.py, told which fields to keep), which
  skips dropped fields by their encoded lengths: 0.45-0.6 s. It returns what fastavro returns for the projection
  (`return_record_name=True`: a union of records gives (full name, record)); tests/benchmarks/test_ledger_projection.py
  checks both against the full decode. A schema it cannot compile (UnsupportedSchema) is read by fastavro.

`LedgerEventIds` reads the records of the serde's own schema id this way, and any other schema id by a full decode
(the serde resolves other versions); its first record is also decoded in full and compared, so a writer schema that
is not the one the projection was built from fails loudly instead of miscounting.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro

from app.wire.avro_decoder import PRIMITIVES, Decoder, UnsupportedSchema, compile_decoder, named_definitions
from app.wire.ledger import LEDGER_BATCH_RECORD, ledger_items
from app.wire.serialization import HEADER_SIZE, MAGIC_BYTE, RecordSerde, SchemaLibrary, load_schema_library

PROJECTED_FIELDS = frozenset({"entry", "entries", "event_id"})
"""Fields a projected record keeps: the record structure (a LedgerEntry's `entry`, a batch's `entries`, a batch
entry's `entry`) and each event's `event_id`."""

Projection = Decoder
"""Reads one projected value from `data` at position `pos`: (value, position after it)."""


# ------------------------------------------------------------------------------------------------- reader schema
def projection_schema(writer: dict, keep: frozenset[str] = PROJECTED_FIELDS) -> dict:
    """The reader schema that keeps of every record of `writer` (self-contained, full names) only the fields named
    in `keep`. A named type is defined at its first use in the projection (which may be a reference in `writer`,
    when the writer defines it in a dropped field) and referenced by name after."""
    definitions = named_definitions(writer)
    emitted: set[str] = set()

    def project(schema: Any) -> Any:
        if isinstance(schema, str):
            if schema in PRIMITIVES or schema in emitted:
                return schema
            return project(definitions[schema])
        if isinstance(schema, list):
            return [project(branch) for branch in schema]
        kind = schema["type"]
        if kind in ("record", "error"):
            if schema["name"] in emitted:
                return schema["name"]
            emitted.add(schema["name"])
            return {"type": kind, "name": schema["name"], "fields": [
                {"name": field["name"], "type": project(field["type"])}
                for field in schema["fields"] if field["name"] in keep]}
        if kind in ("enum", "fixed"):
            if schema["name"] in emitted:
                return schema["name"]
            emitted.add(schema["name"])
            return schema
        if kind == "array":
            return {"type": "array", "items": project(schema["items"])}
        if kind == "map":
            return {"type": "map", "values": project(schema["values"])}
        return project(kind)

    return project(writer)


def fastavro_projection(writer: dict, keep: frozenset[str] = PROJECTED_FIELDS) -> Projection:
    """The projection read by fastavro's schema resolution (the reference for `compile_projection`)."""
    writer_parsed = fastavro.parse_schema(writer, named_schemas={})
    reader_parsed = fastavro.parse_schema(projection_schema(writer, keep), named_schemas={})

    def read(data: bytes, pos: int) -> tuple[Any, int]:
        buffer = io.BytesIO(data)
        buffer.seek(pos)
        value = fastavro.schemaless_reader(buffer, writer_parsed, reader_parsed, return_record_name=True)
        return value, buffer.tell()

    return read


# --------------------------------------------------------------------------------------------- compiled reader
def projected_union_names(branches: list, definitions: dict[str, dict]) -> list[str | None]:
    """What fastavro's schema resolution returns for a union of the projection: (full name, record) for a record
    branch however spelled, the value alone for a primitive. fastavro names an enum or fixed branch or not
    depending on how the writer spells it: not needed here, UnsupportedSchema."""
    names: list[str | None] = []
    for branch in branches:
        resolved = definitions.get(branch, branch) if isinstance(branch, str) else branch
        kind = resolved.get("type") if isinstance(resolved, dict) else None
        if kind in ("enum", "fixed"):
            raise UnsupportedSchema(f"union branch {resolved['name']} in a projected field")
        names.append(resolved["name"] if kind in ("record", "error") else None)
    return names


def compile_projection(writer: dict, keep: frozenset[str] = PROJECTED_FIELDS) -> Projection:
    """Python code (app/wire/avro_decoder.py, reading only the fields in `keep` and skipping the others by their
    encoded lengths) that reads `projection_schema(writer, keep)` from data written with `writer` (a self-contained
    record schema, full names) and returns what `fastavro_projection` returns. Raises UnsupportedSchema for a type
    it does not handle."""
    if not (isinstance(writer, dict) and writer.get("type") in ("record", "error")):
        raise UnsupportedSchema("the writer schema is not a record")
    return compile_decoder(writer, keep, projected_union_names)


# ---------------------------------------------------------------------------------------------- ledger records
def entry_event_ids(value: dict) -> list[str | None]:
    """The event id of each entry of a projected LedgerEntry, in ledger order (None: a clock tick, no event)."""
    entry_name, entry = value["entry"]
    if entry_name == LEDGER_BATCH_RECORD:
        return [item["entry"][1].get("event_id") for item in entry["entries"]]
    return [entry.get("event_id")]


class LedgerEventIds:
    """Event ids of encoded ledger records (Confluent framed LedgerEntry values of `serde`'s topic)."""

    def __init__(self, serde: RecordSerde, schemas: SchemaLibrary | None = None) -> None:
        schemas = schemas if schemas is not None else load_schema_library()
        # the schema the codec registers for the topic under the serde's id, as the registry holds it
        writer = schemas.expanded(serde.topic.value_record)
        self.reader_schema = projection_schema(writer)
        try:
            self._read = compile_projection(writer)
            self.compiled = True
        except UnsupportedSchema:
            self._read = fastavro_projection(writer)
            self.compiled = False
        self._serde = serde
        self._schema_id = serde.schema_id
        self._header = bytes([MAGIC_BYTE]) + serde.schema_id.to_bytes(HEADER_SIZE - 1, "big")
        self._checked = False

    def entries(self, data: bytes) -> list[str | None]:
        """The event id of each entry of the record, in ledger order (None for an entry with none)."""
        if data[:HEADER_SIZE] != self._header:
            return self._full_entries(data)  # another schema version (or bad bytes: the serde says what is wrong)
        value, end = self._read(data, HEADER_SIZE)
        if end != len(data):
            raise ValueError(f"ledger record of {len(data)} bytes: its LedgerEntry ends at byte {end}")
        ids = entry_event_ids(value)
        if not self._checked:
            full = self._full_entries(data)
            if full != ids:
                raise RuntimeError(f"the ledger projection reads {ids[:3]}..., the full decode {full[:3]}...: "
                                   f"schema id {self._schema_id} is not the schema the projection was built from")
            self._checked = True
        return ids

    def event_ids(self, data: bytes) -> list[str]:
        """The event ids of the record's events (a clock tick has none and is no event)."""
        ids = self.entries(data)
        return [event_id for event_id in ids if event_id is not None] if None in ids else ids

    def _full_entries(self, data: bytes) -> list[str | None]:
        return [item.record.get("event_id") for item in ledger_items(self._serde.decode(data).value)]
