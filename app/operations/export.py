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
    for row in rows:
        if type(row) is ExportRow:
            where = (row.sku, row.location, row.bucket)
            first = seen.setdefault(where, row.line)
            if first != row.line:
                row = BadRow(row.line, f"{row.sku} at {row.location} ({row.bucket}) already given on line {first}")
        yield row


def check_row(line: int, sku, location, on_hand, bucket) -> ExportRow | BadRow:
    """One row's values as read (None: absent) checked; the first problem found is the BadRow's."""
    if type(sku) is str and type(location) is str and type(on_hand) is str and _ID.match(sku) \
            and _ID.match(location) and on_hand.isdigit() and on_hand.isascii() and len(on_hand) < 10 \
            and (not bucket or bucket == "SELLABLE"):
        return ExportRow(line, sku, location, "SELLABLE", int(on_hand))  # the common case, checked at once
    values = {"sku": sku, "location": location, "on_hand": on_hand}
    for name, value in values.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            return BadRow(line, f"{name} is missing")
        values[name] = value.strip() if isinstance(value, str) else value
    for name in ("sku", "location"):
        value = values[name]
        if not isinstance(value, str) or not _ID.match(value):
            return BadRow(line, f"{name} {value!r} is not an identifier (letters, digits, . _ -; at most 64)")
    count = _integer(values["on_hand"])
    if count is None:
        return BadRow(line, f"on_hand {values['on_hand']!r} is not a whole number")
    if count < 0:
        return BadRow(line, f"on_hand {count} is below zero")
    if count > MAX_ON_HAND:
        return BadRow(line, f"on_hand {count} is above {MAX_ON_HAND:,}")
    if bucket is None or (isinstance(bucket, str) and not bucket.strip()):
        bucket = "SELLABLE"
    elif not isinstance(bucket, str) or bucket.strip().upper() not in BUCKETS:
        return BadRow(line, f"bucket {bucket!r} is not one of {', '.join(BUCKETS)}")
    else:
        bucket = bucket.strip().upper()
    return ExportRow(line, values["sku"], values["location"], bucket, count)


def _integer(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("+-").isdigit() and value.isascii():
        return int(value)
    return None


def _csv_rows(path: Path) -> Iterator[ExportRow | BadRow]:
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
        sku_at, location_at, on_hand_at = (names.index(name) for name in REQUIRED_COLUMNS)
        width = max(sku_at, location_at, on_hand_at) + 1
        bucket_at = names.index("bucket") if "bucket" in names else width + 1_000_000  # never a field
        for values in reader:
            line = reader.line_num
            if not values or values == [""]:
                continue  # a blank line
            if len(values) < width:
                yield BadRow(line, f"{len(values)} field(s); the header has {len(names)}")
                continue
            yield check_row(line, values[sku_at], values[location_at], values[on_hand_at],
                            values[bucket_at] if bucket_at < len(values) else None)


def _jsonl_rows(path: Path) -> Iterator[ExportRow | BadRow]:
    with path.open(encoding="utf-8-sig", errors="replace") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except ValueError as error:
                yield BadRow(line, f"not JSON ({error.msg} at column {error.colno})")
                continue
            if not isinstance(value, dict):
                yield BadRow(line, f"a JSON {type(value).__name__}, not an object")
                continue
            yield check_row(line, value.get("sku"), value.get("location"), value.get("on_hand"), value.get("bucket"))
