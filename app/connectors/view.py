"""The connector's local view of a channel: per key, the version, quantity and status it has handed to its sink.

Plain Python, no Kafka: the version rule of docs/CONTRACT.md lives here so it can be tested without a broker.
The view can be kept in a small JSON file (written atomically), or rebuilt from the compacted topic on start
(see `ChannelConnector`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VIEW_FILE_FORMAT = 1


@dataclass(frozen=True)
class HeldValue:
    """What the sink was last given for one key."""

    version: int
    quantity: int
    status: str


@dataclass(frozen=True)
class AvailabilityChange:
    """One change handed to a sink: the new value of a key, where it came from, and the version it replaces."""

    channel: str
    key: str  # `sku` (NETWORK channel) or `sku/location` (LOCATION channel)
    sku: str
    location: str | None
    quantity: int
    status: str  # IN_STOCK | LOW_STOCK | OUT_OF_STOCK
    version: int
    previous_version: int | None  # None: the first value this connector has seen for the key
    snapshot: bool  # the record restates the current value rather than reporting a change
    event_id: str
    event_time: int
    topic: str
    partition: int
    offset: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def identity(self) -> str:
        """`key@version`: the same for every delivery of this change, so a receiver can apply it once."""
        return f"{self.key}@{self.version}"


@dataclass(frozen=True)
class Assessment:
    """What the version rule says about a record. `missing_versions` > 0 means versions were skipped (a gap)."""

    is_newer: bool
    held_version: int | None
    missing_versions: int


class LocalView:
    """Per key, the last value handed to the sink. Not thread-safe: one connector loop owns it."""

    def __init__(self, values: dict[str, HeldValue] | None = None) -> None:
        self._values: dict[str, HeldValue] = dict(values or {})

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def held(self, key: str) -> HeldValue | None:
        return self._values.get(key)

    def items(self) -> list[tuple[str, HeldValue]]:
        return sorted(self._values.items())

    def assess(self, key: str, version: int, *, snapshot: bool = False) -> Assessment:
        """The version rule: a record is applied only if its version is greater than the one held.

        A gap is a jump of more than one version over a value held. A key seen for the first time is never a gap
        (the connector may start mid-stream or from a compacted topic), nor is a snapshot record, which restates
        a current value whatever came before."""
        held = self._values.get(key)
        if held is not None and version <= held.version:
            return Assessment(False, held.version, 0)
        if held is None or snapshot:
            return Assessment(True, None if held is None else held.version, 0)
        return Assessment(True, held.version, version - held.version - 1)

    def apply(self, key: str, version: int, quantity: int, status: str) -> None:
        held = self._values.get(key)
        if held is not None and version <= held.version:
            raise ValueError(f"{key}: version {version} is not newer than the held version {held.version}")
        self._values[key] = HeldValue(version, quantity, status)

    # -- persistence -----------------------------------------------------------------------------------------

    def save(self, path: Path | str) -> None:
        """Write the view to `path` atomically: a reader (or a restart after a crash) sees the old file or the
        new one, never half of one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "format": VIEW_FILE_FORMAT,
            "keys": {key: [held.version, held.quantity, held.status] for key, held in sorted(self._values.items())},
        }
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                json.dump(document, file, separators=(",", ":"))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path | str) -> LocalView:
        """The view saved at `path`; an empty view when there is no file yet."""
        try:
            document = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        if document.get("format") != VIEW_FILE_FORMAT:
            raise ValueError(f"{path}: unknown view file format {document.get('format')!r}")
        return cls({key: HeldValue(int(v), int(q), str(s)) for key, (v, q, s) in document["keys"].items()})
