"""A receipt then a sale for one SKU at one location come out as availability records on the channel topics."""

from __future__ import annotations

import pytest

from app.engine import ChannelGranularity, ClockTick, event_to_record
from app.wire.serialization import AVRO_NAMESPACE
from app.wire.topics import LEDGER, POLICY_CHANGES, STORE_TRANSACTIONS, availability_topic
from tests.engine.factories import channel, policy, receipt, sale
from tests.service.harness import WORKER_READY, read_topic, wait_for_ledger_entries
from tests.service.scenario import read_ledger

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_receipt_then_sale_publish_availability(service_settings, workers, topics_for, bootstrap_servers):
    settings = service_settings(tick_interval_seconds=0.5)
    source = topics_for(settings)
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=60)

    rules = (channel("ecommerce"), channel("marketplace", priority=1),
             channel("store-pickup", priority=2, granularity=ChannelGranularity.LOCATION))
    source.send(POLICY_CHANGES.name, event_to_record(policy(1, stores=("S1",), dcs=(), channels=rules))[1])
    source.flush()
    wait_for_ledger_entries(bootstrap_servers, source.codec, settings.partitions, "PolicyChange")
    source.send(STORE_TRANSACTIONS.name, event_to_record(receipt(10, sku="SKU-A", event_id="r1", time=1000))[1])
    source.flush()
    # the sale in a ledger record of its own: a record changing a key twice publishes it once (docs/CONTRACT.md)
    read_ledger(bootstrap_servers, source.codec, settings.partitions, {"r1"})
    source.send(STORE_TRANSACTIONS.name, event_to_record(sale(3, sku="SKU-A", event_id="s1", time=2000))[1])
    source.flush()

    codec = source.codec
    ecommerce = availability_topic("ecommerce").name
    records = read_topic(
        bootstrap_servers, ecommerce, settings.partitions,
        until=lambda rs: any(codec.decode(ecommerce, r.value).value["quantity"] == 7 for r in rs), timeout=60,
    )
    values = [codec.decode(ecommerce, r.value).value for r in records]
    assert [(v["sku"], v["quantity"], v["version"], v["event_id"]) for v in values] == [
        ("SKU-A", 10, 1, "r1"), ("SKU-A", 7, 2, "s1")
    ]
    assert {r.key for r in records} == {b"SKU-A"}

    pickup = availability_topic("store-pickup").name
    pickup_records = read_topic(bootstrap_servers, pickup, settings.partitions, until=lambda rs: len(rs) >= 2)
    assert {r.key for r in pickup_records} == {b"SKU-A/S1"}
    assert [codec.decode(pickup, r.value).value["quantity"] for r in pickup_records] == [10, 7]

    # The leader appends clock ticks to every ledger partition.
    tick_name = f"{AVRO_NAMESPACE}.{ClockTick.__name__}"

    def ticked(rs):
        partitions = {r.partition for r in rs if codec.decode(LEDGER.name, r.value).value["entry"][0] == tick_name}
        return partitions == set(range(settings.partitions))

    read_topic(bootstrap_servers, LEDGER.name, settings.partitions, until=ticked, timeout=30, idle_seconds=0)
