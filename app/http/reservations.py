"""Synchronous reservations over HTTP: `POST /reservations` and `DELETE /reservations/{reservation_id}`.

The HTTP API is one more order-management client, not a second way to change stock: a request becomes a
ReservationCommand on `source.reservation-commands` (key: reservation id), exactly as order management writes it,
and the stream decides it in ledger order. The request then waits for that decision:

1. it is routed to the worker that owns the SKU's ledger partition (the body is forwarded with it);
2. there, if the SKU's stored state already holds the answer for this reservation id (a repeated request), that
   answer is returned at once: the engine would answer a repeated command the same way (docs/RULES.md, section 6);
3. otherwise it registers a waiter under a fresh event id, writes the command, and waits up to
   `reservation_timeout_seconds` for the availability stage to publish and store the command's decision
   (app.service.decision_waiters);
4. no decision in time: 504, whose body says the command was accepted for processing and will be decided exactly
   once, later, in ledger order. Repeating the same request is safe and returns that decision once it exists.

Status codes: 201 ACCEPTED, 200 RELEASED, 409 REJECTED (with the reason code), 400 invalid request, 413 body too
large, 415 not JSON, 503 nothing could be written or the owner is unavailable (Retry-After), 504 pending.
Everything but the views is pure (parsing, the command, the stored answer, the documents), tested without a broker.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.engine import (
    FinishedReservation,
    ReservationAction,
    ReservationCommand,
    ReservationDecision,
    SkuState,
    event_to_record,
)
from app.engine.codec import StateDecodeError
from app.errors import UserError
from app.http.owner_state import current_finished, current_sku_state, unavailable
from app.http.security import read_json_body
from app.service.readiness import partition_unavailable_reason
from app.wire.topics import IDENTIFIER_PATTERN, RESERVATION_COMMANDS, RESERVATION_DECISIONS, ledger_partition

if TYPE_CHECKING:
    from faust.web import Request, Response

    from app.service.runtime import AvailabilityService

logger = logging.getLogger(__name__)

RESERVE_FIELDS = ("reservation_id", "sku", "channel", "quantity", "location", "allow_partial", "ttl_seconds")
REQUIRED_RESERVE_FIELDS = ("reservation_id", "sku", "channel", "quantity")
RELEASE_PARAMETERS = ("sku", "channel")
MAX_QUANTITY = 1_000_000_000
MAX_TTL_SECONDS = 30 * 24 * 3600
COMMAND_SOURCE = "http-api"  # ReservationCommand.source of the commands this API writes
EVENT_ID_PREFIX = "http-"
FORWARDED_HEADER = "X-Availability-Forwarded"  # set on a request forwarded to the owner: never forwarded twice
FORWARD_MARGIN_SECONDS = 5.0  # a forwarded request waits for the owner's own timeout plus this
ANSWERED_FROM_LEDGER = "ledger"  # the decision of the command this request wrote
ANSWERED_FROM_STATE = "stored-state"  # a repeat, answered from the SKU's stored state without a new command
STATUS_OF_OUTCOME = {"ACCEPTED": 201, "RELEASED": 200, "REJECTED": 409}


class InvalidRequest(UserError, ValueError):
    """The request is malformed (HTTP 400); the message says which part."""


@dataclass(frozen=True)
class ReserveRequest:
    reservation_id: str
    sku: str
    channel: str
    quantity: int
    location: str | None = None
    allow_partial: bool = False
    ttl_seconds: int | None = None


@dataclass(frozen=True)
class ReleaseRequest:
    reservation_id: str
    sku: str
    channel: str


# ---------------------------------------------------------------------------------------------------- parsing


def _identifier(name: str, value: Any) -> str:
    if not isinstance(value, str) or IDENTIFIER_PATTERN.fullmatch(value) is None:
        raise InvalidRequest(f"{name} must be a string matching {IDENTIFIER_PATTERN.pattern}")
    return value


def _channel(value: Any, channels: Iterable[str]) -> str:
    channels = tuple(channels)
    if not isinstance(value, str) or value not in channels:
        raise InvalidRequest(f"channel must be one of: {', '.join(channels)}")
    return value


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:  # type(): True is an int to isinstance
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}")
    return value


def parse_reserve_body(body: bytes, channels: Iterable[str]) -> ReserveRequest:
    """A POST /reservations body: a JSON object with exactly the documented fields."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("the body must be a JSON object") from None
    if not isinstance(document, dict):
        raise InvalidRequest("the body must be a JSON object")
    unknown = sorted(set(document) - set(RESERVE_FIELDS))
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)} (allowed: {', '.join(RESERVE_FIELDS)})")
    missing = [name for name in REQUIRED_RESERVE_FIELDS if name not in document]
    if missing:
        raise InvalidRequest(f"missing field(s): {', '.join(missing)}")
    location = document.get("location")
    allow_partial = document.get("allow_partial", False)
    if type(allow_partial) is not bool:
        raise InvalidRequest("allow_partial must be true or false")
    ttl = document.get("ttl_seconds")
    return ReserveRequest(
        reservation_id=_identifier("reservation_id", document["reservation_id"]),
        sku=_identifier("sku", document["sku"]),
        channel=_channel(document["channel"], channels),
        quantity=_integer("quantity", document["quantity"], 1, MAX_QUANTITY),
        location=None if location is None else _identifier("location", location),
        allow_partial=allow_partial,
        ttl_seconds=None if ttl is None else _integer("ttl_seconds", ttl, 1, MAX_TTL_SECONDS),
    )


def single_valued(pairs: Iterable[tuple[str, str]], allowed: Iterable[str]) -> dict[str, str]:
    """Query parameters as a dict: unknown or repeated names are an error, not silently dropped."""
    allowed = tuple(allowed)
    values: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            raise InvalidRequest(f"unknown query parameter {name!r} (allowed: {', '.join(allowed)})")
        if name in values:
            raise InvalidRequest(f"query parameter {name!r} given more than once")
        values[name] = value
    return values


def parse_release(reservation_id: str, pairs: Iterable[tuple[str, str]], channels: Iterable[str]) -> ReleaseRequest:
    """DELETE /reservations/{reservation_id}?sku=&channel=: both are needed (reservation ids are scoped to their
    SKU, and a release names the channel that holds the reservation)."""
    parameters = single_valued(pairs, RELEASE_PARAMETERS)
    missing = [name for name in RELEASE_PARAMETERS if name not in parameters]
    if missing:
        raise InvalidRequest(f"missing query parameter(s): {', '.join(missing)}")
    return ReleaseRequest(
        reservation_id=_identifier("reservation_id", reservation_id),
        sku=_identifier("sku", parameters["sku"]),
        channel=_channel(parameters["channel"], channels),
    )


# ---------------------------------------------------------------------------------------------------- commands


def new_event_id() -> str:
    """A command's event id: unique per request, so a retried request is a new command that the engine answers
    with the original decision, never a duplicate it would silently ignore."""
    return f"{EVENT_ID_PREFIX}{uuid.uuid4().hex}"


def reservation_command(request: ReserveRequest | ReleaseRequest, event_id: str, now_ms: int) -> ReservationCommand:
    """The command order management would write for this request. `now_ms` is the request's event time (the
    worker's clock: an input of the ledger like any source system's timestamp); a TTL counts from it."""
    if isinstance(request, ReleaseRequest):
        return ReservationCommand(
            event_id=event_id, command=ReservationAction.RELEASE, reservation_id=request.reservation_id,
            sku=request.sku, channel=request.channel, quantity=0, event_time=now_ms, source=COMMAND_SOURCE,
        )
    expires_at = None if request.ttl_seconds is None else now_ms + request.ttl_seconds * 1000
    return ReservationCommand(
        event_id=event_id, command=ReservationAction.RESERVE, reservation_id=request.reservation_id,
        sku=request.sku, channel=request.channel, quantity=request.quantity, location=request.location,
        allow_partial=request.allow_partial, expires_at=expires_at, event_time=now_ms, source=COMMAND_SOURCE,
    )


# --------------------------------------------------------------------------------------------------- documents


def _answer(sku: str, reservation_id: str, channel: str, outcome: str, reason: str | None, requested: int,
            lines, partition: int) -> dict[str, Any]:
    return {
        "reservation_id": reservation_id,
        "sku": sku,
        "channel": channel,
        "outcome": outcome,
        "reason": reason,
        "requested_quantity": requested,
        "reserved_quantity": sum(units for _, units in lines),
        "lines": [{"location": location, "quantity": units} for location, units in lines],
        "event_id": None,
        "ledger_partition": partition,
        "ledger_offset": None,
        "ledger_index": None,
        "event_time": None,
        "answered_from": ANSWERED_FROM_STATE,
    }


def stored_answer(state: SkuState | None, finished: FinishedReservation | None,
                  request: ReserveRequest | ReleaseRequest, partition: int) -> dict | None:
    """The answer the engine would give to this request right now if its state already decides it (a repeat), as
    app.engine.reservations does for a repeated command; None when only the stream can decide. `finished` is the
    owner's finished record of the request's reservation id, within the retention (app.http.web)."""
    if state is None:
        return None
    reservation_id = request.reservation_id
    active = state.reservations.get(reservation_id)
    finished = finished if active is None else None
    if isinstance(request, ReserveRequest):
        if active is not None:
            return _answer(state.sku, reservation_id, active.channel, "ACCEPTED", None, active.requested,
                           active.lines, partition)
        if finished is not None:
            outcome = "ACCEPTED" if finished.reserve_reason is None else "REJECTED"
            return _answer(state.sku, reservation_id, finished.channel, outcome, finished.reserve_reason,
                           finished.requested, finished.lines, partition)
        return None
    if finished is not None and finished.final_outcome == "RELEASED" and finished.channel == request.channel:
        return _answer(state.sku, reservation_id, finished.channel, "RELEASED", None, 0, finished.lines, partition)
    return None


def decision_document(decision: ReservationDecision) -> dict[str, Any]:
    """The JSON answer for a decision published on `reservation-decisions` (its record, plus `answered_from`)."""
    document = decision.to_record()
    document["answered_from"] = ANSWERED_FROM_LEDGER
    return document


def status_of(document: dict[str, Any]) -> int:
    return STATUS_OF_OUTCOME.get(document["outcome"], 409)


def pending_document(request: ReserveRequest | ReleaseRequest, event_id: str, timeout: float) -> dict[str, Any]:
    return {
        "error": f"no decision within {timeout:g}s",
        "accepted_for_processing": True,
        "reservation_id": request.reservation_id,
        "sku": request.sku,
        "event_id": event_id,
        "detail": f"The command is on {RESERVATION_COMMANDS.name} and will be decided exactly once, in ledger order; "
        f"its decision will be published on {RESERVATION_DECISIONS.name} with event_id {event_id}. Repeat the same "
        "request to learn it: a repeat never reserves twice.",
    }


# ------------------------------------------------------------------------------------------------------- views


def register_reservation_views(service: AvailabilityService) -> None:
    """Bind POST /reservations and DELETE /reservations/{reservation_id} to `service.app` (called by register_web)."""
    import aiohttp
    from faust.web import View
    from yarl import URL


    app = service.app
    settings = service.settings
    channels = tuple(settings.channels)
    partitions = settings.partitions
    sku_table = service.tables.sku_state
    changelog_topic = sku_table.changelog_topic.get_topic_name()
    commands = service.codec.serde(RESERVATION_COMMANDS)
    waiters = service.decision_waiters
    timeout = settings.reservation_timeout_seconds

    def owner_url(sku: str) -> URL | None:
        """The web URL of the worker owning `sku`'s partition; None when it is this one. Raises (KeyError) when no
        owner is known yet (before the first assignment)."""
        destination = app.router.key_store(sku_table.name, sku)
        here = URL(str(app.conf.canonical_url))
        same = (destination.host, destination.port) == (here.host, here.port)
        return None if same else destination

    async def forward(view: View, request: Request, destination: URL, body: bytes) -> Response:
        headers = {FORWARDED_HEADER: "1"}
        for name in ("Authorization", "Content-Type"):
            if name in request.headers:
                headers[name] = request.headers[name]
        url = request.url.with_scheme(destination.scheme or "http").with_host(destination.host)
        url = url.with_port(destination.port)
        client_timeout = aiohttp.ClientTimeout(total=timeout + FORWARD_MARGIN_SECONDS)
        async with app.http_client.request(
            request.method, url, headers=headers, data=body or None, timeout=client_timeout
        ) as response:
            text = await response.text()
            passed = {name: response.headers[name] for name in ("Retry-After",) if name in response.headers}
            return view.text(text, content_type=response.content_type, status=response.status, headers=passed)

    async def answer(view: View, request: Request, parsed, body: bytes) -> Response:
        """Answer on the owner of the SKU, forwarding the request there if it is another worker."""
        try:
            destination = owner_url(parsed.sku)
        except Exception as error:  # noqa: BLE001 - KeyError before the first assignment; anything else: same
            logger.warning("no owner known for %r: %s: %s", parsed.sku, type(error).__name__, error)
            return unavailable(view, f"the worker owning {parsed.sku!r} is not known yet")
        if destination is None:
            try:
                return await decide_here(view, parsed)
            except Exception:
                logger.exception("reservation request %r failed on its owner", parsed.reservation_id)
                return view.json({"error": "internal error"}, status=500)
        if FORWARDED_HEADER in request.headers:
            return unavailable(view, f"the partition of {parsed.sku!r} is changing owner")
        try:
            return await forward(view, request, destination, body)
        except Exception as error:  # noqa: BLE001 - the owner did not answer: the client retries (idempotent)
            logger.warning("reservation request for %r could not reach its owner: %s: %s",
                           parsed.sku, type(error).__name__, error)
            return unavailable(view, f"the worker owning {parsed.sku!r} did not answer; repeat the request")

    async def decide_here(view: View, parsed: ReserveRequest | ReleaseRequest) -> Response:
        partition = ledger_partition(parsed.sku, partitions)
        reason = partition_unavailable_reason(app, changelog_topic, partition)
        if reason is not None:
            return unavailable(view, reason)
        try:
            state = current_sku_state(service, partition, parsed.sku)
            finished = current_finished(service, partition, parsed.sku, parsed.reservation_id)
        except StateDecodeError as error:
            logger.error("a stored record of %r is unreadable: %s", parsed.sku, error)
            return view.json({"error": f"stored state of {parsed.sku!r} is unreadable"}, status=500)
        repeat = stored_answer(state, finished, parsed, partition)
        if repeat is not None:
            return view.json(repeat, status=status_of(repeat))

        event_id = new_event_id()
        command = reservation_command(parsed, event_id, int(time.time() * 1000))
        value = commands.encode(event_to_record(command)[1])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        future = waiters.expect(event_id, parsed.reservation_id)  # before writing: the decision cannot be missed
        try:
            try:
                sent = await app.producer.send(
                    RESERVATION_COMMANDS.name, parsed.reservation_id.encode(), value, None, None, None
                )
                await asyncio.wait_for(sent, timeout)
            except Exception as error:  # noqa: BLE001 - not known to be written: the client repeats the request
                logger.warning("reservation command %s for %r not acknowledged: %s: %s",
                               event_id, parsed.reservation_id, type(error).__name__, error)
                return unavailable(view, "the command was not acknowledged by the broker; it may or may not be "
                                   "decided later: repeat the same request (a repeat never reserves twice)")
            try:
                decision = await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                return view.json(pending_document(parsed, event_id, timeout), status=504)
        finally:
            waiters.discard(event_id)
        document = decision_document(decision)
        return view.json(document, status=status_of(document))

    def bad_request(view: View, error: Exception) -> Response:
        return view.json({"error": str(error)}, status=400)

    @app.page("/reservations", name="reservations")
    class Reservations(View):
        async def post(self, request: Request) -> Response:
            body = await read_json_body(request, settings.max_request_body_bytes)
            if not isinstance(body, bytes):
                return body  # refused: 415 or 413
            try:
                parsed = parse_reserve_body(body, channels)
                single_valued(request.query.items(), ())
            except InvalidRequest as error:
                return bad_request(self, error)
            return await answer(self, request, parsed, body)

    @app.page("/reservations/{reservation_id}", name="reservation")
    class Reservation(View):
        async def delete(self, request: Request, reservation_id: str) -> Response:
            try:
                parsed = parse_release(reservation_id, request.query.items(), channels)
            except InvalidRequest as error:
                return bad_request(self, error)
            return await answer(self, request, parsed, b"")
