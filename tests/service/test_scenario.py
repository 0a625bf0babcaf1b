"""End to end on the embedded broker: the realistic scenario through one worker equals the engine on the ledger."""

from __future__ import annotations

import pytest

from app.engine.positions import split_position
from app.wire.topics import LEDGER, POLICY_CHANGES, availability_topic
from tests.service.harness import WORKER_READY, read_topic, wait_for_ledger_entries
from tests.service.scenario import (
    CHANNELS,
    FIRST_POLICY,
    HOT_SKUS,
    assert_no_channel_accepted_more_than_shown,
    assert_published_equals_engine,
    assert_versions_gapless,
    build_scenario,
    dead_letters,
    expected_from_sent,
    read_outputs,
    send_records,
    source_topic,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_realistic_scenario_matches_engine(service_settings, workers, topics_for, bootstrap_servers):
    settings = service_settings(channels=CHANNELS)
    source = topics_for(settings)
    codec = source.codec
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=60)

    scenario = build_scenario()
    send_records(source, [(POLICY_CHANGES.name, FIRST_POLICY)])
    wait_for_ledger_entries(bootstrap_servers, codec, settings.partitions, "PolicyChange")
    malformed = send_records(source, scenario.first_half)
    # The stock must be in before the race: sources are ingested independently, like real feeds.
    hot = {sku.encode() for sku in HOT_SKUS}
    read_topic(bootstrap_servers, availability_topic("ecommerce").name, settings.partitions,
               until=lambda records: hot <= {r.key for r in records}, idle_seconds=0, timeout=60)
    malformed |= send_records(source, scenario.second_half)
    assert len(malformed) == len(scenario.malformed)

    wait_for_ledger_entries(bootstrap_servers, codec, settings.partitions, "PolicyChange", count_per_partition=2)
    expected = expected_from_sent(bootstrap_servers, codec, settings.partitions,
                                  [FIRST_POLICY, *scenario.sent_events()])
    published = read_outputs(bootstrap_servers, settings.partitions, expected)
    # the bulk feed reached the ledger as batch records: outputs of entries past the first of their record
    assert any(split_position(o.ledger_position)[1] > 0 for o in expected.outputs), "no ledger batch record"

    assert_published_equals_engine(published, expected, allow_repeats=False)
    assert_versions_gapless(published, codec)
    assert_no_channel_accepted_more_than_shown(expected)
    decisions = [o for o in expected.outputs if type(o).__name__ == "ReservationDecision"]
    assert {d.outcome.value for d in decisions} >= {"ACCEPTED", "REJECTED"}, "the race must have a loser"

    letters = dead_letters(bootstrap_servers, settings.partitions, want=len(malformed) + len(expected.rejections))
    from_ingest = [letter for letter in letters if source_topic(letter) != LEDGER.name]
    assert sorted(letter.value for letter in from_ingest) == sorted(malformed)
    from_ledger = sorted(
        (int(dict(letter.headers)["source-partition"]), int(dict(letter.headers)["source-offset"]),
         int(dict(letter.headers).get("ledger-index", b"0")), dict(letter.headers)["reason"].decode())
        for letter in letters if source_topic(letter) == LEDGER.name
    )
    assert from_ledger == sorted((r.ledger_partition, *split_position(r.ledger_position), r.reason)
                                 for r in expected.rejections)
    assert "Traceback" not in worker.log_text()
