"""Replay determinism on a real broker: two replays of the same ledger give byte-identical records per key on
every output topic, equal to what the live service published, also when the live worker was killed (-9) and
restarted mid-stream; `verify` says so, and reports a difference when one is injected."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from app.replay import Replayer, ReplayError, ReplayOptions, replay, verify
from app.replay.namespace import output_topics
from app.tools.cli import main
from app.wire.serialization import AvroCodec
from app.wire.topics import POLICY_CHANGES, availability_topic
from tests.service.harness import WORKER_READY, read_topic, wait_for_ledger_entries
from tests.service.scenario import (
    CHANNELS,
    FIRST_POLICY,
    build_scenario,
    expected_from_sent,
    per_key,
    read_outputs,
    send_records,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def run_replay(settings, bootstrap_servers, name: str):
    return Replayer(settings, bootstrap_servers, ReplayOptions(namespace=name, idle_seconds=1.0)).run()


@pytest.fixture
def shared(replayed_once):
    """The module's replayed ledger and its broker (tests/replay/conftest.py), for the tests that only read it or
    replay it into namespaces of their own."""
    return replayed_once, replayed_once.kafka_bootstrap_servers


def raw_per_key(bootstrap_servers, topic: str, partitions: int) -> dict[bytes, list[bytes]]:
    """A finished replay's topic, per key: every record it held when read (nothing more is to come)."""
    records = read_topic(bootstrap_servers, topic, partitions, idle_seconds=0)
    return per_key((r.key, r.value) for r in sorted(records, key=lambda r: (r.partition, r.offset)))


def test_replays_equal_each_other_and_live_across_kill_9(service_settings, workers, topics_for, bootstrap_servers):
    settings = service_settings(channels=CHANNELS, batch_size=50)
    source = topics_for(settings)
    codec = source.codec
    worker = workers(settings)
    worker.wait_for_log(WORKER_READY, timeout=60)
    scenario = build_scenario(seed=23)
    send_records(source, [(POLICY_CHANGES.name, FIRST_POLICY)])
    wait_for_ledger_entries(bootstrap_servers, codec, settings.partitions, "PolicyChange")
    send_records(source, scenario.first_half)
    read_topic(bootstrap_servers, availability_topic("ecommerce").name, settings.partitions,
               until=lambda records: len(records) >= 20, idle_seconds=0, timeout=60)
    worker.kill()  # SIGKILL mid-stream: no commit, no flush
    send_records(source, scenario.second_half)
    workers(settings).wait_for_log(WORKER_READY, timeout=60)
    wait_for_ledger_entries(bootstrap_servers, codec, settings.partitions, "PolicyChange", count_per_partition=2)
    expected = expected_from_sent(bootstrap_servers, codec, settings.partitions,
                                  [FIRST_POLICY, *scenario.sent_events()])
    read_outputs(bootstrap_servers, settings.partitions, expected, timeout=90)  # the live service has caught up

    first = run_replay(settings, bootstrap_servers, "first")
    second = run_replay(settings, bootstrap_servers, "second")
    assert first.events == second.events > 0
    assert {topic.rsplit(".", 1)[0]: n for topic, n in first.records.items()} == {
        topic.rsplit(".", 1)[0]: n for topic, n in second.records.items()
    }

    # Byte-identical per key, replay against replay, and both equal to the engine run on the ledger.
    for live_name in [availability_topic(name).name for name in CHANNELS] + ["reservation-decisions"]:
        a = raw_per_key(bootstrap_servers, output_topics(settings, "first")[live_name].name, settings.partitions)
        b = raw_per_key(bootstrap_servers, output_topics(settings, "second")[live_name].name, settings.partitions)
        assert a == b, f"{live_name}: the two replays differ"
        assert a == per_key(expected.by_topic.get(live_name, [])), f"{live_name}: replay differs from the engine"

    # Equal to what the live service published, repeats from the crash deduplicated (and checked identical); the
    # second replay is byte-identical to the first (above), so equal to live as well.
    report = verify(settings, bootstrap_servers, "live", "first", idle_seconds=0.5, codec=codec)  # caught up
    assert report.equal, [str(difference) for difference in report.differences]
    assert report.keys[availability_topic("ecommerce").name] > 100
    assert main(["verify", "live", "second", "--idle", "0.5", "-b", bootstrap_servers]) == 0


def test_verify_reports_an_injected_difference(replayed, bootstrap_servers, capsys, monkeypatch):
    settings = replayed
    use_settings_in_commands(monkeypatch, settings)
    codec = AvroCodec(settings)
    live = availability_topic("ecommerce").name
    before = verify(settings, bootstrap_servers, "a", "b", idle_seconds=1.0, codec=codec)
    assert before.equal, (before.records, [str(difference) for difference in before.differences])

    target = output_topics(settings, "b")[live].name
    records = read_topic(bootstrap_servers, target, settings.partitions, idle_seconds=0.5)
    victim = max(records, key=lambda r: (r.partition, r.offset))
    changed = codec.decode(live, victim.value).value
    changed["quantity"] += 1  # the same version again, with other bytes: a repeat that is not a copy
    producer = Producer({"bootstrap.servers": bootstrap_servers, "partitioner": "murmur2_random"})
    producer.produce(target, codec.encode(live, changed), victim.key)
    assert producer.flush(10) == 0

    report = verify(settings, bootstrap_servers, "a", "b", topics=[live], idle_seconds=1.0, codec=codec)
    assert not report.equal
    described = [str(difference) for difference in report.differences]
    assert any(victim.key.decode() in text and f"v{changed['version']}" in text and "differs" in text
               for text in described), described

    # The command prints the differences readably and exits 1.
    assert main(["verify", "a", "b", "--idle", "0.5", "--topic", live, "-b", bootstrap_servers]) == 1
    printed = capsys.readouterr().out
    assert f"DIFF {live} key={victim.key.decode()!r} v{changed['version']}" in printed, printed


def test_verify_shows_field_differences(replayed, bootstrap_servers):
    settings = replayed
    codec = AvroCodec(settings)
    live = availability_topic("wholesale").name
    target = output_topics(settings, "b")[live].name
    records = read_topic(bootstrap_servers, target, settings.partitions, idle_seconds=0.5)
    last = max(records, key=lambda r: (r.partition, r.offset))
    value = codec.decode(live, last.value).value
    newer = dict(value, version=value["version"] + 1, quantity=value["quantity"] + 7)
    producer = Producer({"bootstrap.servers": bootstrap_servers, "partitioner": "murmur2_random"})
    producer.produce(target, codec.encode(live, newer), last.key)
    assert producer.flush(10) == 0
    report = verify(settings, bootstrap_servers, "a", "b", topics=[live], idle_seconds=1.0, codec=codec)
    assert report.difference_count == 1
    assert f"v{newer['version']}" in str(report.differences[0])
    assert "only in b" in str(report.differences[0])


def test_live_topics_need_confirmation(shared, capsys):
    _, bootstrap_servers = shared
    code = main(["replay", "--to-live", "--quiet", "-b", bootstrap_servers])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--yes" in error[0]


def use_settings_in_commands(monkeypatch, settings) -> None:
    """The commands read Settings() from the environment: give them the test's channels and partitions (a
    replay with other channels than the ledger's policy names rejects that policy, UNKNOWN_CHANNEL)."""
    monkeypatch.setenv("AVAILABILITY_CHANNELS", ",".join(settings.channels))
    monkeypatch.setenv("AVAILABILITY_PARTITIONS", str(settings.partitions))


def test_replay_command_prints_a_summary(shared, capsys, monkeypatch):
    replayed, bootstrap_servers = shared
    use_settings_in_commands(monkeypatch, replayed)
    assert main(["replay", "--name", "c", "--quiet", "--idle", "0.5", "-b", bootstrap_servers]) == 0
    printed = capsys.readouterr().out
    assert "availability.ecommerce.replay-c" in printed and "events/s" in printed
    assert main(["verify", "a", "c", "--idle", "0.5", "-b", bootstrap_servers]) == 0


def test_replay_from_offsets_reads_only_those_partitions(shared):
    replayed, bootstrap_servers = shared
    summary = Replayer(replayed, bootstrap_servers,
                       ReplayOptions(namespace="part", from_offsets={2: 5}, idle_seconds=0.5)).run()
    assert set(summary.partitions) == {2}
    assert summary.partitions[2][0] == 5
    assert not summary.from_earliest


def test_replay_from_a_time(shared):
    replayed, bootstrap_servers = shared
    everything = Replayer(replayed, bootstrap_servers, ReplayOptions(namespace="t0", from_time_ms=0,
                                                                     idle_seconds=0.5)).run()
    assert everything.events > 6_000 and not everything.from_earliest
    assert verify(replayed, bootstrap_servers, "a", "t0", idle_seconds=0.5).equal  # time 0 is the earliest
    future = Replayer(replayed, bootstrap_servers, ReplayOptions(namespace="later", from_time_ms=2**62,
                                                                 idle_seconds=0.5)).run()
    assert future.events == 0


def test_a_replay_in_processes_equals_one_in_one(shared):
    """Each ledger partition replayed by one of three processes: per key the same records, byte for byte, as one
    process gives; the summary adds the processes' up, and the progress reported is their sum."""
    replayed, bootstrap_servers = shared
    settings = replayed
    progress: list[tuple[int, int, int]] = []
    one = Replayer(settings, bootstrap_servers, ReplayOptions(namespace="one", idle_seconds=0.5)).run()
    three = replay(settings, bootstrap_servers, ReplayOptions(namespace="three", idle_seconds=0.5, processes=3),
                   on_progress=lambda *values: progress.append(values))
    assert (three.processes, one.processes) == (3, 1)  # 4 partitions: shares [0, 3], [1], [2]
    assert three.events == one.events > 6_000 and three.ledger_records == one.ledger_records
    assert three.partitions == one.partitions and three.rejections == one.rejections
    assert {topic.rsplit(".", 1)[0]: n for topic, n in three.records.items()} == {
        topic.rsplit(".", 1)[0]: n for topic, n in one.records.items()}
    assert 0 < three.busy_seconds <= three.seconds and three.peak_rss_mib > 0 and one.peak_rss_mib > 0
    assert progress[-1][0] == three.ledger_records and progress[-1][2] == three.events
    assert [done for done, _, _ in progress] == sorted(done for done, _, _ in progress)
    for live_name in [availability_topic(name).name for name in settings.channels]:
        a = raw_per_key(bootstrap_servers, output_topics(settings, "one")[live_name].name, settings.partitions)
        b = raw_per_key(bootstrap_servers, output_topics(settings, "three")[live_name].name, settings.partitions)
        assert a == b and len(a) > 10, live_name
    assert verify(settings, bootstrap_servers, "one", "three", idle_seconds=0.5).equal


def test_processes_must_be_at_least_one(capsys):
    """Refused as the arguments are read, before any broker is asked (the documented `--processes 2` line runs in
    tests/replay/test_documented_commands.py)."""
    with pytest.raises(SystemExit) as refused:
        main(["replay", "--processes", "0", "-b", "127.0.0.1:1"])
    assert refused.value.code == 2 and "--processes: must be greater than 0" in capsys.readouterr().err


def test_a_failing_replay_process_fails_the_replay(shared):
    """Partition 9 does not exist: the process given it fails, the other is stopped, the error names both."""
    replayed, bootstrap_servers = shared
    with pytest.raises(ReplayError, match=r"partitions 9: .*no partition 9"):
        replay(replayed, bootstrap_servers,
               ReplayOptions(namespace="broken", from_offsets={0: 0, 9: 0}, idle_seconds=0.5, processes=2))


def test_a_replay_process_stopped_midway_deletes_what_it_kept_on_disk(shared, tmp_path, monkeypatch):
    """How the parent stops the others when one fails (SIGTERM), once the process has applied entries and so made
    its directory of seen ids under TMPDIR: it goes with the process."""
    replayed, bootstrap_servers = shared
    import multiprocessing

    from app.replay.parallel import _replay_share

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # inherited by the spawned process
    context = multiprocessing.get_context("spawn")
    options = ReplayOptions(namespace="stopped", from_offsets={0: 0}, idle_seconds=300)  # then it waits at the end
    messages = context.Queue()  # its progress, not read here
    process = context.Process(target=_replay_share, args=(replayed, bootstrap_servers, options, [0], 0, messages),
                              daemon=True)
    process.start()
    def kept_on_disk() -> list[str]:  # multiprocessing keeps a directory of its own there too (pymp-...)
        return [path.name for path in tmp_path.glob("availability-replay-*")]

    try:
        deadline = time.monotonic() + 60
        while not kept_on_disk():  # made with the first entry applied
            assert process.is_alive() and time.monotonic() < deadline, "the replay process applied nothing"
            time.sleep(0.05)
        process.terminate()
        process.join(30)
        assert process.exitcode == 128 + 15  # it unwound (SystemExit), not ended where it stood
    finally:
        if process.is_alive():
            process.kill()
    assert kept_on_disk() == []


def test_processes_and_a_start_time_or_offsets(shared):
    replayed, bootstrap_servers = shared
    from_time = replay(replayed, bootstrap_servers,
                       ReplayOptions(namespace="t0p", from_time_ms=0, idle_seconds=0.5, processes=2))
    assert from_time.processes == 2 and not from_time.from_earliest
    assert verify(replayed, bootstrap_servers, "a", "t0p", topics=[availability_topic("ecommerce").name],
                  idle_seconds=0.5).equal  # time 0 is the earliest
    one_partition = replay(replayed, bootstrap_servers,
                           ReplayOptions(namespace="p2o", from_offsets={2: 5}, idle_seconds=0.5, processes=2))
    assert one_partition.processes == 1 and set(one_partition.partitions) == {2}
    assert one_partition.partitions[2][0] == 5
