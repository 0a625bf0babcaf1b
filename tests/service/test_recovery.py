"""Crash and scale-out: kill -9 mid-stream and restart; two workers share partitions, one stops, one takes over.

After either, every key's published sequence is gapless, any repeat is byte-identical, and the published records
equal the engine run on the ledger."""

from __future__ import annotations

import pytest

from app.broker import free_loopback_port
from app.topics import POLICY_CHANGES, availability_topic
from tests.service.harness import WORKER_READY, read_topic, wait_for_ledger_entries
from tests.service.scenario import (
    CHANNELS,
    assert_published_equals_engine,
    assert_versions_gapless,
    build_scenario,
    expected_outputs,
    policy_v,
    read_ledger,
    read_outputs,
    send_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _check_against_engine(bootstrap_servers, codec, partitions, scenario):
    wait_for_ledger_entries(bootstrap_servers, codec, partitions, "PolicyChange", count_per_partition=2)
    expected = expected_outputs(read_ledger(bootstrap_servers, codec, partitions, scenario.event_ids()), codec)
    published = read_outputs(bootstrap_servers, partitions, expected)
    assert_versions_gapless(published, codec)
    assert_published_equals_engine(published, expected, allow_repeats=True)


def test_kill_9_mid_stream_then_restart(service_settings, workers, topics_for, bootstrap_servers):
    settings = service_settings(channels=CHANNELS, batch_size=50)
    source = topics_for(settings)
    codec = source.codec
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=60)
    scenario = build_scenario(seed=11)
    send_records(source, [(POLICY_CHANGES.name, policy_v(1, 10_000))])
    wait_for_ledger_entries(bootstrap_servers, codec, settings.partitions, "PolicyChange")
    send_records(source, scenario.first_half)
    # Mid-stream: some availability is out, not all of it.
    read_topic(bootstrap_servers, availability_topic("ecommerce").name, settings.partitions,
               until=lambda records: len(records) >= 20, idle_seconds=0, timeout=60)
    worker.kill()
    send_records(source, scenario.second_half)
    restarted = workers(settings)  # same data dir: RocksDB as the crash left it
    restarted.wait_for_log(WORKER_READY, timeout=60)
    _check_against_engine(bootstrap_servers, codec, settings.partitions, scenario)


def test_two_workers_share_partitions_and_one_takes_over(service_settings, workers, topics_for, bootstrap_servers):
    first_settings = service_settings(channels=CHANNELS)
    second_settings = first_settings.model_copy(
        update={"data_dir": first_settings.data_dir.parent / "second", "web_port": free_loopback_port()}
    )
    source = topics_for(first_settings)
    codec = source.codec
    first, second = workers(first_settings), workers(second_settings)
    first.wait_for_log(WORKER_READY, timeout=60)
    second.wait_for_log(WORKER_READY, timeout=60)
    scenario = build_scenario(seed=5)
    send_records(source, [(POLICY_CHANGES.name, policy_v(1, 10_000))])
    wait_for_ledger_entries(bootstrap_servers, codec, first_settings.partitions, "PolicyChange")
    send_records(source, scenario.first_half)
    read_topic(bootstrap_servers, availability_topic("ecommerce").name, first_settings.partitions,
               until=lambda records: len({r.key for r in records}) >= 150, timeout=90)

    def owned_partitions(settings):
        tables = list(settings.data_dir.glob("worker/**/sku-state-*.db"))
        return {int(path.name.removesuffix(".db").rsplit("-", 1)[1]) for path in tables}

    first_owned, second_owned = owned_partitions(first_settings), owned_partitions(second_settings)
    assert first_owned and second_owned, (first_owned, second_owned)

    assert second.stop() is not None
    send_records(source, scenario.second_half)
    # Policy v2 re-evaluates every SKU of every partition: the second worker's SKUs can only come out right if
    # the survivor took its partitions over and recovered their state from the changelog.
    _check_against_engine(bootstrap_servers, codec, first_settings.partitions, scenario)
