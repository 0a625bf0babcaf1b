"""The lookup API: pure validation and JSON, the views in process (no broker), and one worker on the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from aiohttp import ClientConnectionError
from aiohttp.test_utils import TestClient, TestServer
from faust.exceptions import SameNode
from faust.types import TP
from prometheus_client.parser import text_string_to_metric_families

from app.engine import ChannelGranularity, SkuState, encode_sku_state, event_to_record
from app.engine.positions import ledger_position
from app.engine.state import Position, Published
from app.http.web import InvalidLookup, LookupQuery, availability_document, parse_lookup, register_web
from app.service.app import build_service
from app.service.metrics import ServiceMetrics
from app.service.readiness import readiness_of
from app.wire.topics import POLICY_CHANGES, STORE_TRANSACTIONS, availability_topic, ledger_partition
from tests.engine.factories import Ledger, availability, channel, policy, receipt, sale
from tests.service.harness import WORKER_READY, WorkerProcess, poll, read_topic, wait_for_ledger_entries

CHANNELS = ("ecommerce", "marketplace", "store-pickup")
UNREACHABLE_BROKER = "127.0.0.1:1"  # build_service connects nothing; the address only has to parse


# -- validation and JSON (pure) -------------------------------------------------------------------------------


def test_parse_lookup_accepts_identifiers_and_configured_channels():
    assert parse_lookup("SKU-1.a_b", {}, CHANNELS) == LookupQuery("SKU-1.a_b")
    assert parse_lookup("SKU1", {"channel": "store-pickup", "location": "S1"}, CHANNELS) == LookupQuery(
        "SKU1", "store-pickup", "S1"
    )


@pytest.mark.parametrize(
    ("sku", "parameters", "complaint"),
    [
        ("-SKU", {}, "sku"),
        ("SKU 1", {}, "sku"),
        ("S" * 65, {}, "sku"),
        ("SKU1", {"channel": "wholesale"}, "unknown channel"),
        ("SKU1", {"channel": ""}, "unknown channel"),
        ("SKU1", {"location": "S/1"}, "location"),
        ("SKU1", {"location": ""}, "location"),
        ("SKU1", {"chanel": "ecommerce"}, "unknown query parameter"),
    ],
)
def test_parse_lookup_rejects_malformed_input(sku, parameters, complaint):
    with pytest.raises(InvalidLookup, match=complaint):
        parse_lookup(sku, parameters, CHANNELS)


def engine_state_after_receipts() -> tuple[SkuState, list]:
    """SKU1 after a policy with three channels (one per location), receipts at two stores and a sale."""
    rules = (channel("ecommerce"), channel("marketplace", priority=1, share_bp=5_000),
             channel("store-pickup", priority=2, granularity=ChannelGranularity.LOCATION))
    ledger = Ledger()
    ledger.feed(policy(1, stores=("S1", "S2"), dcs=(), channels=rules),
                receipt(10, location="S1", time=1), receipt(4, location="S2", time=2), sale(3, location="S1", time=3))
    return ledger.sku("SKU1"), availability(ledger.outputs)


def test_document_shows_the_last_published_record_of_every_key():
    state, published = engine_state_after_receipts()
    last = {(record.channel, record.location): record for record in published}

    document = availability_document(state, LookupQuery("SKU1"), CHANNELS, partition=3)

    assert document["sku"] == "SKU1" and document["ledger_partition"] == 3
    assert [(r["channel"], r["location"]) for r in document["availability"]] == [
        ("ecommerce", None), ("marketplace", None), ("store-pickup", "S1"), ("store-pickup", "S2")
    ]
    for row in document["availability"]:
        record = last[(row["channel"], row["location"])]
        assert (row["quantity"], row["status"], row["version"]) == (record.quantity, record.status.value,
                                                                    record.version)
        assert row["key"] == record.key
    assert document["locations"]["S1"]["sellable"] == 7


def test_document_filters_by_channel_and_location():
    state, _ = engine_state_after_receipts()
    by_channel = availability_document(state, LookupQuery("SKU1", channel="marketplace"), CHANNELS, 0)
    assert [r["channel"] for r in by_channel["availability"]] == ["marketplace"]
    at_s2 = availability_document(state, LookupQuery("SKU1", location="S2"), CHANNELS, 0)
    assert [(r["channel"], r["location"]) for r in at_s2["availability"]] == [("store-pickup", "S2")]
    assert list(at_s2["locations"]) == ["S2"]
    assert availability_document(state, LookupQuery("SKU1", location="S9"), CHANNELS, 0) is None


@pytest.mark.parametrize(
    ("state", "ready", "reason"),
    [
        (dict(active_partitions=[1, 0], recovery_completed=True, in_recovery=False, rebalancing=False), True, "ready"),
        (dict(active_partitions=[0], recovery_completed=True, in_recovery=False, rebalancing=True), False,
         "rebalancing"),
        (dict(active_partitions=[0], recovery_completed=True, in_recovery=True, rebalancing=False), False,
         "recovering"),
        (dict(active_partitions=[0], recovery_completed=False, in_recovery=False, rebalancing=False), False,
         "recovering"),
        (dict(active_partitions=[], recovery_completed=True, in_recovery=False, rebalancing=False), False,
         "no partitions"),
    ],
)
def test_readiness(state, ready, reason):
    readiness = readiness_of(**state)
    assert readiness.ready is ready and reason in readiness.reason


# -- the views in process: this worker owns every key, no broker ------------------------------------------------


class InProcessWorker:
    """A built (never started) service whose views are served by aiohttp's test server. The test decides which
    table partitions are assigned and whether recovery is done; routing always answers "this node"."""

    def __init__(self, settings) -> None:
        self.metrics = ServiceMetrics()
        self.service = build_service(settings, UNREACHABLE_BROKER, observer=self.metrics)
        register_web(self.service)
        register_web(self.service)  # idempotent: the worker and a tool may both call it
        self.table = self.service.tables.sku_state
        self.recovery = self.service.app.tables.recovery
        self.service.app.rebalancing = False

        async def owned_here(*args, **kwargs):
            raise SameNode()

        self.service.app.router.route_req = owned_here
        self.loop = asyncio.new_event_loop()  # aiohttp binds the web app to the first loop that serves it

    def store(self, state: SkuState) -> None:
        # Straight into the partition's RocksDB: a table write needs a current event and a producer.
        partition = ledger_partition(state.sku, self.service.settings.partitions)
        self.table.data._db_for_partition(partition)[state.sku.encode()] = encode_sku_state(state)

    def assign(self, *partitions: int, recovered: bool = True) -> None:
        changelog = self.table.changelog_topic.get_topic_name()
        for partition in partitions:
            self.recovery.add_active(self.table, TP(changelog, partition))
        if recovered:
            self.recovery.completed.set()

    def get(self, *paths: str) -> list[tuple[int, dict | str, dict]]:
        async def fetch():
            answers = []
            async with TestClient(TestServer(self.service.app.web.web_app)) as client:
                for path in paths:
                    response = await client.get(path)
                    body = await (response.json() if response.content_type == "application/json" else response.text())
                    answers.append((response.status, body, dict(response.headers)))
            return answers

        return self.loop.run_until_complete(fetch())

    def close(self) -> None:
        self.loop.close()


@pytest.fixture
def in_process(settings_factory) -> Iterator[InProcessWorker]:
    worker = InProcessWorker(settings_factory(partitions=4))
    yield worker
    worker.close()


def sku_state(sku: str = "SKU-A") -> SkuState:
    state = SkuState(sku)
    state.last_position = ledger_position(12, 3)
    state.positions["S1"] = Position(sellable=7, reserved=2)
    state.published[("ecommerce", None)] = Published(2, 5, "IN_STOCK")
    state.published[("store-pickup", "S1")] = Published(1, 5, "LOW_STOCK")
    return state


def test_lookup_answers_from_the_table(in_process):
    in_process.store(sku_state())
    in_process.assign(*range(4))
    (status, body, _), (filtered_status, filtered, _) = in_process.get(
        "/availability/SKU-A", "/availability/SKU-A?channel=store-pickup&location=S1"
    )
    assert status == 200
    assert body["availability"] == [
        {"channel": "ecommerce", "location": None, "key": "SKU-A", "quantity": 5, "status": "IN_STOCK", "version": 2},
        {"channel": "store-pickup", "location": "S1", "key": "SKU-A/S1", "quantity": 5, "status": "LOW_STOCK",
         "version": 1},
    ]
    assert body["locations"] == {"S1": {"sellable": 7, "reserved": 2, "in_transit": 0, "damaged": 0, "quarantine": 0}}
    assert (body["last_ledger_offset"], body["last_ledger_index"]) == (12, 3)
    assert filtered_status == 200 and [r["key"] for r in filtered["availability"]] == ["SKU-A/S1"]


def test_unknown_keys_are_404_and_malformed_input_is_400(in_process):
    in_process.store(sku_state())
    in_process.assign(*range(4))
    answers = in_process.get(
        "/availability/SKU-UNKNOWN", "/availability/SKU-A?location=S9",
        "/availability/-SKU", "/availability/SKU-A?channel=wholesale", "/availability/SKU-A?colour=red",
    )
    assert [status for status, _, _ in answers] == [404, 404, 400, 400, 400]
    assert all("error" in body for _, body, _ in answers)


def test_a_partition_still_recovering_is_503_not_an_empty_answer(in_process):
    in_process.store(sku_state())
    in_process.assign(*range(4), recovered=False)
    (status, body, headers), (ready_status, ready, _) = in_process.get("/availability/SKU-A", "/ready")
    assert status == 503 and "recovering" in body["error"] and headers["Retry-After"]
    assert ready_status == 503 and ready["ready"] is False


def test_a_partition_owned_elsewhere_during_reassignment_is_503(in_process):
    owner = ledger_partition("SKU-A", 4)
    in_process.store(sku_state())
    in_process.assign(*(p for p in range(4) if p != owner))
    [(status, body, _)] = in_process.get("/availability/SKU-A")
    assert status == 503 and "not assigned" in body["error"]


def test_an_owner_that_cannot_be_reached_is_503(in_process):
    async def unreachable(*args, **kwargs):
        raise ClientConnectionError("connection refused")

    in_process.service.app.router.route_req = unreachable
    in_process.assign(*range(4))
    [(status, _, headers)] = in_process.get("/availability/SKU-A")
    assert status == 503 and "Retry-After" in headers


def test_health_ready_and_metrics(in_process):
    [(health, _, _), (not_ready, _, _)] = in_process.get("/health", "/ready")
    assert (health, not_ready) == (200, 503)  # alive, but nothing assigned yet
    in_process.assign(0, 2)
    in_process.metrics.published("availability.ecommerce")
    [(ready_status, ready, _), (metrics_status, exposition, headers)] = in_process.get("/ready", "/metrics")
    assert ready_status == 200 and ready == {"ready": True, "reason": "ready", "active_partitions": [0, 2]}
    assert metrics_status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'availability_publications_total{channel="ecommerce"} 1.0' in exposition
    assert "availability_ready 1.0" in exposition


# -- one worker on the broker ---------------------------------------------------------------------------------

# Runs the worker entry point with the metrics observer and the web views attached, whether or not the entry point
# attaches them itself (setdefault, and register_web is idempotent).
WORKER_WITH_WEB = """
import sys
import app.service.app as service_app
from app.service.metrics import ServiceMetrics
from app.http.web import register_web

build_service = service_app.build_service

def build_service_with_web(settings, bootstrap_servers=None, **options):
    options.setdefault("observer", ServiceMetrics())
    service = build_service(settings, bootstrap_servers, **options)
    register_web(service)
    return service

service_app.build_service = build_service_with_web
from app.service.worker import main
sys.exit(main())
"""


class WorkerWithWeb(WorkerProcess):
    def __init__(self, settings) -> None:
        super().__init__(settings, program=WORKER_WITH_WEB)


@pytest.fixture
def worker_with_web(service_settings) -> Iterator[WorkerWithWeb]:
    worker = WorkerWithWeb(service_settings(partitions=2)).start()
    try:
        yield worker
    finally:
        worker.stop(grace_seconds=10)  # SIGTERM to this PID, SIGKILL after the grace period




def last_published(bootstrap_servers: str, codec, settings, channel_name: str, until) -> dict:
    topic = availability_topic(channel_name).name
    records = read_topic(bootstrap_servers, topic, settings.partitions,
                         until=lambda rs: until([codec.decode(topic, r.value).value for r in rs]), timeout=60)
    last = {}
    for record in records:
        value = codec.decode(topic, record.value).value
        last[(channel_name, value["location"])] = (value["quantity"], value["status"], value["version"])
    return last


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_worker_serves_lookups_and_metrics(worker_with_web, topics_for, bootstrap_servers):
    worker = worker_with_web
    settings = worker.settings
    source = topics_for(settings)
    worker.wait_for_log(WORKER_READY, timeout=90)
    web = httpx.Client(base_url=f"http://{settings.web_host}:{settings.web_port}", timeout=5)
    poll(lambda: web.get("/ready"), lambda r: r.status_code == 200, 30, "/ready 200")
    assert web.get("/health").status_code == 200

    rules = (channel("ecommerce"), channel("marketplace", priority=1, share_bp=5_000),
             channel("store-pickup", priority=2, granularity=ChannelGranularity.LOCATION))
    source.send(POLICY_CHANGES.name, event_to_record(policy(1, stores=("S1",), dcs=(), channels=rules))[1])
    source.flush()
    wait_for_ledger_entries(bootstrap_servers, source.codec, settings.partitions, "PolicyChange")
    source.send(STORE_TRANSACTIONS.name, event_to_record(receipt(10, sku="SKU-A", event_id="r1", time=1000))[1])
    source.send(STORE_TRANSACTIONS.name, event_to_record(sale(3, sku="SKU-A", event_id="s1", time=2000))[1])
    source.send_raw(STORE_TRANSACTIONS.name, b"not avro")
    source.flush()

    on_topics: dict = {}
    for channel_name in CHANNELS:
        on_topics |= last_published(bootstrap_servers, source.codec, settings, channel_name,
                                    until=lambda values: any(v["event_id"] == "s1" for v in values))

    def lookup_numbers(response) -> dict:
        return {(r["channel"], r["location"]): (r["quantity"], r["status"], r["version"])
                for r in response.json()["availability"]}

    # The table is written just after the batch's records are acknowledged: wait for it to catch up.
    answer = poll(lambda: web.get("/availability/SKU-A"),
                  lambda r: r.status_code == 200 and lookup_numbers(r) == on_topics, 30, "lookup equal to the topics")
    assert on_topics[("ecommerce", None)][0] == 7 and on_topics[("store-pickup", "S1")][0] == 7
    assert answer.json()["locations"]["S1"]["sellable"] == 7
    pickup = web.get("/availability/SKU-A", params={"channel": "store-pickup", "location": "S1"})
    assert lookup_numbers(pickup) == {("store-pickup", "S1"): on_topics[("store-pickup", "S1")]}

    assert web.get("/availability/SKU-NEVER-SEEN").status_code == 404
    assert web.get("/availability/SKU-A", params={"location": "S9"}).status_code == 404
    assert web.get("/availability/-bad").status_code == 400
    assert web.get("/availability/SKU-A", params={"channel": "wholesale"}).status_code == 400

    def samples(response) -> dict:
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(response.text) for sample in family.samples}

    ingested = ("availability_events_ingested_total",
                (("event_type", "StockMovement"), ("source_topic", STORE_TRANSACTIONS.name)))
    dead = ("availability_dead_letters_total",
            (("reason", "UNDECODABLE_RECORD"), ("source_topic", STORE_TRANSACTIONS.name), ("stage", "ingest")))
    metrics = samples(poll(lambda: web.get("/metrics"),
                           lambda r: samples(r).get(ingested) == 2 and samples(r).get(dead) == 1, 30, "counters"))
    # one per published version: 2, or 1 when the receipt and the sale shared a ledger record (docs/CONTRACT.md)
    ecommerce_version = on_topics[("ecommerce", None)][2]
    assert ecommerce_version in (1, 2)
    assert metrics[("availability_publications_total", (("channel", "ecommerce"),))] == ecommerce_version
    assert metrics[("availability_ready", ())] == 1
    assert metrics[("availability_recovery_in_progress", ())] == 0
    assert any(name == "availability_consumer_lag_records" for name, _ in metrics)

    def source_lag_reported(response) -> bool:  # the ingest thread's consumer, from librdkafka's statistics
        return any(name == "availability_consumer_lag_records" and dict(labels)["topic"] == STORE_TRANSACTIONS.name
                   for name, labels in samples(response))

    poll(lambda: web.get("/metrics"), source_lag_reported, 30, "consumer lag of the source partitions")
    # The failed record is logged with its position: topic[partition]@offset.
    worker.wait_for_log(rf"dead-lettered {STORE_TRANSACTIONS.name}\[\d+\]@\d+: UNDECODABLE_RECORD", timeout=10)
    assert "could not reach the owner" not in worker.log_text()  # one worker: every lookup is answered locally


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_a_lookup_is_forwarded_to_the_worker_that_owns_the_sku(service_settings, topics_for, bootstrap_servers):
    first_settings = service_settings(partitions=2)
    second_settings = service_settings(partitions=2, app_id=first_settings.app_id)  # same group, own dir and port
    source = topics_for(first_settings)
    workers = [WorkerWithWeb(first_settings), WorkerWithWeb(second_settings)]
    try:
        for worker in workers:
            worker.start()
        clients = [httpx.Client(base_url=f"http://{w.settings.web_host}:{w.settings.web_port}", timeout=5)
                   for w in workers]

        def split(responses) -> bool:
            partitions = [r.json()["active_partitions"] for r in responses]
            return all(r.status_code == 200 for r in responses) and sorted(sum(partitions, [])) == [0, 1]

        poll(lambda: [client.get("/ready") for client in clients], split, 120, "both workers ready with one partition")

        skus = {ledger_partition(sku, 2): sku for sku in (f"SKU-{n}" for n in range(20))}
        assert set(skus) == {0, 1}
        source.send(POLICY_CHANGES.name, event_to_record(policy(1, stores=("S1",), dcs=()))[1])
        source.flush()
        wait_for_ledger_entries(bootstrap_servers, source.codec, 2, "PolicyChange")
        for partition, sku in skus.items():
            source.send(STORE_TRANSACTIONS.name, event_to_record(receipt(5 + partition, sku=sku, time=1000))[1])
        source.flush()

        for partition, sku in skus.items():
            for client in clients:  # one of the two does not own `sku` and forwards the request
                answer = poll(lambda: client.get(f"/availability/{sku}"), lambda r: r.status_code == 200, 60,
                              f"{sku} answered by {client.base_url}")
                assert answer.json()["ledger_partition"] == partition
                assert answer.json()["availability"][0]["quantity"] == 5 + partition
    finally:
        for worker in workers:
            worker.stop(grace_seconds=10)
