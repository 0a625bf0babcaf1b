"""The HTTP API beyond lookups: explanations, synchronous reservations, the OpenAPI document and HTTP security.

Pure functions first (no broker, no event loop), then the views in process on aiohttp's test server with a built,
never started service (no broker: the producer and the routing are stubbed where a test says so).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from faust.exceptions import SameNode
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from app.engine import (
    ReservationAction,
    ReservationCommand,
    ReservationDecision,
    ReservationOutcome,
    decode_sku_state,
    encode_partition_state,
    encode_sku_state,
    validate,
)
from app.engine.explain import explain_sku
from app.engine.outputs import ReservationLine
from app.http.openapi import openapi_document, openapi_json
from app.http.reservations import (
    ANSWERED_FROM_STATE,
    InvalidRequest,
    ReleaseRequest,
    ReserveRequest,
    parse_release,
    parse_reserve_body,
    reservation_command,
    stored_answer,
)
from app.http.security import AuthOutcome, check_bearer, is_loopback
from app.http.web import register_web
from app.service.app import build_service
from app.service.decision_waiters import DecisionWaiters
from app.wire.topics import RESERVATION_COMMANDS, ledger_partition
from tables.declarations import partition_state_key
from tests.engine.factories import Ledger, channel, decisions, policy, receipt, release, reserve, sale, tick
from tests.engine.test_properties import SETTINGS, scenarios

CHANNELS = ("ecommerce", "marketplace", "store-pickup")
TOKEN = "s3cret-token-for-tests-0123456789"
UNREACHABLE_BROKER = "127.0.0.1:1"
REPO_ROOT = Path(__file__).resolve().parents[2]


# -- parsing (pure) --------------------------------------------------------------------------------------------


def body(**fields) -> bytes:
    document = {"reservation_id": "R-1", "sku": "SKU-A", "channel": "ecommerce", "quantity": 2}
    document.update(fields)
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


def test_a_reserve_body_is_parsed_with_its_defaults():
    assert parse_reserve_body(body(), CHANNELS) == ReserveRequest("R-1", "SKU-A", "ecommerce", 2)
    full = parse_reserve_body(body(location="S1", allow_partial=True, ttl_seconds=900), CHANNELS)
    assert (full.location, full.allow_partial, full.ttl_seconds) == ("S1", True, 900)
    assert parse_reserve_body(body(location=None, ttl_seconds=None), CHANNELS).location is None


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        (b"not json", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe", "JSON object"),
        (body(colour="red"), "unknown field"),
        (body(quantity=...), "missing field"),
        (body(quantity=0), "quantity"),
        (body(quantity=True), "quantity"),
        (body(quantity=2.0), "quantity"),
        (body(quantity="2"), "quantity"),
        (body(quantity=1_000_000_001), "quantity"),
        (body(sku="-SKU"), "sku"),
        (body(sku="S" * 65), "sku"),
        (body(sku="SKU\n"), "sku"),
        (body(reservation_id="R/1"), "reservation_id"),
        (body(channel="wholesale"), "channel"),
        (body(channel=["ecommerce"]), "channel"),
        (body(location=""), "location"),
        (body(allow_partial="yes"), "allow_partial"),
        (body(ttl_seconds=0), "ttl_seconds"),
        (body(ttl_seconds=False), "ttl_seconds"),
    ],
)
def test_malformed_reserve_bodies_are_refused_with_a_reason(raw, complaint):
    with pytest.raises(InvalidRequest, match=complaint):
        parse_reserve_body(raw, CHANNELS)


def test_a_release_needs_sku_and_channel_once_each():
    assert parse_release("R-1", [("sku", "SKU-A"), ("channel", "ecommerce")], CHANNELS) == ReleaseRequest(
        "R-1", "SKU-A", "ecommerce")
    for pairs, complaint in [
        ([("sku", "SKU-A")], "missing"),
        ([("sku", "SKU-A"), ("channel", "ecommerce"), ("sku", "SKU-B")], "more than once"),
        ([("sku", "SKU-A"), ("channel", "ecommerce"), ("force", "1")], "unknown query parameter"),
        ([("sku", "SKU A"), ("channel", "ecommerce")], "sku"),
    ]:
        with pytest.raises(InvalidRequest, match=complaint):
            parse_release("R-1", pairs, CHANNELS)
    with pytest.raises(InvalidRequest, match="reservation_id"):
        parse_release("R 1", [("sku", "SKU-A"), ("channel", "ecommerce")], CHANNELS)


def test_commands_are_what_order_management_would_write():
    reserve_command = reservation_command(
        ReserveRequest("R-1", "SKU-A", "ecommerce", 2, "S1", True, 60), "http-abc", now_ms=1_000)
    assert validate(reserve_command) is None
    assert (reserve_command.command, reserve_command.expires_at, reserve_command.event_time) == (
        ReservationAction.RESERVE, 61_000, 1_000)
    release_command = reservation_command(ReleaseRequest("R-1", "SKU-A", "ecommerce"), "http-def", now_ms=5)
    assert validate(release_command) is None
    assert (release_command.command, release_command.quantity) == (ReservationAction.RELEASE, 0)


# -- the stored answer is the engine's answer (pure) ------------------------------------------------------------


def request_for(command: ReservationCommand) -> ReserveRequest | ReleaseRequest:
    if command.command is ReservationAction.RESERVE:
        return ReserveRequest(command.reservation_id, command.sku, command.channel, command.quantity,
                              command.location, command.allow_partial)
    return ReleaseRequest(command.reservation_id, command.sku, command.channel)


def same_answer(stored: dict, decision: ReservationDecision) -> bool:
    record = decision.to_record()
    fields = ("reservation_id", "sku", "channel", "outcome", "reason", "requested_quantity", "reserved_quantity",
              "lines")
    return all(stored[name] == record[name] for name in fields)


def repeat_heavy_events(ops) -> list:
    """Reserves and releases over three reservation ids and two channels, with stock moving and clocks ticking, so
    most commands repeat an id the SKU has seen (active, released, expired or refused)."""
    events: list = [policy(channels=(channel("ecommerce"), channel("marketplace", 1, share_bp=5_000))),
                    receipt(30, location="DC1", event_id="opening")]
    time = 10
    for index, (kind, rid, channel_name, quantity, flag) in enumerate(ops):
        time += 5
        if kind == "receipt":
            events.append(receipt(quantity, location="DC1" if flag else "S1", time=time, event_id=f"m{index}"))
        elif kind == "sale":
            events.append(sale(quantity, location="S1", time=time, event_id=f"m{index}"))
        elif kind == "tick":
            events.append(tick(time + 40))
        elif kind == "reserve":
            events.append(reserve(rid, quantity, channel_name=channel_name, allow_partial=flag, time=time,
                                  expires_at=time + 30 if quantity % 2 else None, event_id=f"c{index}"))
        else:
            events.append(release(rid, channel_name=channel_name, time=time, event_id=f"c{index}"))
    return events


repeat_heavy = st.lists(
    st.tuples(st.sampled_from(["receipt", "sale", "tick", "reserve", "reserve", "release", "release"]),
              st.sampled_from(["r0", "r1", "r2"]), st.sampled_from(["ecommerce", "ecommerce", "marketplace"]),
              st.integers(1, 8), st.booleans()),
    min_size=1, max_size=40,
).map(repeat_heavy_events)


@SETTINGS
@given(st.one_of(scenarios, repeat_heavy))
def test_an_answer_from_stored_state_is_the_one_the_engine_gives_to_the_repeat(events):
    ledger = Ledger()
    for event in events:
        before = None
        if isinstance(event, ReservationCommand) and event.command is not ReservationAction.FULFIL:
            state = ledger.store.get_sku_state(event.sku)
            before = None if state is None else decode_sku_state(encode_sku_state(state))
        finished = None if before is None else ledger.store.get_finished(event.sku, event.reservation_id)
        out = ledger.apply(event)
        if before is None:
            continue
        answer = stored_answer(before, finished, request_for(event), 0)
        if answer is None:
            continue
        [decision] = [d for d in decisions(out)
                      if d.reservation_id == event.reservation_id and d.outcome is not ReservationOutcome.EXPIRED]
        assert same_answer(answer, decision), (answer, decision)
        assert answer["answered_from"] == ANSWERED_FROM_STATE


answer_from = stored_answer


def test_stored_answers_of_the_worked_cases():
    ledger = Ledger()
    ledger.feed(policy(), receipt(5, location="DC1"), reserve("r1", 3, event_id="c1"), reserve("big", 50))
    state = ledger.sku()

    def stored_answer(state, request, partition):
        return answer_from(state, ledger.store.get_finished("SKU1", request.reservation_id), request, partition)

    accepted = stored_answer(state, ReserveRequest("r1", "SKU1", "ecommerce", 99), 2)
    assert (accepted["outcome"], accepted["lines"], accepted["requested_quantity"]) == (
        "ACCEPTED", [{"location": "DC1", "quantity": 3}], 3)
    assert accepted["ledger_partition"] == 2 and accepted["ledger_offset"] is None
    refused = stored_answer(state, ReserveRequest("big", "SKU1", "ecommerce", 50), 2)
    assert (refused["outcome"], refused["reason"]) == ("REJECTED", "INSUFFICIENT_STOCK")
    assert stored_answer(state, ReserveRequest("new", "SKU1", "ecommerce", 1), 2) is None
    assert stored_answer(state, ReleaseRequest("r1", "SKU1", "ecommerce"), 2) is None  # active: the stream decides
    ledger.feed(release("r1"))
    assert stored_answer(ledger.sku(), ReleaseRequest("r1", "SKU1", "ecommerce"), 2)["outcome"] == "RELEASED"
    assert stored_answer(ledger.sku(), ReleaseRequest("r1", "SKU1", "marketplace"), 2) is None


# -- waiters (pure asyncio) -------------------------------------------------------------------------------------


def a_decision(event_id: str, reservation_id: str, outcome=ReservationOutcome.ACCEPTED) -> ReservationDecision:
    return ReservationDecision(reservation_id, "ecommerce", "SKU-A", outcome, None, 1, 1, (ReservationLine("S1", 1),),
                               event_id, 0, 7, 1)


def test_waiters_take_only_their_own_commands_decision():
    async def scenario():
        waiters = DecisionWaiters()
        future = waiters.expect("http-1", "R-1")
        assert waiters.resolve([a_decision("http-1", "R-9"), a_decision("http-1", "R-1", ReservationOutcome.EXPIRED),
                                a_decision("http-2", "R-1")]) == 0
        assert not future.done()
        mine = a_decision("http-1", "R-1")
        assert waiters.resolve([mine]) == 1
        assert await future is mine and len(waiters) == 0
        waiters.expect("http-3", "R-3")
        waiters.discard("http-3")
        assert not waiters

    asyncio.run(scenario())


# -- bearer tokens (pure) ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "path", "outcome"),
    [
        (None, "/availability/A", AuthOutcome.MISSING),
        ("", "/metrics", AuthOutcome.MISSING),
        ("Basic dXNlcjpwdw==", "/metrics", AuthOutcome.MISSING),
        ("Bearer", "/metrics", AuthOutcome.MISSING),
        (f"Bearer {TOKEN}x", "/metrics", AuthOutcome.FORBIDDEN),
        (f"Bearer {TOKEN[:-1]}", "/metrics", AuthOutcome.FORBIDDEN),
        ("Bearer \udcff", "/metrics", AuthOutcome.FORBIDDEN),
        (f"Bearer {TOKEN}", "/metrics", AuthOutcome.ALLOWED),
        (f"bearer  {TOKEN} ", "/metrics", AuthOutcome.ALLOWED),
        (None, "/health", AuthOutcome.ALLOWED),
        (None, "/ready", AuthOutcome.ALLOWED),
        (None, "/health/", AuthOutcome.MISSING),
    ],
)
def test_bearer_tokens(header, path, outcome):
    assert check_bearer(header, TOKEN, path) is outcome
    assert check_bearer(header, None, path) is AuthOutcome.ALLOWED  # no token configured: open


def test_loopback_addresses():
    assert all(is_loopback(host) for host in ("127.0.0.1", "::1", "localhost", "127.1.2.3"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "10.0.0.5", "::", "example.com"))


# -- the OpenAPI document ---------------------------------------------------------------------------------------


def test_the_committed_openapi_document_is_the_served_one():
    committed = (REPO_ROOT / "docs" / "openapi.json").read_text()
    assert committed == openapi_json(), "regenerate it: python -m app.http.openapi > docs/openapi.json"
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    operations = {(path, method) for path, item in document["paths"].items() for method in item}
    assert operations == {
        ("/availability/{sku}", "get"), ("/availability/{sku}/explain", "get"), ("/reservations", "post"),
        ("/reservations/{reservation_id}", "delete"), ("/health", "get"), ("/ready", "get"), ("/metrics", "get"),
        ("/openapi.json", "get"), ("/policy/preview", "post"),
    }
    assert document["paths"]["/health"]["get"]["security"] == [] == document["paths"]["/ready"]["get"]["security"]


# -- the views in process ---------------------------------------------------------------------------------------


class ApiWorker:
    """A built, never started service with its views on aiohttp's test server; it owns every partition."""

    def __init__(self, settings) -> None:
        self.settings = settings
        self.service = build_service(settings, UNREACHABLE_BROKER)
        register_web(self.service)
        app = self.service.app
        app.rebalancing = False

        async def owned_here(*args, **kwargs):
            raise SameNode()

        app.router.route_req = owned_here
        app.router.key_store = lambda table, key: app.conf.canonical_url
        self.sku_table = self.service.tables.sku_state
        self.partition_table = self.service.tables.partition_state
        changelog = self.sku_table.changelog_topic.get_topic_name()
        for partition in range(settings.partitions):
            app.tables.recovery.add_active(self.sku_table, TP(changelog, partition))
        app.tables.recovery.completed.set()
        self.sent: list[tuple] = []
        self.loop = asyncio.new_event_loop()

    def store(self, ledger: Ledger, sku: str) -> None:
        partition = ledger.engine.partition
        self.sku_table.data._db_for_partition(partition)[sku.encode()] = encode_sku_state(ledger.sku(sku))
        self.partition_table.data._db_for_partition(partition)[partition_state_key(partition)] = (
            encode_partition_state(ledger.engine.state))

    def stub_producer(self, on_send=None, fail: bool = False) -> None:
        """Replace the producer's send: record the command, then call `on_send(command_value)` (the pipeline)."""
        producer = self.service.app.producer

        async def send(topic, key, value, partition, timestamp, headers):
            if fail:
                raise ConnectionError("broker unreachable")
            self.sent.append((topic, key, value))
            if on_send is not None:
                asyncio.get_running_loop().call_later(0.05, on_send, value)
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        producer.send = send

    def call(self, method: str, path: str, **kwargs) -> tuple[int, dict | str, dict]:
        async def fetch():
            async with TestClient(TestServer(self.service.app.web.web_app)) as client:
                response = await client.request(method, path, **kwargs)
                text = await response.text()
                content = json.loads(text) if response.content_type == "application/json" else text
                return response.status, content, dict(response.headers)

        return self.loop.run_until_complete(fetch())

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def api(settings_factory) -> Iterator[ApiWorker]:
    worker = ApiWorker(settings_factory(partitions=4, reservation_timeout_seconds=0.5))
    yield worker
    worker.close()


@pytest.fixture
def secured(settings_factory) -> Iterator[ApiWorker]:
    worker = ApiWorker(settings_factory(partitions=4, api_token=TOKEN, max_request_body_bytes=1024))
    yield worker
    worker.close()


def ledger_for(sku: str) -> Ledger:
    ledger = Ledger(partition=ledger_partition(sku, 4))
    ledger.feed(policy(), receipt(7, sku=sku, location="S1"), receipt(20, sku=sku, location="DC1"),
                reserve("r1", 4, sku=sku, event_id="c-r1"))
    return ledger


def test_explain_answers_from_the_tables(api):
    ledger = ledger_for("SKU-A")
    api.store(ledger, "SKU-A")
    status, document, _ = api.call("GET", "/availability/SKU-A/explain")
    assert status == 200
    expected = explain_sku(ledger.sku("SKU-A"), ledger.engine.state)
    assert document == json.loads(json.dumps(expected))
    assert document["recent_entries"][0]["event_id"] == "c-r1"
    assert all(key["matches_published"] for plan in document["channels"] for key in plan["keys"])

    status, filtered, _ = api.call("GET", "/availability/SKU-A/explain?channel=ecommerce&location=S1")
    assert status == 200 and [row["location"] for row in filtered["locations"]] == ["S1"]
    answers = [api.call("GET", path)[0] for path in (
        "/availability/SKU-NONE/explain", "/availability/SKU-A/explain?location=S9",
        "/availability/-A/explain", "/availability/SKU-A/explain?channel=wholesale",
        "/availability/SKU-A/explain?channel=ecommerce&channel=marketplace", "/availability/SKU-A/explain?x=1")]
    assert answers == [404, 404, 400, 400, 400, 400]


def test_a_repeated_reserve_is_answered_from_the_stored_state_without_a_new_command(api):
    ledger = ledger_for("SKU-A")
    api.store(ledger, "SKU-A")
    api.stub_producer(fail=True)  # proves nothing is written: a send would be a 503
    status, document, _ = api.call("POST", "/reservations", json={
        "reservation_id": "r1", "sku": "SKU-A", "channel": "ecommerce", "quantity": 4})
    assert status == 201 and api.sent == []
    assert (document["outcome"], document["answered_from"], document["reserved_quantity"]) == (
        "ACCEPTED", "stored-state", 4)


def test_a_reserve_waits_for_the_decision_of_its_own_command(api):
    ledger = ledger_for("SKU-A")
    api.store(ledger, "SKU-A")
    codec = api.service.codec

    def pipeline(value: bytes) -> None:  # stands in for ingest + availability stage: decide and resolve
        record = codec.decode(RESERVATION_COMMANDS.name, value).value
        from app.engine import event_from_record

        command = event_from_record("ReservationCommand", record)
        out = ledger.apply(command)
        api.service.decision_waiters.resolve(decisions(out))

    api.stub_producer(on_send=pipeline)
    status, document, _ = api.call("POST", "/reservations", json={
        "reservation_id": "r2", "sku": "SKU-A", "channel": "ecommerce", "quantity": 3, "ttl_seconds": 60})
    assert status == 201, document
    [(topic, key, _)] = api.sent
    assert (topic, key) == (RESERVATION_COMMANDS.name, b"r2")
    assert document["answered_from"] == "ledger" and document["event_id"].startswith("http-")
    assert document["ledger_offset"] == ledger.offset and document["lines"] == [{"location": "DC1", "quantity": 3}]

    status, refused, _ = api.call("POST", "/reservations", json={
        "reservation_id": "r3", "sku": "SKU-A", "channel": "ecommerce", "quantity": 500})
    assert status == 409 and refused["reason"] == "INSUFFICIENT_STOCK"
    status, released, _ = api.call("DELETE", "/reservations/r2?sku=SKU-A&channel=ecommerce")
    assert status == 200 and released["outcome"] == "RELEASED"
    assert len(api.service.decision_waiters) == 0


def test_no_decision_in_time_is_504_and_says_the_command_will_still_be_decided(api):
    api.stub_producer()  # written, but no pipeline decides it
    status, document, _ = api.call("POST", "/reservations", json={
        "reservation_id": "r9", "sku": "SKU-B", "channel": "ecommerce", "quantity": 1})
    assert status == 504
    assert document["accepted_for_processing"] is True and document["event_id"].startswith("http-")
    assert "decided exactly once" in document["detail"]
    assert len(api.sent) == 1 and len(api.service.decision_waiters) == 0


def test_a_command_the_broker_did_not_acknowledge_is_503(api):
    api.stub_producer(fail=True)
    status, document, headers = api.call("POST", "/reservations", json={
        "reservation_id": "r9", "sku": "SKU-B", "channel": "ecommerce", "quantity": 1})
    assert status == 503 and "Retry-After" in headers and "repeat" in document["error"]


def test_reservation_requests_are_validated(api):
    api.stub_producer(fail=True)
    assert api.call("POST", "/reservations", data=b'{"sku": 1}', headers={"Content-Type": "application/json"}
                    )[0] == 400
    assert api.call("POST", "/reservations", data=b"x", headers={"Content-Type": "text/plain"})[0] == 415
    assert api.call("POST", "/reservations?debug=1", json={
        "reservation_id": "r1", "sku": "SKU-A", "channel": "ecommerce", "quantity": 1})[0] == 400
    assert api.call("DELETE", "/reservations/r1?sku=SKU-A")[0] == 400
    assert api.sent == []


def test_the_token_guards_everything_but_the_probes(secured, caplog):
    caplog.set_level(logging.DEBUG)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    status, _, headers = secured.call("GET", "/availability/SKU-A")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert secured.call("GET", "/metrics", headers={"Authorization": "Bearer wrong-token-wrong-token"})[0] == 403
    assert secured.call("POST", "/reservations", json={})[0] == 401
    assert secured.call("GET", "/openapi.json")[0] == 401
    assert secured.call("GET", "/health")[0] == 200
    assert secured.call("GET", "/ready")[0] == 200
    assert secured.call("GET", "/availability/SKU-A", headers=bearer)[0] == 404  # authenticated: unknown SKU
    status, document, _ = secured.call("GET", "/openapi.json", headers=bearer)
    assert status == 200 and document == json.loads(json.dumps(openapi_document()))
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


def test_request_bodies_are_bounded(secured):
    bearer = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    big = b'{"pad": "' + b"x" * 2000 + b'"}'
    assert secured.call("POST", "/reservations", data=big, headers=bearer)[0] == 413

    async def chunks():  # no Content-Length: the view stops reading at the limit
        for _ in range(10):
            yield b" " * 300

    status, document, _ = secured.call("POST", "/reservations", data=chunks(), headers=bearer)
    assert status == 413 and "larger than 1024" in document["error"]


def test_faust_table_pages_are_not_served(api):
    api.store(ledger_for("SKU-A"), "SKU-A")
    assert api.call("GET", "/table/sku-state/SKU-A")[:2] == (404, {"error": "Not Found"})
    assert api.call("GET", "/table/")[0] == 404
    status, document, headers = api.call("PUT", "/reservations")
    assert (status, document) == (405, {"error": "Method Not Allowed"}) and "POST" in headers["Allow"]


def test_the_api_binds_to_loopback_unless_told_otherwise(settings_factory, caplog):
    service = build_service(settings_factory(), UNREACHABLE_BROKER)
    assert (service.settings.web_host, service.app.conf.web_bind) == ("127.0.0.1", "127.0.0.1")
    caplog.set_level(logging.WARNING, logger="app.http.web")
    register_web(build_service(settings_factory(web_host="0.0.0.0"), UNREACHABLE_BROKER))
    assert "without AVAILABILITY_API_TOKEN" in caplog.text
    caplog.clear()
    register_web(build_service(settings_factory(web_host="0.0.0.0", api_token=TOKEN), UNREACHABLE_BROKER))
    assert "without AVAILABILITY_API_TOKEN" not in caplog.text


def test_a_reservation_sent_to_another_worker_is_forwarded_with_its_body_to_the_owner(settings_factory):
    """Two in-process workers: the first owns nothing and forwards; the second owns the SKU and decides."""
    from yarl import URL

    asker = ApiWorker(settings_factory(partitions=4, api_token=TOKEN))
    owner = ApiWorker(settings_factory(partitions=4, api_token=TOKEN))
    ledger = ledger_for("SKU-A")
    owner.store(ledger, "SKU-A")
    bearer = {"Authorization": f"Bearer {TOKEN}"}

    async def scenario():
        owner_server = TestServer(owner.service.app.web.web_app)
        async with owner_server, TestClient(TestServer(asker.service.app.web.web_app)) as client:
            owner_url = URL(f"http://127.0.0.1:{owner_server.port}")
            asker.service.app.router.key_store = lambda table, key: owner_url
            repeat = await client.post("/reservations", headers=bearer, json={
                "reservation_id": "r1", "sku": "SKU-A", "channel": "ecommerce", "quantity": 4})
            repeat_body = await repeat.json()
            refused = await client.post("/reservations", headers=bearer, json={
                "reservation_id": "r1", "sku": "SKU-A", "channel": "wholesale", "quantity": 4})
            looped = await client.post("/reservations", headers={**bearer, "X-Availability-Forwarded": "1"}, json={
                "reservation_id": "r1", "sku": "SKU-A", "channel": "ecommerce", "quantity": 4})
            unauthenticated = await client.post("/reservations", json={
                "reservation_id": "r1", "sku": "SKU-A", "channel": "ecommerce", "quantity": 4})
            await asker.service.app.http_client.close()
            return (repeat.status, repeat_body, refused.status, looped.status, unauthenticated.status)

    try:
        owner.stub_producer(fail=True)
        asker.stub_producer(fail=True)
        status, document, refused, looped, unauthenticated = asyncio.run(scenario())
    finally:
        asker.close()
        owner.close()
    assert status == 201 and document["answered_from"] == "stored-state"  # the owner's state answered it
    assert document["ledger_partition"] == ledger_partition("SKU-A", 4)
    assert refused == 400  # validated before forwarding
    assert looped == 503  # never forwarded twice: ownership is changing
    assert unauthenticated == 401  # checked on the first worker already
