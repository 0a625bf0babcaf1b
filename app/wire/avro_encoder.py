"""Avro binary encoders compiled from a parsed schema, for the records the availability stage publishes per change
and the ledger records the ingest stage writes.

fastavro's `schemaless_writer` costs about 7 us per output record here, mostly its per-call dispatch on the schema;
an output record is written for every published change (two per event on average), so that is a large share of the
availability stage. `compile_encoder` walks the schema once and returns a function that writes the same bytes
(tests/wire/test_avro_encoder.py checks them against fastavro for generated records) in under half the time:
each record type's encoder is the source of one function written from its fields, with every field of a primitive,
enum, nullable or record-union type in line; a record or an array is a call of its own encoder.

It covers the types the project's records use: records, null, boolean, int, long, string, enum, arrays, unions of
null and one type, and unions of named records given in tuple notation. `compile_encoder` raises UnsupportedSchema
for anything else, and the codec keeps fastavro for that schema. A value the encoder does not take raises
ValueError, TypeError, KeyError or AttributeError; the codec then hands it to fastavro, which encodes it its own way
or names the error, so the compiled path changes speed only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.errors import ServiceError

Encoder = Callable[[Any, bytearray], None]

_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_NO_DEFAULT = object()


class UnsupportedSchema(ServiceError):
    pass


class EncodedRecord:
    """A record's Avro body, already written with the very schema of the union branch that carries it: a union of
    records writes its branch index and these bytes as they are. The ingest stage hands a source record's own bytes
    to the ledger this way instead of encoding its decoded form again (app.wire.ledger.LedgerBatcher). Only the
    compiled encoders take it: fastavro raises on it, so a caller falls back to the decoded record."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body


def _append_zigzag_varint(value: int, out: bytearray) -> None:
    value = (value << 1) ^ (value >> 63)
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag_varint(value: int) -> bytes:
    out = bytearray()
    _append_zigzag_varint(value, out)
    return bytes(out)


# Quantities, versions, ledger indexes and partitions are mostly below this: their bytes are looked up, not computed
_SMALL_LONGS = 8192
_SMALL_LONG_BYTES = [_zigzag_varint(value) for value in range(_SMALL_LONGS)]


def _long(value: int, out: bytearray) -> None:
    """Zig-zag variable-length long (the Avro spec, section "Binary encoding")."""
    if type(value) is int:
        if 0 <= value < _SMALL_LONGS:
            out += _SMALL_LONG_BYTES[value]
            return
    elif isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an Avro long")
    if not _LONG_MIN <= value <= _LONG_MAX:
        raise ValueError(f"{value} does not fit an Avro long")
    _append_zigzag_varint(value, out)


def _int(value: int, out: bytearray) -> None:
    if type(value) is int and not _INT_MIN <= value <= _INT_MAX:
        raise ValueError(f"{value} does not fit an Avro int")
    _long(value, out)


def _string(value: str, out: bytearray) -> None:
    data = value.encode()  # AttributeError for a non-string, as fastavro
    _long(len(data), out)
    out += data


def _boolean(value: bool, out: bytearray) -> None:
    if type(value) is not bool:
        raise TypeError(f"{value!r} is not an Avro boolean")
    out.append(1 if value else 0)


_PRIMITIVES: dict[str, Encoder] = {"long": _long, "int": _int, "string": _string, "boolean": _boolean}


def compile_encoder(schema: Any, named: dict[str, Encoder] | None = None) -> Encoder:
    """An encoder for a schema as fastavro's `parse_schema` returns it: a named type is defined at its first use
    and referenced by its full name after (`named` collects them; pass the types defined elsewhere, if any)."""
    named = {} if named is None else named
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema in named:
            return named[schema]
        raise UnsupportedSchema(schema)
    if isinstance(schema, list):
        return _union(schema, named)
    kind = schema.get("type")
    if kind == "record":
        encoder = _record(schema, named)
    elif kind == "enum":
        encoder = _enum(schema)
    elif kind == "array":
        return _array(schema, named)
    elif isinstance(kind, str) and kind in _PRIMITIVES and len(schema) == 1:
        return _PRIMITIVES[kind]
    else:
        raise UnsupportedSchema(kind)
    named[schema["name"]] = encoder
    return encoder


def compile_object_encoder(schema: Any, sources: dict[str, str]) -> Encoder:
    """An encoder of a record schema that reads each field from an object, not from a dict: `sources` gives, for
    every field, a Python expression over `value` (the object), e.g. `"value.status.value"`. It writes the bytes
    the schema's encoder writes for the dict those expressions make, without making the dict (the availability
    stage publishes an output record per change: app/wire/output_encoders.py)."""
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise UnsupportedSchema("an object encoder encodes a record")
    missing = [field["name"] for field in schema["fields"] if field["name"] not in sources]
    extra = set(sources) - {field["name"] for field in schema["fields"]}
    if missing or extra:
        raise UnsupportedSchema(f"{schema['name']}: no source for {missing}, no field for {sorted(extra)}")
    return _record(schema, {}, sources)


def _record(schema: dict, named: dict[str, Encoder], sources: dict[str, str] | None = None) -> Encoder:
    """The record's encoder as the source of one function, written once per schema: each field's code in line
    (`_field_code`: a call of another encoder only for a record or an array), without a loop over the fields
    or a call per field: 2.9 us for an availability record against 4.6 us with a closure per field (fastavro 6.2).
    With `sources`, each field is read from an object by its expression (compile_object_encoder)."""
    names = frozenset(field["name"] for field in schema["fields"])
    namespace: dict[str, Any] = {"_long": _long, "_int": _int, "_boolean": _boolean, "_SMALL_LONGS": _SMALL_LONGS,
                                 "_LONG_MAX": _LONG_MAX,
                                 "_SMALL_LONG_BYTES": _SMALL_LONG_BYTES, "ValueError": ValueError,
                                 "TypeError": TypeError, "sorted": sorted, "_EncodedRecord": EncodedRecord,
                                 "names": names, "record_name": schema["name"]}
    lines = ["def encode(value, out):"]
    if sources is None:
        lines += [
            f"    if len(value) != {len(names)}:  # a field the schema does not have is refused, as fastavro's strict mode",
            "        extra = value.keys() - names",
            "        if extra:",
            "            raise ValueError(f'{record_name}: no field {sorted(extra)}')",
        ]
    for position, field in enumerate(schema["fields"]):
        default = field.get("default", _NO_DEFAULT)
        if sources is not None:
            lines.append(f"    field = {sources[field['name']]}")
        elif default is _NO_DEFAULT:
            lines.append(f"    field = value[{field['name']!r}]")
        else:
            namespace[f"default_{position}"] = default
            lines.append(f"    field = value.get({field['name']!r}, default_{position})")
        lines.extend("    " + line for line in _field_code(field["type"], f"encode_{position}", named, namespace))
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from the schema's field names only
    return namespace["encode"]


def _field_code(schema: Any, slot: str, named: dict[str, Encoder], namespace: dict[str, Any]) -> list[str]:
    """Lines that append the encoding of the value in `field` to `out`: longs, ints, strings, booleans, enums,
    nullable values and unions of records in line; a call of the type's encoder for records and arrays (an array
    is one field of a record, its items each a call: writing its loop in line would save one call per array)."""
    if schema == "long":
        return ["if type(field) is int and 0 <= field < _SMALL_LONGS:",
                "    out += _SMALL_LONG_BYTES[field]",
                "elif type(field) is int and 0 < field <= _LONG_MAX:  # a time in ms: its zig-zag varint in line",
                "    field <<= 1",
                "    while field > 0x7F:",
                "        out.append((field & 0x7F) | 0x80)",
                "        field >>= 7",
                "    out.append(field)",
                "else:",
                "    _long(field, out)"]
    if schema == "int":
        return ["if type(field) is int and 0 <= field < _SMALL_LONGS:",
                "    out += _SMALL_LONG_BYTES[field]",
                "else:",
                "    _int(field, out)"]
    if schema == "string":
        return ["data = field.encode()  # AttributeError for a non-string, as fastavro",
                "size = len(data)",
                "if size < _SMALL_LONGS:",
                "    out += _SMALL_LONG_BYTES[size]",
                "else:",
                "    _long(size, out)",
                "out += data"]
    if schema == "boolean":
        return ["if field is True:",
                "    out.append(1)",
                "elif field is False:",
                "    out.append(0)",
                "else:",
                "    _boolean(field, out)  # raises"]
    if isinstance(schema, list) and len(schema) == 2 and schema[0] == "null" and schema[1] != "null":
        return ["if field is None:",
                "    out.append(0)",
                "else:",
                "    out.append(2)  # branch 1, zig-zag",
                *("    " + line for line in _field_code(schema[1], slot, named, namespace))]
    # in field order: a named type is defined at its first use
    encoder = namespace[slot] = compile_encoder(schema, named)
    symbol_bytes = getattr(encoder, "symbol_bytes", None)
    if symbol_bytes is not None:  # an enum
        namespace[f"{slot}_symbols"] = symbol_bytes
        return [f"out += {slot}_symbols[field]  # KeyError for an unknown symbol"]
    records = getattr(encoder, "records_by_name", None)
    if records is not None:  # a union of records, in tuple notation
        namespace[f"{slot}_records"] = records
        return ["if type(field) is not tuple:",
                "    raise TypeError('a union of records takes (record name, record)')",
                "name, record = field",
                f"branch, encode_record = {slot}_records[name]",
                "out += branch",
                "if type(record) is _EncodedRecord:",
                "    out += record.body",
                "else:",
                "    encode_record(record, out)"]
    return [f"{slot}(field, out)"]


def _enum(schema: dict) -> Encoder:
    symbol_bytes = {symbol: _zigzag_varint(position) for position, symbol in enumerate(schema["symbols"])}

    def encode(value: str, out: bytearray) -> None:
        out += symbol_bytes[value]  # KeyError for an unknown symbol

    encode.symbol_bytes = symbol_bytes  # type: ignore[attr-defined]  # written in line by a record's encoder
    return encode


def _array(schema: dict, named: dict[str, Encoder]) -> Encoder:
    encode_item = compile_encoder(schema["items"], named)

    def encode(value: list, out: bytearray) -> None:
        if value:
            _long(len(value), out)
            for item in value:
                encode_item(item, out)
        out.append(0)

    return encode


def _union(branches: list, named: dict[str, Encoder]) -> Encoder:
    """Null and one type: None or the value. Several named records: the value in tuple notation, (full name,
    record), as fastavro takes it; anything else raises TypeError (the codec then lets fastavro try)."""
    if len(branches) == 2 and branches[0] == "null" and branches[1] != "null":
        encode_value = compile_encoder(branches[1], named)

        def encode(value: Any, out: bytearray) -> None:
            if value is None:
                out.append(0)
            else:
                out.append(2)  # branch 1, zig-zag
                encode_value(value, out)

        return encode
    by_name: dict[str, tuple[int, Encoder]] = {}
    for position, branch in enumerate(branches):
        encoder = compile_encoder(branch, named)
        name = branch if isinstance(branch, str) else branch.get("name") if isinstance(branch, dict) else None
        if name is None or name in _PRIMITIVES or name == "null":
            raise UnsupportedSchema(branches)
        by_name[name] = (position, encoder)

    records_by_name = {name: (_zigzag_varint(position), encoder) for name, (position, encoder) in by_name.items()}

    def encode_named(value: Any, out: bytearray) -> None:
        if type(value) is not tuple:
            raise TypeError("a union of records takes (record name, record)")
        name, record = value
        branch, encoder = records_by_name[name]
        out += branch
        if type(record) is EncodedRecord:
            out += record.body
        else:
            encoder(record, out)

    # what a record's encoder writes in line
    encode_named.records_by_name = records_by_name  # type: ignore[attr-defined]
    return encode_named
