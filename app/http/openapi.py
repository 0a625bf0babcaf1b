"""The OpenAPI 3.1 description of the worker's HTTP API, served at GET /openapi.json.

`docs/openapi.json` is this document, committed (a test keeps the two identical). After changing the API:

    python -m app.http.openapi > docs/openapi.json

The document does not depend on settings: channels are described by the identifier pattern (which channels exist
is configuration; an unconfigured one is a 400), and the security scheme applies when AVAILABILITY_API_TOKEN is set.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from app.http.reservations import MAX_QUANTITY, MAX_TTL_SECONDS
from app.wire.topics import IDENTIFIER_PATTERN

API_VERSION = "1.0.0"
IDENTIFIER = {"type": "string", "pattern": IDENTIFIER_PATTERN.pattern, "minLength": 1, "maxLength": 64}
NULLABLE_IDENTIFIER = {"type": ["string", "null"], "pattern": IDENTIFIER_PATTERN.pattern, "maxLength": 64}
INTEGER = {"type": "integer"}
NULLABLE_INTEGER = {"type": ["integer", "null"]}
STATUS = {"type": "string", "enum": ["IN_STOCK", "LOW_STOCK", "OUT_OF_STOCK"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _json(schema: dict[str, Any], description: str, headers: dict | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}}


def _error(description: str, headers: dict | None = None) -> dict[str, Any]:
    return _json(_ref("Error"), description, headers)


AUTH_ERRORS = {
    "401": _error(
        "No bearer token (only when AVAILABILITY_API_TOKEN is set).",
        {"WWW-Authenticate": {"description": 'Bearer realm="availability"', "schema": {"type": "string"}}},
    ),
    "403": _error("Wrong bearer token."),
}
UNAVAILABLE = _error(
    "The SKU's partition is being restored or moved, or its owner is not known or does not answer. Retry.",
    RETRY_AFTER,
)


def _query(name: str, description: str, schema: dict | None = None, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or IDENTIFIER}


SKU_PATH = {"name": "sku", "in": "path", "required": True, "description": "SKU id.", "schema": IDENTIFIER}
CHANNEL_QUERY = _query("channel", "Only this channel (one of AVAILABILITY_CHANNELS; another is a 400).")
LOCATION_QUERY = _query("location", "Only this location.")


def _schemas() -> dict[str, Any]:
    line = _object({"location": IDENTIFIER, "quantity": INTEGER})
    location_stock = _object(
        {name: INTEGER for name in ("sellable", "reserved", "in_transit", "damaged", "quarantine")}
    )
    steps = _object(
        {
            "pool": INTEGER,
            "own_reserved": INTEGER,
            "gross": INTEGER,
            "after_waterfall": INTEGER,
            "share": NULLABLE_INTEGER,
            "free": NULLABLE_INTEGER,
            "after_buffer": NULLABLE_INTEGER,
            "quantity": INTEGER,
        }
    )
    published = _object({"quantity": INTEGER, "status": STATUS, "version": INTEGER})
    return {
        "Error": _object({"error": {"type": "string"}}),
        "Health": _object({"status": {"type": "string", "const": "ok"}}),
        "Readiness": _object(
            {
                "ready": {"type": "boolean"},
                "reason": {"type": "string"},
                "active_partitions": {"type": "array", "items": INTEGER},
            }
        ),
        "Availability": _object(
            {
                "sku": IDENTIFIER,
                "ledger_partition": INTEGER,
                "last_ledger_offset": INTEGER,
                "last_ledger_index": INTEGER,
                "availability": {
                    "type": "array",
                    "items": _object(
                        {
                            "channel": IDENTIFIER,
                            "location": NULLABLE_IDENTIFIER,
                            "key": {"type": "string"},
                            "quantity": INTEGER,
                            "status": STATUS,
                            "version": INTEGER,
                        }
                    ),
                },
                "locations": {"type": "object", "additionalProperties": location_stock},
            }
        ),
        "Explanation": _object(
            {
                "sku": IDENTIFIER,
                "ledger_partition": INTEGER,
                "last_ledger_offset": INTEGER,
                "last_ledger_index": INTEGER,
                "policy": {
                    "oneOf": [
                        {"type": "null"},
                        _object({"version": INTEGER, "event_id": {"type": "string"}, "effective_offset": INTEGER}),
                    ],
                    "description": "The policy version the numbers were computed under; null before any policy.",
                },
                "locations": {
                    "type": "array",
                    "items": _object(
                        {
                            "location": IDENTIFIER,
                            "location_type": {"type": ["string", "null"]},
                            "sellable": INTEGER,
                            "reserved": INTEGER,
                            "safety_stock": _object(
                                {
                                    "quantity": INTEGER,
                                    "rule": {
                                        "type": ["string", "null"],
                                        "enum": ["SKU_LOCATION", "SKU", "LOCATION_TYPE", None],
                                        "description": "Scope of the rule that set it (most specific wins); "
                                        "null: no rule, 0.",
                                    },
                                }
                            ),
                            "in_transit": INTEGER,
                            "damaged": INTEGER,
                            "quarantine": INTEGER,
                            "atp": NULLABLE_INTEGER,
                            "atp_with_transit": NULLABLE_INTEGER,
                            "channels": {"type": "array", "items": IDENTIFIER},
                            "fallbacks": {
                                "type": "array",
                                "description": "Fallbacks of the location's silent feeds that apply now "
                                "(docs/RULES.md, section 12); empty when its feeds are alive.",
                                "items": _object({
                                    "feed": {"type": "string", "enum": ["POS", "WMS"]},
                                    "fallback": {"type": "string",
                                                 "enum": ["BUFFER_UNITS", "BUFFER_PERCENT", "EXCLUDE_FROM_NETWORK"]},
                                    "amount": INTEGER,
                                }),
                            },
                        }
                    ),
                },
                "channels": {
                    "type": "array",
                    "description": "Channels of the policy in waterfall order (priority, then name).",
                    "items": _object(
                        {
                            "channel": IDENTIFIER,
                            "granularity": {"type": "string", "enum": ["NETWORK", "LOCATION"]},
                            "priority": INTEGER,
                            "waterfall_rank": INTEGER,
                            "rule": _object(
                                {
                                    "share_bp": INTEGER,
                                    "protected_quantity": INTEGER,
                                    "protected_above": INTEGER,
                                    "buffer": INTEGER,
                                    "max_advertised": NULLABLE_INTEGER,
                                    "include_in_transit": {"type": "boolean"},
                                    "low_stock_threshold": INTEGER,
                                    "locations": {"type": "array", "items": IDENTIFIER},
                                }
                            ),
                            "keys": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "key": {"type": "string"},
                                        "location": NULLABLE_IDENTIFIER,
                                        "pool_locations": {
                                            "type": "array",
                                            "items": _object({"location": IDENTIFIER, "units": INTEGER}),
                                        },
                                        "steps": steps,
                                        "quantity": INTEGER,
                                        "status": STATUS,
                                        "published": {"oneOf": [{"type": "null"}, published]},
                                        "matches_published": {"type": "boolean"},
                                    }
                                ),
                            },
                        }
                    ),
                },
                "reservations": {
                    "type": "array",
                    "items": _object(
                        {
                            "reservation_id": IDENTIFIER,
                            "channel": IDENTIFIER,
                            "requested_quantity": INTEGER,
                            "reserved_quantity": INTEGER,
                            "lines": {"type": "array", "items": line},
                            "expires_at": NULLABLE_INTEGER,
                        }
                    ),
                },
                "recent_entries": {
                    "type": "array",
                    "description": "The SKU's last applied ledger entries, newest first (at most 10).",
                    "items": _object(
                        {
                            "event_id": {"type": "string"},
                            "kind": {"type": "string"},
                            "ledger_partition": INTEGER,
                            "ledger_offset": INTEGER,
                            "ledger_index": INTEGER,
                            "result": {"type": "string"},
                            "reservation_id": {"type": ["string", "null"]},
                        }
                    ),
                },
            }
        ),
        "ReserveRequest": _object(
            {
                "reservation_id": IDENTIFIER,
                "sku": IDENTIFIER,
                "channel": {**IDENTIFIER, "description": "One of AVAILABILITY_CHANNELS."},
                "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY},
                "location": {**NULLABLE_IDENTIFIER, "description": "Reserve at this location only."},
                "allow_partial": {"type": "boolean", "default": False},
                "ttl_seconds": {
                    "type": ["integer", "null"], "minimum": 1, "maximum": MAX_TTL_SECONDS,
                    "description": "Expire the reservation this long after the request (worker clock).",
                },
            },
            required=["reservation_id", "sku", "channel", "quantity"],
        ),
        "Decision": _object(
            {
                "reservation_id": IDENTIFIER,
                "sku": IDENTIFIER,
                "channel": IDENTIFIER,
                "outcome": {"type": "string", "enum": ["ACCEPTED", "REJECTED", "RELEASED", "FULFILLED", "EXPIRED"]},
                "reason": {"type": ["string", "null"], "description": "Reason code when REJECTED."},
                "requested_quantity": INTEGER,
                "reserved_quantity": INTEGER,
                "lines": {"type": "array", "items": line},
                "event_id": {"type": ["string", "null"], "description": "The deciding command; null from state."},
                "ledger_partition": INTEGER,
                "ledger_offset": NULLABLE_INTEGER,
                "ledger_index": NULLABLE_INTEGER,
                "event_time": NULLABLE_INTEGER,
                "answered_from": {
                    "type": "string",
                    "enum": ["ledger", "stored-state"],
                    "description": "ledger: the decision of the command this request wrote; stored-state: a "
                    "repeat, answered from the SKU's state as the engine would answer it.",
                },
            }
        ),
        "PolicyPreview": _object(
            {
                "candidate_version": INTEGER,
                "current_version": {**NULLABLE_INTEGER, "description": "The highest version in force; null: none."},
                "stale_version": {"type": "boolean", "description": "The candidate's version is not above the one "
                                  "in force: published as it is, it would be refused (STALE_POLICY_VERSION). The "
                                  "preview shows its rules as the next version."},
                "skus": {**INTEGER, "description": "SKUs evaluated."},
                "partitions": {"type": "array", "items": INTEGER, "description": "Ledger partitions covered."},
                "channels": {
                    "type": "object",
                    "description": "Per channel with at least one key that would change.",
                    "additionalProperties": _object(
                        {
                            "changed_keys": INTEGER,
                            "units_gained": INTEGER,
                            "units_lost": INTEGER,
                            "out_of_stock": {**INTEGER, "description": "Keys that show units now and would not."},
                            "largest": {
                                "type": "array",
                                "description": "The largest changes (at most `limit`), largest first.",
                                "items": _object(
                                    {
                                        "sku": IDENTIFIER,
                                        "location": NULLABLE_IDENTIFIER,
                                        "before": INTEGER,
                                        "after": INTEGER,
                                        "change": INTEGER,
                                        "before_status": STATUS,
                                        "after_status": STATUS,
                                    }
                                ),
                            },
                        }
                    ),
                },
                "scope": {"type": "string", "enum": ["cluster", "worker"]},
            }
        ),
        "Pending": _object(
            {
                "error": {"type": "string"},
                "accepted_for_processing": {"type": "boolean", "const": True},
                "reservation_id": IDENTIFIER,
                "sku": IDENTIFIER,
                "event_id": {"type": "string"},
                "detail": {"type": "string"},
            }
        ),
    }


def openapi_document() -> dict[str, Any]:
    decision = _ref("Decision")
    common_reservation_errors = {
        "400": _error("Malformed request: the message names the field."),
        **AUTH_ERRORS,
        "503": _error(
            "The owner of the SKU is unavailable, or the command was not acknowledged by the broker (it may or may "
            "not be decided later). Repeat the same request: a repeat never reserves twice.",
            RETRY_AFTER,
        ),
        "504": _json(_ref("Pending"), "No decision within AVAILABILITY_RESERVATION_TIMEOUT_SECONDS: the command "
                     "was written and will be decided exactly once, later. Repeat the request to learn the decision."),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Inventory availability worker API",
            "version": API_VERSION,
            "description": "Availability lookups and explanations, synchronous reservations, probes and metrics "
            "of one worker (docs/HTTP_API.md). Any worker answers: requests about a SKU are forwarded to the worker "
            "that owns its partition. With AVAILABILITY_API_TOKEN set, every endpoint but /health and /ready "
            "needs `Authorization: Bearer <token>`.",
        },
        "servers": [{"url": "http://127.0.0.1:6066", "description": "a worker with the default settings"}],
        "security": [{"bearerAuth": []}],
        "paths": {
            "/availability/{sku}": {
                "get": {
                    "operationId": "lookupAvailability",
                    "summary": "What was last published for every channel key of the SKU, and its stock.",
                    "parameters": [SKU_PATH, CHANNEL_QUERY, LOCATION_QUERY],
                    "responses": {
                        "200": _json(_ref("Availability"), "The SKU's availability."),
                        "400": _error("Malformed SKU, channel or location, or an unknown query parameter."),
                        **AUTH_ERRORS,
                        "404": _error("No event for the SKU was applied, or nothing at that location."),
                        "503": UNAVAILABLE,
                    },
                }
            },
            "/availability/{sku}/explain": {
                "get": {
                    "operationId": "explainAvailability",
                    "summary": "How each channel's number for the SKU was reached.",
                    "description": "Per location: stock, reserved, safety stock and the rule that set it, ATP. Per "
                    "channel of the policy: its rule, the order of operations from pool to advertised quantity, and "
                    "the last published record (`matches_published`). Then the SKU's active reservations and last "
                    "ledger entries. A location filter narrows locations and LOCATION-channel keys; NETWORK "
                    "channels stay whole.",
                    "parameters": [SKU_PATH, CHANNEL_QUERY, LOCATION_QUERY],
                    "responses": {
                        "200": _json(_ref("Explanation"), "The explanation."),
                        "400": _error("Malformed SKU, channel or location, or an unknown or repeated parameter."),
                        **AUTH_ERRORS,
                        "404": _error("No event for the SKU was applied, or it has no stock at that location."),
                        "503": UNAVAILABLE,
                    },
                }
            },
            "/reservations": {
                "post": {
                    "operationId": "reserve",
                    "summary": "Reserve units, waiting for the stream's decision.",
                    "description": "Writes a RESERVE command to source.reservation-commands (as order management "
                    "does) and waits for its decision. Idempotent by reservation id (scoped to the SKU): a repeat "
                    "returns the original decision and reserves nothing more, also after the reservation ended.",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("ReserveRequest")}},
                    },
                    "responses": {
                        "201": _json(decision, "ACCEPTED: the units are reserved (lines say where)."),
                        "409": _json(decision, "REJECTED: `reason` says why (e.g. INSUFFICIENT_STOCK)."),
                        "413": _error("Body larger than AVAILABILITY_MAX_REQUEST_BODY_BYTES."),
                        "415": _error("Content-Type is not application/json."),
                        **common_reservation_errors,
                    },
                }
            },
            "/reservations/{reservation_id}": {
                "delete": {
                    "operationId": "release",
                    "summary": "Release a reservation, waiting for the stream's decision.",
                    "parameters": [
                        {"name": "reservation_id", "in": "path", "required": True, "schema": IDENTIFIER},
                        _query("sku", "SKU of the reservation (ids are scoped to their SKU).", required=True),
                        _query("channel", "Channel that holds the reservation.", required=True),
                    ],
                    "responses": {
                        "200": _json(decision, "RELEASED: the units are back (also for a repeated release)."),
                        "409": _json(decision, "REJECTED: UNKNOWN_RESERVATION, RESERVATION_NOT_ACTIVE or "
                                     "CHANNEL_MISMATCH."),
                        "413": _error("Body larger than AVAILABILITY_MAX_REQUEST_BODY_BYTES."),
                        **common_reservation_errors,
                    },
                }
            },
            "/policy/preview": {
                "post": {
                    "operationId": "previewPolicy",
                    "summary": "What a candidate policy would change on every channel; publishes nothing.",
                    "description": "The body is a PolicyChange record as JSON (avro/PolicyChange.avsc: enums as "
                    "strings, fields with defaults may be left out), checked field by field and by the policy "
                    "rules. The engine applies it, as the next version, to copies of the current SKU states: "
                    "nothing is published and no state changes. scope=cluster (default) merges the answers of the "
                    "workers owning every partition; scope=worker answers for this worker's partitions only.",
                    "parameters": [
                        _query("limit", "Largest changes listed per channel (1 to 1000, default 10).",
                               {"type": "integer", "minimum": 1, "maximum": 1000}),
                        _query("scope", "cluster (default) or worker.",
                               {"type": "string", "enum": ["cluster", "worker"]}),
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {
                            "type": "object", "description": "A PolicyChange record (avro/PolicyChange.avsc)."}}},
                    },
                    "responses": {
                        "200": _json(_ref("PolicyPreview"), "The preview."),
                        "400": _error("Invalid policy (the message names the field) or query parameter."),
                        **AUTH_ERRORS,
                        "413": _error("Body larger than AVAILABILITY_MAX_REQUEST_BODY_BYTES."),
                        "415": _error("Content-Type is not application/json."),
                        "503": _error("A partition is being restored or moved, or no worker answered for some "
                                      "partitions (the message names them). Retry.", RETRY_AFTER),
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness: 200 while the process serves HTTP. Never needs a token.",
                    "security": [],
                    "responses": {"200": _json(_ref("Health"), "Alive.")},
                }
            },
            "/ready": {
                "get": {
                    "operationId": "ready",
                    "summary": "Readiness: 200 when table partitions are assigned and no restore or rebalance runs. "
                    "Never needs a token.",
                    "security": [],
                    "responses": {
                        "200": _json(_ref("Readiness"), "Ready."),
                        "503": _json(_ref("Readiness"), "Not ready; `reason` says why."),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus text exposition (docs/OPERATIONS.md lists the metrics).",
                    "responses": {
                        "200": {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **AUTH_ERRORS,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {
                        "200": _json({"type": "object"}, "The OpenAPI document."),
                        **AUTH_ERRORS,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "AVAILABILITY_API_TOKEN; when it is not set the API needs no token (and binds to "
                    "loopback unless AVAILABILITY_WEB_HOST says otherwise).",
                }
            },
            "schemas": _schemas(),
        },
    }


def openapi_json() -> str:
    """The document as committed in docs/openapi.json (declared key order, two-space indent)."""
    return json.dumps(openapi_document(), indent=2) + "\n"


if __name__ == "__main__":
    sys.stdout.write(openapi_json())
