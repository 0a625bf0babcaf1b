"""The HTTP API on a running worker and the embedded broker: synchronous reservations end to end (idempotent
retries, 409s, releases), explanations (also through `availability explain`), a 504 while the pipeline's command
stage is stopped that is decided exactly once later, and schemathesis against the OpenAPI document."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from app.engine import ChannelGranularity, LocationType, event_to_record
from app.http.openapi import openapi_document
from app.wire.topics import POLICY_CHANGES, RESERVATION_DECISIONS, STORE_TRANSACTIONS
from tests.engine.factories import channel, policy, receipt
from tests.service.harness import WORKER_READY, WorkerProcess, poll, read_topic, wait_for_ledger_entries

TOKEN = "integration-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
RULES = (
    channel("ecommerce"),
    channel("store-pickup", priority=1, granularity=ChannelGranularity.LOCATION, location_types=(LocationType.STORE,)),
)




def client_for(settings) -> httpx.Client:
    return httpx.Client(base_url=f"http://{settings.web_host}:{settings.web_port}", headers=BEARER, timeout=30)


def start_with_stock(worker: WorkerProcess, source, bootstrap_servers: str, sku: str = "SKU-A") -> httpx.Client:
    """Worker ready, the policy on every ledger partition, and `sku` holding 5 at S1 and 10 at DC1."""
    settings = worker.settings
    worker.wait_for_log(WORKER_READY, timeout=90)
    web = client_for(settings)
    poll(lambda: web.get("/ready"), lambda r: r.status_code == 200, 60, "/ready 200")
    source.send(POLICY_CHANGES.name, event_to_record(policy(1, stores=("S1",), dcs=("DC1",), channels=RULES))[1])
    source.flush()
    wait_for_ledger_entries(bootstrap_servers, source.codec, settings.partitions, "PolicyChange")
    for location, units in (("S1", 5), ("DC1", 10)):
        source.send(STORE_TRANSACTIONS.name, event_to_record(receipt(units, sku=sku, location=location, time=1000))[1])
    source.flush()
    poll(lambda: web.get(f"/availability/{sku}", params={"channel": "ecommerce"}),
         lambda r: r.status_code == 200 and r.json()["availability"][0]["quantity"] == 15, 60, "15 on ecommerce")
    return web


def decisions_on_topic(bootstrap_servers: str, codec, partitions: int, until: Callable[[list[dict]], bool]):
    def decoded(records) -> list[dict]:
        return [codec.decode(RESERVATION_DECISIONS.name, record.value).value for record in records]

    return decoded(read_topic(bootstrap_servers, RESERVATION_DECISIONS.name, partitions,
                              until=lambda records: until(decoded(records)), timeout=60))


def reserve(web: httpx.Client, reservation_id: str, quantity: int, **fields) -> httpx.Response:
    return web.post("/reservations", json={"reservation_id": reservation_id, "sku": "SKU-A", "channel": "ecommerce",
                                           "quantity": quantity, **fields})


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_reservations_and_explanations_end_to_end(service_settings, workers, topics_for, bootstrap_servers,
                                                  monkeypatch, capsys):
    settings = service_settings(partitions=2, api_token=TOKEN)
    source = topics_for(settings)
    web = start_with_stock(workers(settings), source, bootstrap_servers)

    accepted = reserve(web, "R-1", 12)
    assert accepted.status_code == 201, accepted.text
    first = accepted.json()
    assert (first["outcome"], first["answered_from"]) == ("ACCEPTED", "ledger")
    assert first["lines"] == [{"location": "DC1", "quantity": 10}, {"location": "S1", "quantity": 2}]  # DC first

    retried = reserve(web, "R-1", 1, allow_partial=True)  # a retry, even with another body: the original answer
    assert retried.status_code == 201
    assert retried.json()["answered_from"] == "stored-state"
    assert {k: retried.json()[k] for k in ("outcome", "lines", "requested_quantity", "reserved_quantity")} == {
        k: first[k] for k in ("outcome", "lines", "requested_quantity", "reserved_quantity")}

    refused = reserve(web, "R-2", 4)
    assert refused.status_code == 409 and refused.json()["reason"] == "INSUFFICIENT_STOCK"
    lookup = web.get("/availability/SKU-A", params={"channel": "ecommerce"}).json()
    assert lookup["availability"][0]["quantity"] == 3 and lookup["locations"]["DC1"]["reserved"] == 10

    explanation = web.get("/availability/SKU-A/explain").json()
    assert [(e["reservation_id"], e["kind"], e["result"]) for e in explanation["recent_entries"][:2]] == [
        ("R-2", "RESERVE", "INSUFFICIENT_STOCK"), ("R-1", "RESERVE", "ACCEPTED")]
    assert explanation["recent_entries"][1]["event_id"] == first["event_id"]
    assert explanation["recent_entries"][1]["ledger_offset"] == first["ledger_offset"]
    assert [r["reservation_id"] for r in explanation["reservations"]] == ["R-1"]
    keys = [key for plan in explanation["channels"] for key in plan["keys"]]
    assert keys and all(key["matches_published"] for key in keys)
    assert next(k for k in keys if k["key"] == "SKU-A")["quantity"] == 3

    monkeypatch.setenv("AVAILABILITY_API_TOKEN", TOKEN)
    from app.tools.cli import main

    url = f"http://{settings.web_host}:{settings.web_port}"
    assert main(["explain", "SKU-A", "--channel", "ecommerce", "--url", url]) == 0
    printed = capsys.readouterr().out
    assert "ecommerce SKU-A" in printed and "R-1" in printed and "INSUFFICIENT_STOCK" in printed

    release_path = "/reservations/R-1?sku=SKU-A&channel=ecommerce"
    released = web.delete(release_path)
    assert released.status_code == 200 and released.json()["outcome"] == "RELEASED"
    again = web.delete(release_path)
    assert again.status_code == 200 and again.json()["answered_from"] == "stored-state"
    unknown = web.delete("/reservations/R-404?sku=SKU-A&channel=ecommerce")
    assert unknown.status_code == 409 and unknown.json()["reason"] == "UNKNOWN_RESERVATION"
    assert httpx.get(f"{url}/availability/SKU-A").status_code == 401
    assert httpx.get(f"{url}/health").status_code == 200

    # Exactly one command per decision the API did not answer from state: one ACCEPTED and one RELEASED for R-1.
    published = decisions_on_topic(bootstrap_servers, source.codec, settings.partitions,
                                   lambda ds: {d["reservation_id"] for d in ds} >= {"R-1", "R-2", "R-404"})
    r1 = [(d["outcome"], d["event_id"], d["ledger_offset"]) for d in published if d["reservation_id"] == "R-1"]
    assert r1 == [("ACCEPTED", first["event_id"], first["ledger_offset"]),
                  ("RELEASED", released.json()["event_id"], released.json()["ledger_offset"])]


# The worker entry point with source.reservation-commands left out of its ingest stage: commands are written and
# acknowledged, but nothing decides them while this worker runs alone (its ingest consumer does not subscribe to it).
WORKER_WITHOUT_COMMAND_INGEST = """
import sys
import app.service.ingest_process as ingest_process

all_source_topics = ingest_process.source_topic_names
ingest_process.source_topic_names = lambda: [
    name for name in all_source_topics() if name != "source.reservation-commands"]
from app.service.worker import main
sys.exit(main())
"""


class WorkerWithoutCommandIngest(WorkerProcess):
    def __init__(self, settings) -> None:
        super().__init__(settings, program=WORKER_WITHOUT_COMMAND_INGEST)


@pytest.mark.integration
@pytest.mark.slow  # two worker starts (~30 s); the in-process test_http_api covers the 504 path in the default suite
@pytest.mark.timeout(300)
def test_a_command_not_decided_in_time_is_504_and_decided_once_later(service_settings, workers, topics_for,
                                                                     bootstrap_servers):
    settings = service_settings(partitions=2, api_token=TOKEN, reservation_timeout_seconds=1.5)
    source = topics_for(settings)
    stalled = WorkerWithoutCommandIngest(settings).start()
    try:
        web = start_with_stock(stalled, source, bootstrap_servers)
        started = time.monotonic()
        pending = reserve(web, "R-1", 3)
        assert pending.status_code == 504, pending.text
        assert time.monotonic() - started >= 1.5
        body = pending.json()
        assert body["accepted_for_processing"] is True and body["reservation_id"] == "R-1"
        retried = reserve(web, "R-1", 3)  # still undecided: another 504, and a second command
        assert retried.status_code == 504
        event_ids = {body["event_id"], retried.json()["event_id"]}
        assert len(event_ids) == 2
    finally:
        stalled.stop(grace_seconds=10)

    workers(settings)  # the whole pipeline again, same group and data dir: the commands are read and decided
    web = client_for(settings)
    poll(lambda: web.get("/ready"), lambda r: r.status_code == 200, 90, "/ready 200 after the restart")
    published = decisions_on_topic(bootstrap_servers, source.codec, settings.partitions,
                                   lambda ds: sum(d["reservation_id"] == "R-1" for d in ds) >= 2)
    answers = [d for d in published if d["reservation_id"] == "R-1"]
    assert {d["event_id"] for d in answers} == event_ids  # each command decided once, never both ways
    assert {(d["outcome"], tuple((line["location"], line["quantity"]) for line in d["lines"])) for d in answers} == {
        ("ACCEPTED", (("DC1", 3),))}
    final = reserve(web, "R-1", 3)
    assert final.status_code == 201 and final.json()["answered_from"] == "stored-state"
    assert web.get("/availability/SKU-A").json()["locations"]["DC1"]["reserved"] == 3  # reserved once


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_schemathesis_finds_no_server_error_and_no_schema_violation(service_settings, workers, topics_for,
                                                                    bootstrap_servers):
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    settings = service_settings(partitions=2, api_token=TOKEN, reservation_timeout_seconds=2.0)
    source = topics_for(settings)
    start_with_stock(workers(settings), source, bootstrap_servers)
    base_url = f"http://{settings.web_host}:{settings.web_port}"
    served = httpx.get(f"{base_url}/openapi.json", headers=BEARER).json()
    assert served == openapi_document()
    schema = schemathesis.openapi.from_dict(served)
    seen: dict[tuple[str, int], int] = {}

    def only_documented_server_errors(ctx, response, case) -> None:
        assert response.status_code < 500 or response.status_code in (503, 504), (
            f"{case.method} {case.formatted_path}: server error {response.status_code}: {response.text[:300]}")

    checks = [status_code_conformance, content_type_conformance, response_headers_conformance,
              response_schema_conformance, only_documented_server_errors]

    def steer(case, channel_name: str | None, sku: str | None):
        """Positive cases only know the id pattern: point some at a configured channel and a SKU with stock, so
        that lookups, explanations, reserves and releases also reach the owner and the pipeline."""
        for name, value in (("channel", channel_name), ("sku", sku)):
            if value is None:
                continue
            for container in (case.body, case.query, case.path_parameters):
                if isinstance(container, dict) and name in container:
                    container[name] = value
        return case

    def exercise(mode: GenerationMode, examples: int) -> None:
        cases = schema.as_strategy(generation_mode=mode)
        if mode is GenerationMode.POSITIVE:
            cases = st.builds(steer, cases, st.sampled_from(["ecommerce", "store-pickup", None]),
                              st.sampled_from(["SKU-A", None]))

        @hypothesis_settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                             suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def run(case) -> None:
            response = case.call(base_url=base_url, headers=BEARER, timeout=15)
            key = (case.operation.label, response.status_code)
            seen[key] = seen.get(key, 0) + 1
            case.validate_response(response, checks=checks, headers=BEARER)

        run()

    exercise(GenerationMode.POSITIVE, 35)
    exercise(GenerationMode.NEGATIVE, 20)
    print("schemathesis responses (operation, status) -> count:", sorted(seen.items()))
    operations = {label for label, _ in seen}
    assert len(operations) >= 6, seen  # the generator reached (nearly) every operation
    successes = {label for label, status in seen if status < 300 or status == 409}
    assert {"GET /availability/{sku}", "POST /reservations"} <= successes, seen  # past validation, to the owner
