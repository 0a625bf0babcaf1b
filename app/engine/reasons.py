"""Reason codes: why an event was rejected, acknowledged without effect, or a reservation refused.

They are plain strings so they travel unchanged into dead-letter headers, metrics labels and the `reason` field of
ReservationDecision. Keep them stable: operators alert on them. Every code is in exactly one of the sets at the end
(which stage dead-letters it, or a decision only); docs/CONTRACT.md, "Dead letters", has the same table, and
tests/wire/test_dead_letter_reasons.py pins the two against each other and against what the code emits.
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

# Stateful: the event does not fit the current policy or state (commands and policies; movements are facts).
NO_POLICY = "NO_POLICY"
UNKNOWN_LOCATION = "UNKNOWN_LOCATION"
UNKNOWN_CHANNEL = "UNKNOWN_CHANNEL"
STALE_POLICY_VERSION = "STALE_POLICY_VERSION"
INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
COVERED_BY_CYCLE_COUNT = "COVERED_BY_CYCLE_COUNT"  # an acknowledgement: the delta is already inside a count
SUPERSEDED_COUNT = "SUPERSEDED_COUNT"  # an acknowledgement: a count older than the location's last count

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
    UNDECODABLE_RECORD, EVENT_TIME_IN_FUTURE, NO_POLICY, UNKNOWN_CHANNEL, STALE_POLICY_VERSION, UNKNOWN_RESERVATION,
    CHANNEL_MISMATCH, RESERVATION_NOT_ACTIVE,
}
"""Reasons of the availability stage's dead letters: a ledger entry the rules refused (a Rejection). Stock movements
are facts and never refused for a stateful reason (docs/RULES.md, section 2): only intents (reservation commands)
and policies are."""

DECISION_ONLY_REASONS = frozenset({INSUFFICIENT_STOCK, LOCATION_NOT_IN_CHANNEL, ALREADY_EXPIRED, INSUFFICIENT_ON_HAND})
"""Business refusals of a reservation command: only the `reason` of its REJECTED decision, never a dead letter."""

ACKNOWLEDGEMENTS = frozenset({COVERED_BY_CYCLE_COUNT, SUPERSEDED_COUNT})
"""A movement that changed nothing because a cycle count already holds it: the `result` of its entry in the SKU's
history (GET /availability/{sku}/explain), never a dead letter."""
