"""Crash and scale-out: kill -9 mid-stream and restart; two workers share partitions, one stops, one takes over.

After either, every key's published sequence is gapless, any repeat is byte-identical, and the published records
equal the engine run on the ledger."""

from __future__ import annotations

import pytest

from app.kafka.broker import free_loopback_port
from app.wire.topics import LEDGER, POLICY_CHANGES, availability_topic
from tables.declarations import PARTITION_STATE_TABLE, SKU_STATE_TABLE
from tests.service.harness import WORKER_READY, committed_offsets, poll, read_topic, wait_for_ledger_entries
from tests.service.scenario import (
    CHANNELS,
    FIRST_POLICY,
    assert_published_equals_engine,
    assert_versions_gapless,
    build_scenario,
    expected_from_sent,
    read_outputs,
    send_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _check_against_engine(bootstrap_servers, codec, partitions, scenario):
    wait_for_ledger_entries(bootstrap_servers, codec, partitions, "PolicyChange", count_per_partition=2)
    expected = expected_from_sent(bootstrap_servers, codec, partitions, [FIRST_POLICY, *scenario.sent_events()])
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
    send_records(source, [(POLICY_CHANGES.name, FIRST_POLICY)])
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


def test_changes_held_in_memory_at_a_crash_are_read_back_from_the_ledger(service_settings, workers, topics_for,
                                                                        bootstrap_servers):
    # A write-back interval longer than the test: after each partition's first write-back (its first ledger
    # position), every change stays in memory while the committed offsets move past the records that made it.
    settings = service_settings(channels=CHANNELS, batch_size=50, write_back_interval_seconds=60)
    source = topics_for(settings)
    codec = source.codec
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=60)
    changelog = f"{settings.app_id}-{{}}-changelog"
    send_records(source, [(POLICY_CHANGES.name, FIRST_POLICY)])
    read_topic(bootstrap_servers, changelog.format(PARTITION_STATE_TABLE), settings.partitions,
               until=lambda records: len({r.partition for r in records}) == settings.partitions, idle_seconds=0)
    scenario = build_scenario(seed=13)
    send_records(source, scenario.first_half)
    ledger = read_topic(bootstrap_servers, LEDGER.name, settings.partitions, idle_seconds=2)
    last_offsets = {}
    for record in ledger:
        last_offsets[record.partition] = max(record.offset, last_offsets.get(record.partition, -1))
    poll(lambda: committed_offsets(bootstrap_servers, settings.app_id, [LEDGER.name], settings.partitions),
         lambda committed: all(committed[LEDGER.name, p] > offset for p, offset in last_offsets.items()),
         timeout=60, what="ledger offsets committed past the first half")
    # The premise: the first half's SKU states are in no table, only in the worker's memory.
    assert read_topic(bootstrap_servers, changelog.format(SKU_STATE_TABLE), settings.partitions, idle_seconds=0.5) == []
    worker.kill()
    send_records(source, scenario.second_half)
    restarted = workers(settings)
    restarted.wait_for_log(WORKER_READY, timeout=60)
    _check_against_engine(bootstrap_servers, codec, settings.partitions, scenario)
    assert "reading them back" in restarted.log_text()


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
    send_records(source, [(POLICY_CHANGES.name, FIRST_POLICY)])
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
