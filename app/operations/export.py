"""A system of record's on-hand export, read for reconciliation: CSV with a header row, or JSON Lines.

Columns (CSV) or fields (JSON Lines): `sku`, `location`, `on_hand`, optionally `bucket` (SELLABLE, DAMAGED or
QUARANTINE, any case; empty or missing: SELLABLE). Other columns are ignored. A UTF-8 byte-order mark and quoted
CSV fields are accepted. A row that cannot be used gives one `BadRow` (its line number and what is wrong) and the
others are still read; only a file that is not an export at all (no header naming the columns) is an ExportError.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.errors import UserError

BUCKETS = ("SELLABLE", "DAMAGED", "QUARANTINE")
REQUIRED_COLUMNS = ("sku", "location", "on_hand")
MAX_ON_HAND = 10**9  # as the engine's quantity bound (docs/OPERATIONS.md, Limits on input)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ExportError(UserError):
    """The export cannot be read at all (missing file, no header, unknown format); the message says which."""


@dataclass(frozen=True, slots=True)
class ExportRow:
    line: int  # 1-based line number in the file
    sku: str
    location: str
    bucket: str  # one of BUCKETS
    on_hand: int


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.problem}"


def export_format(path: Path) -> str:
    """`csv` or `jsonl`: by the file name, else by the first character that is not blank (`{`: JSON Lines)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        head = handle.read(4096).lstrip()
    return "jsonl" if head.startswith("{") else "csv"


def read_export(path: Path) -> Iterator[ExportRow | BadRow]:
    """Every data row of the export, in file order, as an ExportRow or a BadRow. A second row for the same
    (sku, location, bucket) is a BadRow: the export must say one thing per position."""
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    rows = _csv_rows(path) if export_format(path) == "csv" else _jsonl_rows(path)
    seen: dict[tuple[str, str, str], int] = {}
    for line, fields in rows:
        if isinstance(fields, BadRow):
            yield fields
            continue
        row = check_row(line, fields)
        if isinstance(row, ExportRow):
            where = (row.sku, row.location, row.bucket)
            first = seen.setdefault(where, line)
            if first != line:
                row = BadRow(line, f"{row.sku} at {row.location} ({row.bucket}) already given on line {first}")
        yield row


def check_row(line: int, fields: dict) -> ExportRow | BadRow:
    """One row's fields (column -> value as read) checked; the first problem found is the BadRow's."""
    values = {}
    for name in REQUIRED_COLUMNS:
        value = fields.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            return BadRow(line, f"{name} is missing")
        values[name] = value.strip() if isinstance(value, str) else value
    for name in ("sku", "location"):
        value = values[name]
        if not isinstance(value, str) or not _ID.match(value):
            return BadRow(line, f"{name} {value!r} is not an identifier (letters, digits, . _ -; at most 64)")
    on_hand = _integer(values["on_hand"])
    if on_hand is None:
        return BadRow(line, f"on_hand {values['on_hand']!r} is not a whole number")
    if on_hand < 0:
        return BadRow(line, f"on_hand {on_hand} is below zero")
    if on_hand > MAX_ON_HAND:
        return BadRow(line, f"on_hand {on_hand} is above {MAX_ON_HAND:,}")
    bucket = fields.get("bucket")
    if bucket is None or (isinstance(bucket, str) and not bucket.strip()):
        bucket = "SELLABLE"
    elif not isinstance(bucket, str) or bucket.strip().upper() not in BUCKETS:
        return BadRow(line, f"bucket {bucket!r} is not one of {', '.join(BUCKETS)}")
    else:
        bucket = bucket.strip().upper()
    return ExportRow(line, values["sku"], values["location"], bucket, on_hand)


def _integer(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("+-").isdigit() and value.isascii():
        return int(value)
    return None


def _csv_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ExportError(f"{path}: empty file; expected a header row naming {', '.join(REQUIRED_COLUMNS)}")
        names = [name.strip().lower() for name in header]
        missing = [name for name in REQUIRED_COLUMNS if name not in names]
        if missing:
            raise ExportError(f"{path}: the header row lacks the column(s) {', '.join(missing)} "
                              f"(it has: {', '.join(header) or 'nothing'})")
        wanted = [(names.index(name), name) for name in REQUIRED_COLUMNS]
        width = max(index for index, _ in wanted) + 1
        bucket_at = names.index("bucket") if "bucket" in names else None
        for values in reader:
            line = reader.line_num
            if not values or values == [""]:
                continue  # a blank line
            if len(values) < width:
                yield line, BadRow(line, f"{len(values)} field(s); the header has {len(names)}")
                continue
            fields = {name: values[index] for index, name in wanted}
            if bucket_at is not None and bucket_at < len(values):
                fields["bucket"] = values[bucket_at]
            yield line, fields


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict | BadRow]]:
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError as error:
                yield line, BadRow(line, f"not JSON ({error.msg} at column {error.colno})")
                continue
            if not isinstance(value, dict):
                yield line, BadRow(line, f"a JSON {type(value).__name__}, not an object")
                continue
            yield line, value
