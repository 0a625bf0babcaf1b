"""The event ids of ledger records, read without decoding the rest: what the peak benchmark's ledger tail needs.

The harness reads the whole ledger while the workers run, on the same cores, to count events per ledger position
(benchmarks/harness.py `LedgerTail`). A full decode (`RecordSerde.decode` + `app.wire.ledger.ledger_items`) builds every
field of every event, about 12 us of CPU per event here, and the harness only needs each entry's `event_id` and the
record's shape (one entry or a LedgerEntryBatch). So it reads a projection:

- `projection_schema` derives, from the LedgerEntry schema the codec registers, a reader schema that keeps of each
  record only the fields `entry`, `entries` and `event_id` (a ClockTick keeps none: it is no event). Avro schema
  resolution drops the writer's other fields; `fastavro.schemaless_reader(buffer, writer, projection)` reads it.
- fastavro's schema resolution skips a dropped field about as slowly as it decodes it: for the ledger of 200,000
  mixed events (the slow test in tests/benchmarks/test_ledger_projection.py) the full decode takes 2.2-2.8 s of CPU,
  fastavro's projection 1.7-2.2 s. So `compile_projection` generates Python code for the same projection of one
  writer schema, which skips dropped fields by their encoded lengths: 0.45-0.6 s. It returns what fastavro returns
  for the projection
  (`return_record_name=True`: a union of records gives (full name, record)); tests/benchmarks/test_ledger_projection.py
  checks both against the full decode. A schema it cannot compile (UnsupportedSchema) is read by fastavro.

`LedgerEventIds` reads the records of the serde's own schema id this way, and any other schema id by a full decode
(the serde resolves other versions); its first record is also decoded in full and compared, so a writer schema that
is not the one the projection was built from fails loudly instead of miscounting.
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Callable
from typing import Any

import fastavro

from app.wire.ledger import LEDGER_BATCH_RECORD, ledger_items
from app.wire.serialization import HEADER_SIZE, MAGIC_BYTE, RecordSerde, SchemaLibrary, load_schema_library

PROJECTED_FIELDS = frozenset({"entry", "entries", "event_id"})
"""Fields a projected record keeps: the record structure (a LedgerEntry's `entry`, a batch's `entries`, a batch
entry's `entry`) and each event's `event_id`."""

_NAMED_KINDS = ("record", "error", "enum", "fixed")
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})

Projection = Callable[[bytes, int], tuple[Any, int]]
"""Reads one projected value from `data` at position `pos`: (value, position after it)."""


class UnsupportedSchema(Exception):
    pass


# ------------------------------------------------------------------------------------------------- reader schema
def named_definitions(schema: Any, into: dict[str, dict] | None = None) -> dict[str, dict]:
    """Every named type defined in a self-contained schema (`SchemaLibrary.expanded`), by full name."""
    into = {} if into is None else into
    if isinstance(schema, list):
        for branch in schema:
            named_definitions(branch, into)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind in _NAMED_KINDS:
            into[schema["name"]] = schema
            for field in schema.get("fields", ()):
                named_definitions(field["type"], into)
        elif kind == "array":
            named_definitions(schema["items"], into)
        elif kind == "map":
            named_definitions(schema["values"], into)
        elif isinstance(kind, (dict, list)):
            named_definitions(kind, into)
    return into


def projection_schema(writer: dict, keep: frozenset[str] = PROJECTED_FIELDS) -> dict:
    """The reader schema that keeps of every record of `writer` (self-contained, full names) only the fields named
    in `keep`. A named type is defined at its first use in the projection (which may be a reference in `writer`,
    when the writer defines it in a dropped field) and referenced by name after."""
    definitions = named_definitions(writer)
    emitted: set[str] = set()

    def project(schema: Any) -> Any:
        if isinstance(schema, str):
            if schema in _PRIMITIVES or schema in emitted:
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
def _long(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint long at `pos` (the generated code inlines the one-byte case)."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7


class _Compiler:
    """Generates one Python function per (named record, read or skip) of the writer schema. Locals: `data`, `p`
    (position), `b` (a byte) and numbered temporaries."""

    def __init__(self, writer: dict, keep: frozenset[str]) -> None:
        self.definitions = named_definitions(writer)
        self.keep = keep
        self.functions: dict[tuple[str, str], list[str]] = {}
        self.names: dict[tuple[str, str], str] = {}
        self.constants: dict[str, Any] = {"_long": _long, "_float": struct.Struct("<f").unpack_from,
                                          "_double": struct.Struct("<d").unpack_from}
        self.temporaries = itertools.count()

    def source(self) -> str:
        return "\n\n".join("\n".join(lines) for lines in self.functions.values())

    def record_function(self, name: str, mode: str) -> str:
        key = (name, mode)
        if key not in self.names:
            self.names[key] = f"{mode}_{len(self.names)}_{name.rpartition('.')[2]}"
            lines = self.functions[key] = []  # registered first: a recursive type refers to itself
            schema = self.definitions[name]
            body: list[str] = []
            kept = []
            for field in schema["fields"]:
                if mode == "read" and field["name"] in self.keep:
                    target = self.temporary()
                    self.emit(field["type"], "read", body, "    ", target)
                    kept.append((field["name"], target))
                else:
                    self.emit(field["type"], "skip", body, "    ")
            result = "{" + ", ".join(f"{field!r}: {target}" for field, target in kept) + "}, p" if mode == "read" \
                else "p"
            lines.extend([f"def {self.names[key]}(data, p):", *body, f"    return {result}"])
        return self.names[key]

    def temporary(self) -> str:
        return f"t{next(self.temporaries)}"

    def constant(self, value: Any) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name

    @staticmethod
    def varint(lines: list[str], indent: str, target: str) -> None:
        lines.extend([f"{indent}b = data[p]",
                      f"{indent}if b < 128:",
                      f"{indent}    {target} = (b >> 1) ^ -(b & 1); p += 1",
                      f"{indent}else:",
                      f"{indent}    {target}, p = _long(data, p)"])

    def emit(self, schema: Any, mode: str, lines: list[str], indent: str, target: str = "") -> None:
        """Lines that skip the value at `p`, or (mode "read") assign its projected value to `target`; both move
        `p` past it."""
        read = mode == "read"
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            schema = self.definitions[schema]
        if isinstance(schema, dict) and schema["type"] not in (*_NAMED_KINDS, "array", "map"):
            if read and "logicalType" in schema:  # fastavro converts those (dates, decimals...)
                raise UnsupportedSchema(f"logical type {schema['logicalType']} in a projected field")
            return self.emit(schema["type"], mode, lines, indent, target)
        kind = schema if isinstance(schema, str) else schema["type"] if isinstance(schema, dict) else "union"
        if kind == "null":
            if read:
                lines.append(f"{indent}{target} = None")
        elif kind == "boolean":
            lines.append(f"{indent}{target} = data[p] != 0; p += 1" if read else f"{indent}p += 1")
        elif kind in ("int", "long") or (kind == "enum" and not read):
            if read:
                self.varint(lines, indent, target)
            else:
                lines.extend([f"{indent}while data[p] > 127:", f"{indent}    p += 1", f"{indent}p += 1"])
        elif kind == "enum":
            index = self.temporary()
            self.varint(lines, indent, index)
            lines.append(f"{indent}{target} = {self.constant(tuple(schema['symbols']))}[{index}]")
        elif kind in ("float", "double"):
            size = 4 if kind == "float" else 8
            lines.append(f"{indent}{target} = _{kind}(data, p)[0]; p += {size}" if read else f"{indent}p += {size}")
        elif kind in ("string", "bytes"):
            length = self.temporary()
            self.varint(lines, indent, length)
            if read:
                lines.append(f"{indent}{target} = data[p:p + {length}]" + (".decode()" if kind == "string" else ""))
            lines.append(f"{indent}p += {length}")  # past the end: the caller's length check fails
        elif kind == "fixed":
            if read:
                lines.append(f"{indent}{target} = data[p:p + {schema['size']}]")
            lines.append(f"{indent}p += {schema['size']}")
        elif kind in ("record", "error"):
            function = self.record_function(schema["name"], mode)
            lines.append(f"{indent}{target}, p = {function}(data, p)" if read else f"{indent}p = {function}(data, p)")
        elif kind in ("array", "map"):
            self.emit_blocks(schema, read, lines, indent, target)
        elif kind == "union":
            self.emit_union(schema, read, lines, indent, target)
        else:
            raise UnsupportedSchema(f"Avro type {kind!r}")

    def emit_blocks(self, schema: dict, read: bool, lines: list[str], indent: str, target: str) -> None:
        """Arrays and maps: blocks of `count` items, a negative count followed by the block's size in bytes."""
        is_map = schema["type"] == "map"
        count, size, item, key = (self.temporary() for _ in range(4))
        if read:
            lines.append(f"{indent}{target} = {{}}" if is_map else f"{indent}{target} = []")
        lines.append(f"{indent}while True:")
        inner = indent + "    "
        self.varint(lines, inner, count)
        lines.extend([f"{inner}if {count} == 0:", f"{inner}    break", f"{inner}if {count} < 0:"])
        self.varint(lines, inner + "    ", size)
        if not read:  # a sized block is skipped whole
            lines.extend([f"{inner}    p += {size}", f"{inner}    continue"])
        else:
            lines.append(f"{inner}    {count} = -{count}")
        lines.append(f"{inner}for _ in range({count}):")
        body = inner + "    "
        if is_map:
            self.emit("string", "read" if read else "skip", lines, body, key)
        self.emit(schema["values" if is_map else "items"], "read" if read else "skip", lines, body, item)
        if read:
            lines.append(f"{body}{target}[{key}] = {item}" if is_map else f"{body}{target}.append({item})")
        lines.append(f"{body}pass")

    def emit_union(self, branches: list, read: bool, lines: list[str], indent: str, target: str) -> None:
        index = self.temporary()
        self.varint(lines, indent, index)
        for position, branch in enumerate(branches):
            lines.append(f"{indent}{'if' if position == 0 else 'elif'} {index} == {position}:")
            body = indent + "    "
            resolved = self.definitions.get(branch, branch) if isinstance(branch, str) else branch
            named = isinstance(resolved, dict) and resolved["type"] in _NAMED_KINDS
            if read and named and resolved["type"] not in ("record", "error"):
                # fastavro names an enum or fixed branch or not depending on how the writer spells it: not needed
                raise UnsupportedSchema(f"union branch {resolved['name']} in a projected field")
            value = self.temporary()
            self.emit(branch, "read" if read else "skip", lines, body, value)
            if read:
                projected = f"({resolved['name']!r}, {value})" if named else value
                lines.append(f"{body}{target} = {projected}")
            lines.append(f"{body}pass")
        lines.extend([f"{indent}else:", f"{indent}    raise ValueError(f'union index {{{index}}} out of range')"])


def compile_projection(writer: dict, keep: frozenset[str] = PROJECTED_FIELDS) -> Projection:
    """Python code that reads `projection_schema(writer, keep)` from data written with `writer` (a self-contained
    record schema, full names) and returns what `fastavro_projection` returns. Raises UnsupportedSchema for a type
    it does not handle."""
    if not (isinstance(writer, dict) and writer.get("type") in ("record", "error")):
        raise UnsupportedSchema("the writer schema is not a record")
    compiler = _Compiler(writer, keep)
    entry = compiler.record_function(writer["name"], "read")
    namespace = dict(compiler.constants)
    exec(compile(compiler.source(), f"<projection of {writer['name']}>", "exec"), namespace)
    return namespace[entry]


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
