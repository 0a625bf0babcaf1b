"""Every command line docs/PERFORMANCE.md gives a user runs exactly as written, from the project root with the
project's virtualenv first on PATH, writing its results to a temporary directory through BENCHMARK_RESULTS_DIR
(never over benchmarks/results/). The peak benchmark's commands take minutes (`quick`) to half an hour (`peak`), and
the availability stage's million-event run about four: these run with `-m slow` (the default suite checks that each
peak command parses with the real command's parser), as do the runs of half a minute to a few minutes listed in
OUT_OF_BUDGET, each of which the default suite runs at toy size with the same checks
(tests/benchmarks/test_benchmarks_at_toy_size.py). The rest run as written in the default suite."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import app.tools.cli
import benchmarks.peak
from app.tools.cli import main as availability
from benchmarks.report import results_name

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "PERFORMANCE.md"
COMMAND_PREFIXES = ("python -m benchmarks.", "availability benchmark", "BENCHMARK_RESULTS_DIR=")


def documented_commands() -> list[str]:
    """The command lines of the doc's code blocks (comments after `#` dropped)."""
    commands = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", DOC.read_text(), flags=re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command.startswith(COMMAND_PREFIXES):
                commands.append(command)
    return commands


def is_peak_benchmark(command: str) -> bool:
    return command.startswith(("python -m benchmarks.peak", "availability benchmark"))


# Runs of half a minute to a few minutes that the default suite leaves to `-m slow`, to stay within its 15 minutes;
# it runs each of them at toy size instead (tests/benchmarks/test_benchmarks_at_toy_size.py). The availability
# stage's 100,000-event runs, the plain ingest run and the fetch hop (20-45 s each) run as written in it.
OUT_OF_BUDGET = ("python -m benchmarks.broker_fetch_cost", "python -m benchmarks.decode_benchmark",
                 "python -m benchmarks.replay_benchmark", "python -m benchmarks.engine_benchmark",
                 "python -m benchmarks.ingest_benchmark --events")


def takes_minutes(command: str) -> bool:
    return (is_peak_benchmark(command) or re.search(r"--events \d{7,}", command) is not None  # a million or more
            or command.startswith(OUT_OF_BUDGET))


def as_run(command: str):
    """The command as a test parameter: `slow` when it takes minutes (a peak run, a million events)."""
    return pytest.param(command, marks=pytest.mark.slow) if takes_minutes(command) else command


def check_engine_result(result: dict, results_dir: Path) -> None:
    """What an engine benchmark run must report, documented or at toy size."""
    assert result["realistic"]["events_per_second"] > 0 and result["realistic"]["outputs"] > 0
    assert [row["locations_per_sku"] for row in result["scaling"]] == [5, 50, 500]
    assert result["scaling"][0]["cost_relative_to_5_locations"] == 1.0
    assert (results_dir / "engine.md").exists()
    # the headline is the least flattering round: the slowest realistic stream, the steepest location scaling
    rounds = result["rounds"]
    assert rounds and all([row["locations_per_sku"] for row in one["scaling"]] == [5, 50, 500] for one in rounds)
    assert result["realistic"]["events_per_second"] == min(one["realistic"]["events_per_second"] for one in rounds)
    steepest = max(one["scaling"][-1]["microseconds_per_event"] / one["scaling"][0]["microseconds_per_event"]
                   for one in rounds)
    headline = result["scaling"]
    assert headline[-1]["microseconds_per_event"] / headline[0]["microseconds_per_event"] == steepest


def check_decode_result(result: dict) -> None:
    """What a decode benchmark run must report, documented or at toy size (the benchmark itself raises where the
    decoders or the encoders disagree)."""
    assert result["ledger_entries"] > result["ledger_records"] > 0
    assert result["fastavro_us_per_entry"] > 0 and result["compiled_us_per_entry"] > 0
    reading = result["reading"]  # events from the dicts against straight from the bytes, checked equal
    assert reading["events_from_dicts_us_per_entry"] > 0 and reading["events_from_bytes_us_per_entry"] > 0
    encoding = result["encoding"]  # the availability records of that ledger, every encoder, checked equal
    assert encoding["availability_records"] > 0 and encoding["compiled_us_per_record"] > 0
    assert encoding["from_output_us_per_output"] > 0 and encoding["to_record_then_compiled_us_per_output"] > 0


def check_service_throughput_result(result: dict, written_name: str, mix: str) -> None:
    """What an availability-stage benchmark run must report, documented or at toy size."""
    assert result["mix"] == mix
    assert written_name == ("service_throughput.json" if mix == "mixed" else f"service_throughput-{mix}.json")
    assert result["ledger_entries"] > result["events"]  # policy and stock loads too
    assert result["ledger_records"] < result["ledger_entries"]  # batch records, as the ingest stage writes them
    assert result["entries_per_second"] > 0 and result["entries_per_cpu_second"] > 0
    # a key changed several times by one ledger record is published once
    assert 0 < result["availability_records"] < result["availability_records_one_per_entry"]
    assert result["worker_peak_rss_mib"] > 50
    assert 0 < result["slowest_scrape_seconds"] < 60
    loop_lag = result["event_loop_lag"]  # the worker's probe, ten wake-ups a second over the run
    assert loop_lag["probes"] > 10 and set(loop_lag["later_than_seconds"]) >= {"0.05", "0.25", "1.0"}
    assert all(0 <= late <= loop_lag["probes"] for late in loop_lag["later_than_seconds"].values())
    memory = result["worker_memory_at_peak_mib"]  # the worker's own account of it, by part
    assert memory["resident"] > 50 and memory["cached_sku_states"] > 0
    assert memory["rocksdb_memtables"] > 0 and memory["malloc_in_use"] >= memory["rocksdb_memtables"]
    by_tenth = result["entries_per_cpu_second_by_tenth"]  # a short run's tenths are None (too few scrapes)
    assert len(by_tenth) == 10 and all(rate is None or rate > 0 for rate in by_tenth)


def check_ingest_result(result: dict) -> None:
    """What an ingest-stage benchmark run must report, documented or at toy size (15,000 events or more: the
    bytes per event of a micro-batch hold its fixed part too, 638 at 5,000 events)."""
    assert set(result["mixes"]) == {"mixed", "single", "bulk"}
    for figures in result["mixes"].values():
        assert figures["events"] >= result["requested_events"] and figures["us_per_event"] > 0
        # its baseline of the same run: records encoded again (the same ledger, checked by the benchmark)
        assert figures["baseline_encoded_again_us_per_event"] > 0 and figures["ratio_to_baseline"] > 0
        assert 0 < figures["ledger_records"] < figures["events"]  # batch records, as the ingest stage writes them
    assert result["mixes"]["single"]["source_records"] == result["mixes"]["single"]["events"]
    assert result["mixes"]["bulk"]["source_records"] < result["mixes"]["bulk"]["events"]
    # a micro-batch holds its ledger records encoded, not a decoded dict per movement (about 1,100 bytes)
    assert 0 < result["mixes"]["bulk"]["micro_batch_peak_bytes_per_event"] < 400


def check_fetch_hop_result(result: dict) -> None:
    """What a fetch-hop benchmark run must report, documented or at toy size."""
    waits = {figure["fetch_max_wait_ms"]: figure for figure in result["by_fetch_max_wait"]}
    assert waits[50]["p50_ms"] < waits[1500]["p50_ms"]  # what the service's transport is for


def peak_arguments(command: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The arguments `python -m benchmarks.peak` receives from a documented command line."""
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "benchmarks.peak"]:
        return words[3:]
    assert words[:2] == ["availability", "benchmark"], f"not a benchmark command: {command}"
    received = []
    monkeypatch.setattr(app.tools.cli, "run_benchmark_module", lambda root, argv: received.append(argv) or 0)
    assert availability(words[1:]) == 0
    return received[0]


def test_the_doc_gives_the_commands_of_both_topologies_and_profiles() -> None:
    commands = documented_commands()
    for profile in ("quick", "peak"):
        for split in (False, True):
            assert any(f"--profile {profile}" in command and ("--topology split" in command) == split
                       for command in commands), (profile, split)


@pytest.mark.parametrize("command", [command for command in documented_commands() if is_peak_benchmark(command)])
def test_documented_command_parses(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    arguments = benchmarks.peak.parse_arguments(peak_arguments(command, monkeypatch))
    assert arguments.profile in benchmarks.peak.PROFILES


@pytest.mark.integration
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("command", [as_run(command) for command in documented_commands()])
def test_documented_command_runs_as_written(command: str, tmp_path: Path) -> None:
    virtualenv = Path(sys.executable).parent
    environment = {**os.environ, "PATH": f"{virtualenv}{os.pathsep}{os.environ.get('PATH', '')}",
                   benchmarks.peak.RESULTS_DIR_VARIABLE: str(tmp_path)}
    completed = subprocess.run(["bash", "-c", command], cwd=REPO_ROOT, env=environment, capture_output=True,
                               text=True, timeout=3500)
    assert completed.returncode == 0, completed.stderr[-3000:]
    [written] = tmp_path.glob("*.json")
    result = json.loads(written.read_text())
    if written.name.startswith("service_throughput"):  # the availability stage alone (about 25 s)
        mix = re.search(r"--mix (\w+)", command)
        check_service_throughput_result(result, written.name, mix.group(1) if mix else "mixed")
        return
    if written.name == "engine.json":  # the engine alone (30-45 s)
        check_engine_result(result, tmp_path)
        return
    if written.name == "decode.json":  # both decoders over the same ledger, checked equal (about 30 s)
        check_decode_result(result)
        return
    if written.name == "ingest.json":  # the ingest stage's own work on the three mixes (about 20 s)
        check_ingest_result(result)
        return
    if written.name == "replay.json":  # a replay of a generated ledger (about a minute)
        assert result["replay"]["events"] == result["ledger_entries"] >= result["requested_events"]
        assert result["replay"]["events_per_second"] > 0 and (tmp_path / "replay.md").exists()
        return
    if result["benchmark"] == "broker_fetch_cost":  # producer alone, then with a consumer at 5 and 50 ms linger
        assert [(run["linger_ms"], run["consumer"]) for run in result["runs"]] == [(5, False), (5, True), (50, True)]
        assert all(run["broker_cores_by_window"] for run in result["runs"])
        assert all(run["received"] == run["messages"] > 0 for run in result["runs"][1:])
        return
    if result["benchmark"] == "fetch_hop":
        check_fetch_hop_result(result)
        return
    assert written.stem == results_name(result) and (tmp_path / f"{written.stem}.md").exists()
    assert len(result["targets"]) == 6 and all(row["met"] is not None for row in result["targets"])
