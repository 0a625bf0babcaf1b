"""How a replay in several processes shares the partitions, and how verify compares a key whose records come from
several ledger partitions (their relative order is not part of the contract). No broker."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.replay import Replayer, ReplayError, ReplayOptions
from app.replay.parallel import shares
from app.replay.verify import OutputRecord, VerifyReport, compare_topic
from app.settings import Settings
from app.wire.topics import RESERVATION_DECISIONS, availability_topic


@given(st.sets(st.integers(0, 63), max_size=40), st.integers(1, 12))
def test_every_partition_goes_to_exactly_one_process(partitions, processes):
    parts = shares(sorted(partitions, reverse=True), processes)
    assert sorted(p for share in parts for p in share) == sorted(partitions)
    assert len(parts) == min(processes, len(partitions)) and all(parts)
    assert max(map(len, parts), default=0) - min(map(len, parts), default=0) <= 1


def test_shares_are_round_robin():
    assert shares([3, 0, 1, 2, 4], 2) == [[0, 2, 4], [1, 3]]
    assert shares([0, 1], 5) == [[0], [1]]
    assert shares([], 3) == []


def decision(partition: int, offset: int, value: bytes = b"x") -> OutputRecord:
    return OutputRecord(("ledger", partition, offset, 0, "ACCEPTED"), value + bytes([partition, offset]), (),
                        f"t[0]@{offset}")


def availability(version: int) -> OutputRecord:
    return OutputRecord(("v", version), bytes([version]), (), f"t[0]@{version}")


def compared(topic: str, a: list[OutputRecord], b: list[OutputRecord]) -> VerifyReport:
    report = VerifyReport("a", "b")
    compare_topic(None, topic, {"K": a}, {"K": b}, report)
    return report


def test_a_key_from_several_ledger_partitions_is_compared_per_partition():
    topic = RESERVATION_DECISIONS.name
    a = [decision(0, 1), decision(1, 1), decision(0, 2), decision(1, 2)]
    b = [decision(1, 1), decision(0, 1), decision(1, 2), decision(0, 2)]  # interleaved otherwise
    assert compared(topic, a, b).equal
    swapped = [decision(0, 2), decision(1, 1), decision(0, 1), decision(1, 2)]  # partition 0's own order changed
    report = compared(topic, a, swapped)
    assert report.difference_count == 1 and "ledger 0@1.0" in str(report.differences[0])
    missing = compared(topic, a, a[:3])
    assert missing.difference_count == 1 and "only in a" in str(missing.differences[0])


def test_availability_records_of_a_key_keep_one_order():
    topic = availability_topic("ecommerce").name
    assert compared(topic, [availability(1), availability(2)], [availability(1), availability(2)]).equal
    assert compared(topic, [availability(1), availability(2)], [availability(2), availability(1)]).difference_count


def test_a_replayer_runs_in_one_process_only():
    """Several processes go through app.replay.replay(); a Replayer asked for them refuses before reading."""
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", app_id="units")
    with pytest.raises(ReplayError, match=r"app\.replay\.replay\(\)"):
        Replayer(settings, "127.0.0.1:1", ReplayOptions(processes=2)).run()
    with pytest.raises(ReplayError, match="at least 1"):
        Replayer(settings, "127.0.0.1:1", ReplayOptions(processes=0))


def test_a_record_the_replay_could_not_deliver_reaches_its_error_list(monkeypatch):
    """The replay's producer reports failed deliveries to the Replayer through its own callback (no callback is
    passed with each record): a record to an unreachable broker times out and is counted."""
    import importlib

    import confluent_kafka

    replay_module = importlib.import_module("app.replay.replay")  # the package exports a function of that name

    def short_timeout(config):
        return confluent_kafka.Producer({**config, "message.timeout.ms": 300})

    monkeypatch.setattr(replay_module, "Producer", short_timeout)
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:1", app_id="units")
    replayer = Replayer(settings, "127.0.0.1:1", ReplayOptions())
    producer = replay_module.output_producer("127.0.0.1:1", None, replayer._on_delivery)
    produce = replayer._produce(producer)
    produce("availability.ecommerce", b"value", b"SKU1")
    produce("dead-letters", b"value", None, [("reason", b"X")])
    assert producer.flush(10) == 0  # both records left the queue: failed, not pending
    assert len(replayer._delivery_errors) == 2
    assert all("availability.ecommerce" in error or "dead-letters" in error for error in replayer._delivery_errors)
