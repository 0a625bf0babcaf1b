"""Reason codes: why an event was rejected, acknowledged without effect, or a reservation refused.

They are plain strings so they travel unchanged into dead-letter headers, metrics labels and the `reason` field of
ReservationDecision. Keep them stable: operators alert on them.
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
