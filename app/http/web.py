"""The worker's HTTP API: availability lookups from the SKUs' current state, liveness, readiness and metrics.

    GET /availability/{sku}[?channel=<channel>][&location=<location>]
    GET /availability/{sku}/explain[?channel=<channel>][&location=<location>]
    POST /reservations      DELETE /reservations/{reservation_id}?sku=&channel=   (app.http.reservations)
    GET /health      GET /ready      GET /metrics      GET /openapi.json           (app.http.openapi)

A lookup is answered by the worker that owns the SKU's `sku-state` partition (Faust `table_route` forwards the
request there), from the SKU's current state on that worker (`current_sku_state`): the availability stage's live
state when it holds the SKU (`live_store`: applied, and written back to the table within the write-back
interval), else the table value. It shows what was last published per channel key, and each location's stock.
While that partition is being restored, or during a rebalance, the answer is 503 with `Retry-After`, never a stale
or empty value. docs/OPERATIONS.md documents the responses.

An explanation (`/explain`) is answered the same way, by app.engine.explain over the SKU's state and its
partition's policy history. Every route but /health and /ready sits behind the optional bearer token and the
request size limit (app.http.security). docs/HTTP_API.md documents the whole API.

The JSON and the validation are pure functions (`parse_lookup`, `parse_explain`, `availability_document`,
`readiness_of`), tested without a broker; `register_web(service)` only binds them to Faust views.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faust.web import Request, Response, View

from app.engine import SkuState
from app.engine.codec import StateDecodeError
from app.engine.explain import explain_sku
from app.engine.positions import split_position
from app.errors import UserError
from app.http.openapi import openapi_document
from app.http.owner_state import current_partition_state, current_sku_state, unavailable
from app.http.policy_preview import register_policy_preview
from app.http.reservations import register_reservation_views
from app.http.security import is_loopback, security_middleware
from app.service.metrics import EXPOSITION_CONTENT_TYPE
from app.service.readiness import partition_unavailable_reason, worker_readiness
from app.wire.topics import IDENTIFIER_PATTERN, availability_key, ledger_partition

if TYPE_CHECKING:
    from app.service.runtime import AvailabilityService

logger = logging.getLogger(__name__)

LOOKUP_PARAMETERS = frozenset({"channel", "location"})


class InvalidLookup(UserError, ValueError):
    """The request cannot name an availability key (HTTP 400). The message says which part is wrong."""


@dataclass(frozen=True)
class LookupQuery:
    sku: str
    channel: str | None = None
    location: str | None = None


def parse_lookup(sku: str, parameters: Mapping[str, str], channels: Sequence[str]) -> LookupQuery:
    """Validate a lookup: ids must be identifiers, a channel must be configured, no other parameters."""
    unknown = sorted(set(parameters) - LOOKUP_PARAMETERS)
    if unknown:
        raise InvalidLookup(f"unknown query parameter(s): {', '.join(unknown)} (allowed: channel, location)")
    if not IDENTIFIER_PATTERN.fullmatch(sku):
        raise InvalidLookup(f"sku {sku!r} is not an identifier ({IDENTIFIER_PATTERN.pattern})")
    channel = parameters.get("channel")
    if channel is not None and channel not in channels:
        raise InvalidLookup(f"unknown channel {channel!r} (configured: {', '.join(channels)})")
    location = parameters.get("location")
    if location is not None and not IDENTIFIER_PATTERN.fullmatch(location):
        raise InvalidLookup(f"location {location!r} is not an identifier ({IDENTIFIER_PATTERN.pattern})")
    return LookupQuery(sku, channel, location)


def parse_explain(sku: str, pairs, channels: Sequence[str]) -> LookupQuery:
    """An explanation request: as a lookup, and a query parameter given twice is an error too."""
    parameters: dict[str, str] = {}
    for name, value in pairs:
        if name in parameters:
            raise InvalidLookup(f"query parameter {name!r} given more than once")
        parameters[name] = value
    return parse_lookup(sku, parameters, channels)


def availability_document(
    state: SkuState, query: LookupQuery, channels: Sequence[str], partition: int
) -> dict[str, Any] | None:
    """The JSON body of a lookup, or None when the filters name nothing this SKU has (HTTP 404).

    `availability` lists the last published record of every channel key (channel order as configured, then
    location; network-level keys first), exactly the quantity/status/version on `availability.<channel>`.
    A `location` filter keeps only that location's per-location keys. `locations` is each location's stock."""
    order = {channel: index for index, channel in enumerate(channels)}
    records = []
    for (channel, location), published in state.published.items():
        if query.channel is not None and channel != query.channel:
            continue
        if query.location is not None and location != query.location:
            continue
        records.append(
            {
                "channel": channel,
                "location": location,
                "key": availability_key(state.sku, location),
                "quantity": published.quantity,
                "status": published.status,
                "version": published.version,
            }
        )
    records.sort(key=lambda r: (order.get(r["channel"], len(order)), r["channel"], r["location"] or ""))
    positions = {
        location: {
            "sellable": p.sellable,
            "reserved": p.reserved,
            "in_transit": p.in_transit,
            "damaged": p.damaged,
            "quarantine": p.quarantine,
        }
        for location, p in sorted(state.positions.items())
        if query.location is None or location == query.location
    }
    if query.location is not None and not positions and not records:
        return None
    return {
        "sku": state.sku,
        "ledger_partition": partition,
        "last_ledger_offset": split_position(state.last_position)[0],
        "last_ledger_index": split_position(state.last_position)[1],
        "availability": records,
        "locations": positions,
    }




def register_web(service: AvailabilityService) -> None:
    """Add every view of the API (lookup, explanation, reservations, health, readiness, metrics, OpenAPI) and the
    security middleware to `service.app`. Idempotent."""
    app = service.app
    if getattr(app, "availability_web_registered", False):
        return
    app.availability_web_registered = True

    settings = service.settings
    token = settings.api_token.get_secret_value() if settings.api_token is not None else None
    app.web.web_app.middlewares.append(security_middleware(token, settings.max_request_body_bytes))
    if token is None and not is_loopback(settings.web_host):
        logger.warning("the HTTP API listens on %s without AVAILABILITY_API_TOKEN: anyone who can reach it can "
                       "read availability and reserve stock", settings.web_host)
    sku_table = service.tables.sku_state
    changelog_topic = sku_table.changelog_topic.get_topic_name()
    channels = tuple(service.settings.channels)
    partitions = service.settings.partitions

    async def answer_locally(view: View, request: Request, *, sku: str, query: LookupQuery) -> Response:
        try:
            return read_locally(view, query)
        except Exception:
            # Answered here: a failure is this worker's (500), not an unreachable owner (503, see below).
            logger.exception("lookup of %r failed on its owner", query.sku)
            return view.json({"error": "internal error"}, status=500)

    def read_locally(view: View, query: LookupQuery) -> Response:
        partition = ledger_partition(query.sku, partitions)  # the tables are co-partitioned with the ledger
        reason = partition_unavailable_reason(app, changelog_topic, partition)
        if reason is not None:
            return unavailable(view, reason)
        try:
            state = current_sku_state(service, partition, query.sku)
        except StateDecodeError as error:
            logger.error("sku-state value of %r is unreadable: %s", query.sku, error)
            return view.json({"error": f"stored state of {query.sku!r} is unreadable"}, status=500)
        if state is None:
            return view.json({"error": f"unknown sku {query.sku!r}"}, status=404)
        document = availability_document(state, query, channels, partition)
        if document is None:
            return view.json({"error": f"sku {query.sku!r} has nothing at location {query.location!r}"}, status=404)
        return view.json(document)

    answer_from_owner = app.table_route(table=sku_table, match_info="sku")(answer_locally)

    async def explain_locally(view: View, request: Request, *, sku: str, query: LookupQuery) -> Response:
        try:
            partition = ledger_partition(query.sku, partitions)
            reason = partition_unavailable_reason(app, changelog_topic, partition)
            if reason is not None:
                return unavailable(view, reason)
            state = current_sku_state(service, partition, query.sku)
            if state is None:
                return view.json({"error": f"unknown sku {query.sku!r}"}, status=404)
            partition_state = current_partition_state(service, partition)
            document = explain_sku(state, partition_state, channel=query.channel, location=query.location)
        except Exception:
            logger.exception("explanation of %r failed on its owner", query.sku)
            return view.json({"error": "internal error"}, status=500)
        if document is None:
            return view.json({"error": f"sku {query.sku!r} has no stock position at {query.location!r}"}, status=404)
        document["ledger_partition"] = partition
        return view.json(document)

    explain_from_owner = app.table_route(table=sku_table, match_info="sku")(explain_locally)

    @app.page("/availability/{sku}/explain", name="availability_explain")
    class AvailabilityExplain(View):
        async def get(self, request: Request, sku: str) -> Response:
            try:
                query = parse_explain(sku, request.query.items(), channels)
            except InvalidLookup as error:
                return self.json({"error": str(error)}, status=400)
            try:
                return await explain_from_owner(self, request, sku=sku, query=query)
            except Exception as error:  # noqa: BLE001 - routing only, as for lookups
                logger.warning("explanation of %r could not reach the owner: %s: %s", sku, type(error).__name__, error)
                return unavailable(self, f"the worker owning {sku!r} is not known or not reachable yet")

    @app.page("/openapi.json", name="openapi")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            return self.json(openapi_document())

    register_reservation_views(service)
    register_policy_preview(service)

    @app.page("/availability/{sku}", name="availability_lookup")
    class AvailabilityLookup(View):
        async def get(self, request: Request, sku: str) -> Response:
            try:
                query = parse_lookup(sku, request.query, channels)
            except InvalidLookup as error:
                return self.json({"error": str(error)}, status=400)
            try:
                return await answer_from_owner(self, request, sku=sku, query=query)
            except Exception as error:  # noqa: BLE001 - routing only: no owner known yet, or it did not answer
                logger.warning("lookup of %r could not reach the owner: %s: %s", sku, type(error).__name__, error)
                return unavailable(self, f"the worker owning {sku!r} is not known or not reachable yet")

    @app.page("/health", name="health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok"})

    @app.page("/ready", name="ready")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            readiness = worker_readiness(app)
            body = {
                "ready": readiness.ready,
                "reason": readiness.reason,
                "active_partitions": list(readiness.active_partitions),
            }
            return self.json(body, status=200 if readiness.ready else 503)

    observer = service.observer
    exposition = getattr(observer, "exposition", None)
    if exposition is not None:
        @app.page("/metrics", name="metrics")
        class Metrics(View):
            async def get(self, request: Request) -> Response:
                observer.refresh(service)
                # aiohttp refuses a charset inside `content_type=`, so the header is set directly.
                return self.bytes(exposition(), headers={"Content-Type": EXPOSITION_CONTENT_TYPE})
