"""ServiceMetrics without a broker: the hooks count what the stages report, the gauges follow the app's state."""

from __future__ import annotations

import pytest
from faust.types import TP

from app.service.app import build_service
from app.service.metrics import RecoveryProgress, ServiceMetrics, channel_of_topic, consumer_lag, read_recovery_progress

UNREACHABLE_BROKER = "127.0.0.1:1"  # build_service connects nothing; the address only has to parse


def value(metrics: ServiceMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_hooks_count_events_by_their_labels():
    metrics = ServiceMetrics()
    metrics.ingested("source.store-transactions", "StockMovement")
    metrics.ingested("source.store-transactions", "StockMovement", count=2)
    metrics.ingested("source.policy-changes", "PolicyChange")
    metrics.rejected("UNKNOWN_LOCATION")
    metrics.dead_lettered("ingest", "source.store-transactions", "UNDECODABLE_RECORD")
    metrics.reservation_decided("ecommerce", "ACCEPTED")
    metrics.reservation_decided("marketplace", "REJECTED", "INSUFFICIENT_STOCK")
    metrics.inventory_exception("NEGATIVE_STOCK")
    metrics.published("availability.ecommerce", count=3)
    metrics.published("reservation-decisions")  # not a channel topic: not a publication of availability

    name = "availability_events_ingested_total"
    assert value(metrics, name, source_topic="source.store-transactions", event_type="StockMovement") == 3
    assert value(metrics, name, source_topic="source.policy-changes", event_type="PolicyChange") == 1
    assert value(metrics, "availability_rejections_total", reason="UNKNOWN_LOCATION") == 1
    assert value(
        metrics, "availability_dead_letters_total",
        stage="ingest", source_topic="source.store-transactions", reason="UNDECODABLE_RECORD",
    ) == 1
    assert value(metrics, "availability_reservation_decisions_total", channel="ecommerce", outcome="ACCEPTED") == 1
    assert value(metrics, "availability_reservation_decisions_total", channel="marketplace", outcome="REJECTED") == 1
    assert value(metrics, "availability_reservation_refusals_total", channel="marketplace",
                 reason="INSUFFICIENT_STOCK") == 1
    assert value(metrics, "availability_reservation_refusals_total", channel="ecommerce",
                 reason="INSUFFICIENT_STOCK") is None
    assert value(metrics, "availability_inventory_exceptions_total", kind="NEGATIVE_STOCK") == 1
    assert value(metrics, "availability_publications_total", channel="ecommerce") == 3
    assert value(metrics, "availability_publications_total", channel="reservation-decisions") is None


def test_batch_applied_observes_latency_from_ingest_time_and_never_negative():
    metrics = ServiceMetrics()
    metrics.batch_applied(partition=2, events=5, ingest_times_ms={1_000: 1, 1_900: 3, 2_100: 1},
                          published_at_ms=2_000)
    assert value(metrics, "availability_ledger_events_applied_total", partition="2") == 5
    assert value(metrics, "availability_end_to_end_latency_seconds_count") == 5
    # 1.0 s + 3 x 0.1 s + 0 (a clock 0.1 s ahead on the ingesting worker is not a negative latency)
    assert value(metrics, "availability_end_to_end_latency_seconds_sum") == pytest.approx(1.3)
    assert value(metrics, "availability_end_to_end_latency_seconds_bucket", le="0.1") == 4


def test_observing_many_at_once_exposes_what_observing_each_does():
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from app.service.metrics import LATENCY_BUCKETS_SECONDS, observe_many

    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    each = Histogram("latency", "l", buckets=LATENCY_BUCKETS_SECONDS, registry=one_by_one)
    many = Histogram("latency", "l", buckets=LATENCY_BUCKETS_SECONDS, registry=at_once)
    for amount, count in ((0.0, 2), (0.1, 3), (LATENCY_BUCKETS_SECONDS[2], 4), (0.7, 1), (1e9, 5)):
        for _ in range(count):
            each.observe(amount)
        observe_many(many, amount, count)

    def samples(registry) -> list[bytes]:  # without the creation time, which differs
        return [line for line in generate_latest(registry).splitlines() if b"_created" not in line]

    assert samples(at_once) == samples(one_by_one)


def test_each_instance_has_its_own_registry():
    first, second = ServiceMetrics(), ServiceMetrics()  # would raise "Duplicated timeseries" on a shared registry
    first.rejected("NO_POLICY")
    assert value(second, "availability_rejections_total", reason="NO_POLICY") is None


@pytest.mark.parametrize(
    ("topic", "channel"),
    [("availability.ecommerce", "ecommerce"), ("availability.store-pickup", "store-pickup"), ("ledger", None)],
)
def test_channel_of_topic(topic, channel):
    assert channel_of_topic(topic) == channel


def test_consumer_lag_counts_records_after_the_last_read_offset():
    positions = {("ledger", 0): 9, ("ledger", 1): None, ("ledger", 2): 20, ("ledger", 3): 4}
    highwaters = {("ledger", 0): 15, ("ledger", 1): 7, ("ledger", 2): 18, ("ledger", 3): None}
    assert consumer_lag(positions, highwaters) == {
        ("ledger", 0): 5,  # offsets 10..14
        ("ledger", 1): 7,  # nothing read yet
        ("ledger", 2): 0,  # read past the reported watermark (Tansu reports the start of the last batch)
    }  # partition 3: no watermark known, so no value rather than a reassuring 0


def test_lag_gauge_drops_partitions_that_are_no_longer_assigned():
    metrics = ServiceMetrics()
    metrics.set_consumer_lag({("ledger", 0): 4, ("ledger", 1): 2})
    metrics.set_consumer_lag({("ledger", 1): 1})
    assert value(metrics, "availability_consumer_lag_records", topic="ledger", partition="0") is None
    assert value(metrics, "availability_consumer_lag_records", topic="ledger", partition="1") == 1


def test_recovery_gauges():
    metrics = ServiceMetrics()
    progress = RecoveryProgress(
        remaining={("sku-state", 0): 120, ("sku-state", 1): 0}, in_progress=True, completed_once=False,
        active_partitions=2, standby_partitions=1,
    )
    metrics.set_recovery(progress, ready=False)
    assert value(metrics, "availability_recovery_remaining_records", table="sku-state", partition="0") == 120
    assert value(metrics, "availability_recovery_in_progress") == 1
    assert value(metrics, "availability_assigned_table_partitions", role="active") == 2
    assert value(metrics, "availability_assigned_table_partitions", role="standby") == 1
    assert value(metrics, "availability_ready") == 0


def test_exposition_names_every_metric_and_warns_about_approximate_lag():
    text = ServiceMetrics().exposition().decode()
    for name in (
        "availability_events_ingested_total", "availability_rejections_total", "availability_dead_letters_total",
        "availability_reservation_decisions_total", "availability_publications_total",
        "availability_end_to_end_latency_seconds", "availability_consumer_lag_records",
        "availability_recovery_remaining_records", "availability_recovery_in_progress", "availability_ready",
    ):
        assert f"# HELP {name}" in text
    assert "APPROXIMATE on the embedded Tansu broker" in text


@pytest.fixture
def idle_service(settings_factory):
    """A service that was built but never started: no broker connection, no assignment."""
    metrics = ServiceMetrics()
    return build_service(settings_factory(partitions=4), UNREACHABLE_BROKER, observer=metrics), metrics


def test_refresh_on_a_worker_that_has_not_started_reports_not_ready(idle_service):
    service, metrics = idle_service
    metrics.refresh(service)  # must not raise: the consumer does not exist yet
    assert value(metrics, "availability_ready") == 0
    assert value(metrics, "availability_assigned_table_partitions", role="active") == 0
    assert value(metrics, "availability_memory_bytes", part="resident") > 10 * 2**20  # this process, at least
    assert value(metrics, "availability_memory_bytes", part="rocksdb_memtables") == 0  # no database open yet
    assert value(metrics, "availability_cached_sku_states") == 0


def test_recovery_progress_reads_the_apps_recovery_state(idle_service):
    service, _ = idle_service
    recovery = service.app.tables.recovery
    table = service.tables.sku_state
    changelog = table.changelog_topic.get_topic_name()
    recovery.add_active(table, TP(changelog, 1))
    recovery.add_active(table, TP(changelog, 3))
    recovery.active_highwaters[TP(changelog, 1)] = 50
    recovery.active_offsets[TP(changelog, 1)] = 20

    progress = read_recovery_progress(service.app)

    assert progress.remaining == {(table.name, 1): 30, (table.name, 3): 0}
    assert progress.active_partitions == 2
    assert not progress.completed_once


def test_silent_feeds_and_oversell_exposure_come_from_the_live_states():
    from types import SimpleNamespace

    from app.engine import PartitionState, SkuState
    from app.engine.state import Position, units_reserved_beyond_sellable
    from app.service.metrics import read_oversell_exposure, read_silent_feeds

    partition_state = PartitionState(0)
    partition_state.silent = {("POS", "S1"): 5}
    walked_in = SkuState("A")  # 3 reserved, then a walk-in sale left 1 on the shelf: 2 units beyond
    walked_in.positions = {"S1": Position(sellable=1, reserved=3), "S2": Position(sellable=-2, reserved=1)}
    store = SimpleNamespace(cached_partition_state=lambda: (True, partition_state),
                            oversell_exposure=lambda: units_reserved_beyond_sellable(walked_in))
    service = SimpleNamespace(settings=SimpleNamespace(partitions=2),
                              live_states=SimpleNamespace(live_store=lambda p: store if p == 0 else None))
    assert read_silent_feeds(service) == {("POS", "S1")}
    assert read_oversell_exposure(service) == 2 + 1
    metrics = ServiceMetrics()
    metrics.set_silent_feeds(read_silent_feeds(service))
    assert value(metrics, "availability_silent_feeds", feed="POS", location="S1") == 1


def test_the_workers_consumer_lag_adds_the_source_partitions_of_its_ingest_consumer(idle_service, monkeypatch):
    from app.service import metrics as service_metrics

    service, _ = idle_service
    monkeypatch.setattr(service_metrics, "read_agent_consumer_lag", lambda service: {("ledger", 0): 4})
    assert service_metrics.read_consumer_lag(service) == {("ledger", 0): 4}  # `availability`: no ingest here
    service.source_lag = lambda: {("source.store-transactions", 1): 9}  # `all`: the ingest thread's consumer
    assert service_metrics.read_consumer_lag(service) == {("ledger", 0): 4, ("source.store-transactions", 1): 9}
