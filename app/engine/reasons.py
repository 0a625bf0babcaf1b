"""Reason codes: why an event was rejected, acknowledged without effect, or a reservation refused.

They are plain strings so they travel unchanged into dead-letter headers, metrics labels and the `reason` field of
ReservationDecision. Keep them stable: operators alert on them. Every code is in exactly one of the sets at the end
(which stage dead-letters it, or a decision only); docs/CONTRACT.md, "Dead letters", has the same table, and
tests/test_dead_letter_reasons.py pins the two against each other and against what the code emits.
"""

from __future__ import annotations

# Stateless: the event itself is malformed (validate()).
INVALID_ID = "INVALID_ID"
INVALID_EVENT_TIME = "INVALID_EVENT_TIME"
INVALID_QUANTITY = "INVALID_QUANTITY"
INVALID_DELTA = "INVALID_DELTA"
MISSING_DISPOSITION = "MISSING_DISPOSITION"
INVALID_COUNTERPARTY = "INVALID_COUNTERPARTY"
INVALID_BUCKETS = "INVALID_BUCKETS"
INVALID_EXPIRY = "INVALID_EXPIRY"
INVALID_POLICY = "INVALID_POLICY"
UNSUPPORTED_EVENT = "UNSUPPORTED_EVENT"
UNDECODABLE_RECORD = "UNDECODABLE_RECORD"
RECORD_TOO_LARGE = "RECORD_TOO_LARGE"  # a source record above AVAILABILITY_MAX_SOURCE_RECORD_BYTES: not even decoded
EVENT_TIME_IN_FUTURE = "EVENT_TIME_IN_FUTURE"  # stamped more than the allowed skew after it was ingested

# Stateful: the event does not fit the current policy or state.
NO_POLICY = "NO_POLICY"
UNKNOWN_LOCATION = "UNKNOWN_LOCATION"
UNKNOWN_CHANNEL = "UNKNOWN_CHANNEL"
STALE_POLICY_VERSION = "STALE_POLICY_VERSION"
INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
INSUFFICIENT_IN_TRANSIT = "INSUFFICIENT_IN_TRANSIT"
STALE_CYCLE_COUNT = "STALE_CYCLE_COUNT"
COUNT_BEYOND_JOURNAL = "COUNT_BEYOND_JOURNAL"
COVERED_BY_CYCLE_COUNT = "COVERED_BY_CYCLE_COUNT"  # an acknowledgement: the delta is already inside a count

# Reservation decisions (the `reason` of a REJECTED ReservationDecision).
LOCATION_NOT_IN_CHANNEL = "LOCATION_NOT_IN_CHANNEL"
ALREADY_EXPIRED = "ALREADY_EXPIRED"
UNKNOWN_RESERVATION = "UNKNOWN_RESERVATION"
CHANNEL_MISMATCH = "CHANNEL_MISMATCH"
RESERVATION_NOT_ACTIVE = "RESERVATION_NOT_ACTIVE"
INSUFFICIENT_ON_HAND = "INSUFFICIENT_ON_HAND"  # fulfil: the reserved units are not physically there (yet)

# -- where each code goes ------------------------------------------------------------------------------------------
VALIDATION_REASONS = frozenset({
    INVALID_ID, INVALID_EVENT_TIME, INVALID_QUANTITY, INVALID_DELTA, MISSING_DISPOSITION, INVALID_COUNTERPARTY,
    INVALID_BUCKETS, INVALID_EXPIRY, INVALID_POLICY, UNKNOWN_LOCATION, UNSUPPORTED_EVENT,
})
"""What `validate()` returns (UNKNOWN_LOCATION: a policy's channel names a location the policy does not declare)."""

INGEST_DEAD_LETTER_REASONS = VALIDATION_REASONS | {UNDECODABLE_RECORD, RECORD_TOO_LARGE, EVENT_TIME_IN_FUTURE}
"""Reasons of the ingest stage's dead letters: a source record (or one movement of a batch) kept off the ledger."""

LEDGER_DEAD_LETTER_REASONS = VALIDATION_REASONS | {
    UNDECODABLE_RECORD, EVENT_TIME_IN_FUTURE, NO_POLICY, UNKNOWN_CHANNEL, STALE_POLICY_VERSION, INSUFFICIENT_STOCK,
    INSUFFICIENT_IN_TRANSIT, STALE_CYCLE_COUNT, COUNT_BEYOND_JOURNAL, COVERED_BY_CYCLE_COUNT, UNKNOWN_RESERVATION,
    CHANNEL_MISMATCH, RESERVATION_NOT_ACTIVE,
}
"""Reasons of the availability stage's dead letters: a ledger entry the rules refused (a Rejection)."""

DECISION_ONLY_REASONS = frozenset({LOCATION_NOT_IN_CHANNEL, ALREADY_EXPIRED, INSUFFICIENT_ON_HAND})
"""Business refusals of a reservation command: only the `reason` of its REJECTED decision, never a dead letter
(INSUFFICIENT_STOCK is one too for a RESERVE, and a dead letter for a movement)."""
