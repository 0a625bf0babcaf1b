"""Avro binary decoders compiled from a writer schema: Python source generated for one schema, read from a bytes
object by index. The counterpart of app/wire/avro_encoder.py, used by `RecordSerde.decode`.

fastavro's `schemaless_reader` costs 7-12 us per ledger entry here, mostly its per-value dispatch on the schema.
`compile_decoder` walks the schema once and generates one function in which every record of the schema is inlined
(a recursive type gets a function of its own), varints are read inline and each record is a dict literal: 2 to 2.5
times faster (benchmarks/decode_benchmark.py; docs/PERFORMANCE.md has the figures). It returns what fastavro returns
with `return_record_name=True, return_record_name_override=True` (tests/wire/test_avro_decoder.py checks generated
records of every topic).

It takes canonical, well-formed bytes only. For anything else (truncated data, a union index or enum index it does
not expect, a varint longer than 64 bits, a negative length, invalid UTF-8) it raises ValueError, IndexError,
UnicodeDecodeError or struct.error, or returns an end position other than `len(data)`: the caller then hands the
bytes to fastavro, which decodes them its own way or names the error, so the compiled path changes speed only.
Logical types and unions of more than 63 branches raise UnsupportedSchema, and the codec keeps fastavro for them.

The same generator reads projections, keeping some fields and skipping the others by their encoded length
(`keep`; benchmarks/ledger_projection.py), and builds objects in place of the dicts of chosen records (`objects`:
the ledger's events, app/wire/ledger.py), their enums given as the values the objects hold (`enums`).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple

from app.wire.avro_encoder import UnsupportedSchema

Decoder = Callable[[bytes, int], tuple[Any, int]]
"""Reads one value from `data` at position `pos`: (value, position after it)."""
UnionNames = Callable[[list, dict[str, dict]], list[str | None]]
"""For the branches of a union: the name a decoded value is returned with, as (name, value), or None for the value
alone."""

NAMED_KINDS = ("record", "error", "enum", "fixed")
PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_AVRO_TYPES = PRIMITIVES | {"record", "error", "enum", "fixed", "array", "map", "union", "request", "error_union"}
_MAX_LOOPS = 8  # nested array or map loops in one generated function (Python allows 20 nested blocks)

__all__ = ["Decoder", "RecordObject", "UnsupportedSchema", "compile_decoder", "fastavro_union_names",
           "named_definitions"]


class RecordObject(NamedTuple):
    """How to build a record as an object: `new` takes the record's field values positionally, in the order of
    `fields`, which must be the writer schema's (else UnsupportedSchema: a schema that moved them reads as dicts)."""

    fields: tuple[str, ...]
    new: Callable[..., Any]


def named_definitions(schema: Any, into: dict[str, dict] | None = None) -> dict[str, dict]:
    """Every named type defined in a schema, by full name (fastavro-parsed or self-contained JSON form)."""
    into = {} if into is None else into
    if isinstance(schema, list):
        for branch in schema:
            named_definitions(branch, into)
    elif isinstance(schema, dict):
        kind = schema["type"]
        if kind in NAMED_KINDS:
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


def fastavro_union_names(branches: list, definitions: dict[str, dict]) -> list[str | None]:
    """fastavro's rule (1.13, `read_union`) with return_record_name and return_record_name_override: the value
    alone if the union has one record branch, counting each branch spelled as a name reference as a record
    whatever it names; else (name, value) for a branch defined as a record or spelled as a name reference (an enum
    too), the value alone for the others, an enum defined in place among them."""
    def kind(branch: Any) -> str:
        if isinstance(branch, dict):
            return branch["type"] if isinstance(branch["type"], str) else "<nested>"
        return "union" if isinstance(branch, list) else branch

    if any(isinstance(branch, dict) and kind(branch) not in _AVRO_TYPES for branch in branches):
        raise UnsupportedSchema(f"a union branch spelled as {{'type': name or schema}}: {branches}")
    records = sum(1 for branch in branches if kind(branch) == "record" or kind(branch) not in _AVRO_TYPES)
    if records == 1:
        return [None] * len(branches)
    return [branch["name"] if kind(branch) == "record" else definitions[branch]["name"]
            if kind(branch) not in _AVRO_TYPES else None for branch in branches]


# ------------------------------------------------------------------------------------- helpers of generated code
def _long(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint long at `pos` of any length up to 64 bits (for lengths and counts of two bytes or more).
    fastavro wraps longer varints around 64 bits; they are refused here, so fastavro reads them."""
    byte = data[pos]
    value, shift = byte & 0x7F, 7
    while byte > 0x7F:
        pos += 1
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        shift += 7
    if value >> 64 or shift > 70:
        raise ValueError("varint beyond 64 bits")
    return (value >> 1) ^ -(value & 1), pos + 1


def _length(data: bytes, pos: int) -> tuple[int, int]:
    """A length, enum index or union index: a long that is not negative."""
    value, pos = _long(data, pos)
    if value < 0:
        raise ValueError(f"negative length {value}")
    return value, pos


def _block(data: bytes, pos: int) -> tuple[int, int]:
    """The item count of an array or map block; a negative count is followed by the block's size in bytes."""
    count, pos = _long(data, pos)
    if count < 0:
        if count == -(1 << 63):
            raise ValueError("block count out of range")
        count = -count
        _, pos = _long(data, pos)
    return count, pos


_HELPERS = {"_long": _long, "_length": _length, "_block": _block,
            "_float": struct.Struct("<f").unpack_from, "_double": struct.Struct("<d").unpack_from}


# --------------------------------------------------------------------------------------------------- generator
class _Generator:
    """Generated code: the locals are `data`, `p` (position), `b` (a byte), `s` (a shift), temporaries `t<n>`. Each
    `emit` appends lines that read (or skip) the value at `p` into a target and move `p` past it."""

    def __init__(self, definitions: dict[str, dict], keep: Collection[str] | None, union_names: UnionNames,
                 objects: Mapping[str, RecordObject], enums: Mapping[str, Callable[[str], Any]]) -> None:
        self.definitions = definitions
        self.keep = keep
        self.union_names = union_names
        self.objects = objects
        self.enums = enums
        self.in_object: list[bool] = []  # per record being read: is it built as an object
        self.functions: dict[tuple[str, bool], list[str]] = {}
        self.function_names: dict[tuple[str, bool], str] = {}
        self.constants: dict[str, Any] = dict(_HELPERS)
        self.temporaries = itertools.count()
        self.inlined: list[str] = []  # records being inlined in the function being generated
        self.loops = 0  # nested loops there

    def source(self) -> str:
        return "\n\n".join("\n".join(lines) for lines in self.functions.values())

    def temporary(self) -> str:
        return f"t{next(self.temporaries)}"

    def constant(self, value: Any) -> str:
        name = f"c{len(self.constants)}"
        self.constants[name] = value
        return name

    def function(self, name: str, schema: Any, read: bool) -> str:
        """A function `(data, p) -> (value, p)` (read) or `-> p` (skip) for `schema`; generated once per name."""
        key = (name, read)
        if key not in self.function_names:
            self.function_names[key] = f"{'read' if read else 'skip'}_{len(self.function_names)}_" + \
                name.rpartition(".")[2].replace("-", "_")
            lines = self.functions[key] = []  # registered first: a recursive type refers to itself
            outer, self.inlined, self.in_object, self.loops = (self.inlined, self.in_object, self.loops), [], [], 0
            body: list[str] = []
            self.emit(schema, read, body, "    ", "v")
            self.inlined, self.in_object, self.loops = outer
            lines.extend([f"def {self.function_names[key]}(data, p):", *body,
                          "    return v, p" if read else "    return p"])
        return self.function_names[key]

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            if schema not in self.definitions:
                raise UnsupportedSchema(f"undefined name {schema!r}")
            return self.definitions[schema]
        return schema

    # varints: one- and two-byte values inline; longer ones (times in ms are six bytes) by an inline loop, 7% less
    # time than calling _long on the ledger of benchmarks/decode_benchmark.py
    @staticmethod
    def long(lines: list[str], indent: str, target: str) -> None:
        lines.extend([f"{indent}b = data[p]",
                      f"{indent}if b < 128:",
                      f"{indent}    {target} = (b >> 1) ^ -(b & 1); p += 1",
                      f"{indent}elif data[p + 1] < 128:",
                      f"{indent}    b = (b & 127) | (data[p + 1] << 7); {target} = (b >> 1) ^ -(b & 1); p += 2",
                      f"{indent}else:",
                      f"{indent}    {target} = (b & 127) | ((data[p + 1] & 127) << 7); s = 14; p += 2; b = data[p]",
                      f"{indent}    while b > 127:",
                      f"{indent}        {target} |= (b & 127) << s; s += 7; p += 1; b = data[p]",
                      f"{indent}    {target} |= b << s; p += 1",
                      f"{indent}    if {target} >> 64 or s > 63:",  # as _long
                      f"{indent}        raise ValueError('varint beyond 64 bits')",
                      f"{indent}    {target} = ({target} >> 1) ^ -({target} & 1)"])

    @staticmethod
    def length(lines: list[str], indent: str, target: str) -> None:
        lines.extend([f"{indent}b = data[p]",
                      f"{indent}if not b & 129:",  # one byte, even: 0 to 63
                      f"{indent}    {target} = b >> 1; p += 1",
                      f"{indent}else:",
                      f"{indent}    {target}, p = _length(data, p)"])

    @staticmethod
    def skip_varint(lines: list[str], indent: str) -> None:
        lines.extend([f"{indent}while data[p] > 127:", f"{indent}    p += 1", f"{indent}p += 1"])

    def emit(self, schema: Any, read: bool, lines: list[str], indent: str, target: str = "") -> None:
        schema = self.resolve(schema)
        if isinstance(schema, dict) and schema["type"] not in (*NAMED_KINDS, "array", "map"):
            if read and "logicalType" in schema:  # fastavro converts those (dates, decimals...)
                raise UnsupportedSchema(f"logical type {schema['logicalType']}")
            return self.emit(schema["type"], read, lines, indent, target)
        if read and isinstance(schema, dict) and "logicalType" in schema:
            raise UnsupportedSchema(f"logical type {schema['logicalType']}")
        kind = schema if isinstance(schema, str) else schema["type"] if isinstance(schema, dict) else "union"
        if kind == "null":
            if read:
                lines.append(f"{indent}{target} = None")
        elif kind == "boolean":
            lines.append(f"{indent}{target} = data[p] != 0; p += 1" if read else f"{indent}p += 1")
        elif kind in ("int", "long") or (kind == "enum" and not read):
            if read:  # fastavro reads an int as a long, unchecked
                self.long(lines, indent, target)
            else:
                self.skip_varint(lines, indent)
        elif kind == "enum":  # an index out of range raises IndexError; a negative one ValueError
            symbols, index = self.constant(self.enum_values(schema)), self.temporary()
            lines.extend([f"{indent}b = data[p]",
                          f"{indent}if not b & 129:",
                          f"{indent}    {target} = {symbols}[b >> 1]; p += 1",
                          f"{indent}else:",
                          f"{indent}    {index}, p = _length(data, p); {target} = {symbols}[{index}]"])
        elif kind in ("float", "double"):
            size = 4 if kind == "float" else 8
            lines.append(f"{indent}{target} = _{kind}(data, p)[0]; p += {size}" if read else f"{indent}p += {size}")
        elif kind in ("string", "bytes"):
            size = self.temporary()
            self.length(lines, indent, size)
            if read:
                lines.append(f"{indent}{target} = data[p:p + {size}]" + (".decode()" if kind == "string" else ""))
            lines.append(f"{indent}p += {size}")  # past the end if truncated: the caller's length check fails
        elif kind == "fixed":
            if read:
                lines.append(f"{indent}{target} = data[p:p + {schema['size']}]")
            lines.append(f"{indent}p += {schema['size']}")
        elif kind in ("record", "error"):
            self.emit_record(schema, read, lines, indent, target)
        elif kind in ("array", "map"):
            self.emit_blocks(schema, read, lines, indent, target)
        elif kind == "union":
            self.emit_union(schema, read, lines, indent, target)
        else:
            raise UnsupportedSchema(f"Avro type {kind!r}")

    def enum_values(self, schema: dict) -> tuple:
        """An enum's symbols, or the values an object holds for them when the enclosing record is built as one."""
        symbols = tuple(schema["symbols"])
        convert = self.enums.get(schema["name"]) if self.in_object and self.in_object[-1] else None
        if convert is None:
            return symbols
        try:
            return tuple(convert(symbol) for symbol in symbols)
        except (ValueError, KeyError) as error:  # a symbol the objects do not know: dicts it is
            raise UnsupportedSchema(f"{schema['name']}: {error}") from error

    def emit_record(self, schema: dict, read: bool, lines: list[str], indent: str, target: str) -> None:
        name = schema["name"]
        if name in self.inlined or len(indent) > 60:  # recursive, or deep: a function
            function = self.function(name, schema, read)
            lines.append(f"{indent}{target}, p = {function}(data, p)" if read else f"{indent}p = {function}(data, p)")
            return
        built = self.objects.get(name) if read else None
        if built is not None and (self.keep is not None or
                                  built.fields != tuple(field["name"] for field in schema["fields"])):
            raise UnsupportedSchema(f"{name}: fields {[field['name'] for field in schema['fields']]} are not "
                                    f"{list(built.fields)}")
        self.inlined.append(name)
        self.in_object.append(built is not None)
        fields = []
        for field in schema["fields"]:
            if read and (self.keep is None or field["name"] in self.keep):
                value = self.temporary()
                self.emit(field["type"], True, lines, indent, value)
                fields.append((field["name"], value))
            else:
                self.emit(field["type"], False, lines, indent)
        self.in_object.pop()
        self.inlined.pop()
        if built is not None:
            lines.append(f"{indent}{target} = {self.constant(built.new)}({', '.join(value for _, value in fields)})")
        elif read:
            lines.append(f"{indent}{target} = {{{', '.join(f'{name!r}: {value}' for name, value in fields)}}}")

    def emit_blocks(self, schema: dict, read: bool, lines: list[str], indent: str, target: str) -> None:
        """Arrays and maps: blocks of `count` items until a count of 0 (fastavro's `_iter_array_or_map`)."""
        if self.loops >= _MAX_LOOPS:
            raise UnsupportedSchema("arrays and maps nested too deep")
        self.loops += 1
        is_map = schema["type"] == "map"
        count, item, key = (self.temporary() for _ in range(3))
        if read:
            lines.append(f"{indent}{target} = {{}}" if is_map else f"{indent}{target} = []")
        inner, body = indent + "    ", indent + "        "
        lines.extend([f"{indent}while True:",
                      f"{inner}b = data[p]",
                      f"{inner}if not b & 129:",
                      f"{inner}    {count} = b >> 1; p += 1",
                      f"{inner}else:",
                      f"{inner}    {count}, p = _block(data, p)",
                      f"{inner}if not {count}:",
                      f"{inner}    break",
                      f"{inner}for _ in range({count}):"])
        if is_map:
            self.emit("string", read, lines, body, key)
        self.emit(schema["values" if is_map else "items"], read, lines, body, item)
        if read:
            lines.append(f"{body}{target}[{key}] = {item}" if is_map else f"{body}{target}.append({item})")
        lines.append(f"{body}pass")
        self.loops -= 1

    def emit_union(self, branches: list, read: bool, lines: list[str], indent: str, target: str) -> None:
        if len(branches) > 63:
            raise UnsupportedSchema("a union of more than 63 branches")
        names = self.union_names(branches, self.definitions) if read else [None] * len(branches)
        # a valid index below 64 is one byte, 2 * index; anything else raises and fastavro reads it
        lines.extend([f"{indent}b = data[p]", f"{indent}p += 1"])
        body = indent + "    "
        for position, (branch, name) in enumerate(zip(branches, names)):
            lines.append(f"{indent}{'if' if position == 0 else 'elif'} b == {2 * position}:")
            value = self.temporary() if name is not None else target
            self.emit(branch, read, lines, body, value)
            if name is not None:
                lines.append(f"{body}{target} = ({name!r}, {value})")
            lines.append(f"{body}pass")
        lines.extend([f"{indent}else:", f"{indent}    raise ValueError(f'union index byte {{b}}')"])


def compile_decoder(writer: Any, keep: Collection[str] | None = None,
                    union_names: UnionNames = fastavro_union_names, objects: Mapping[str, RecordObject] | None = None,
                    enums: Mapping[str, Callable[[str], Any]] | None = None) -> Decoder:
    """A decoder for the writer schema, fastavro-parsed (the named types it references may be defined elsewhere:
    `__named_schemas`) or self-contained. `keep`: read only these fields of every record and skip the others (a
    projection); `union_names`: how a union's value is returned; `objects`: records (by full name) built as objects
    instead of dicts, and `enums`: for the enums read inside those (by full name), the value each symbol is given
    as. Raises UnsupportedSchema for what it cannot do."""
    definitions = dict(writer.get("__named_schemas", {})) if isinstance(writer, dict) else {}
    named_definitions(writer, definitions)
    name = writer.get("name", "value") if isinstance(writer, dict) else "value"
    generator = _Generator(definitions, keep, union_names, objects or {}, enums or {})
    entry = generator.function(name, writer, True)
    namespace = dict(generator.constants)
    exec(compile(generator.source(), f"<Avro decoder of {name}>", "exec"), namespace)
    return namespace[entry]
