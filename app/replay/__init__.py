"""Tools of the engineers who rebuild and audit availability: replay the ledger into a namespace of output topics,
verify two namespaces against each other, and publish a snapshot of a channel for connectors (docs/REPLAY.md).

No Faust here: a consumer of our own reads the ledger, the pure engine applies it, a producer writes the outputs.
"""

from app.replay.namespace import LIVE, NamespaceError, output_topics, suffix_for
from app.replay.parallel import replay
from app.replay.reading import ReadError
from app.replay.replay import Replayer, ReplayError, ReplayOptions, ReplaySummary, parse_offsets
from app.replay.snapshot import LoadedSnapshot, SnapshotError, SnapshotSummary, load_snapshot, take_snapshot
from app.replay.verify import Difference, VerifyReport, verify

__all__ = [
    "LIVE", "Difference", "LoadedSnapshot", "NamespaceError", "ReadError", "ReplayError", "ReplayOptions",
    "ReplaySummary", "Replayer", "SnapshotError", "SnapshotSummary", "VerifyReport", "load_snapshot",
    "output_topics", "parse_offsets", "replay", "suffix_for", "take_snapshot", "verify",
]
