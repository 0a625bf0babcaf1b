"""The `--topology split` plumbing of the peak benchmark without a broker: options, labels, the ingest capacity line,
the Markdown header and throughput table, and stopping processes even when one of them fails to stop."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.settings import Settings
from benchmarks import analysis
from benchmarks.harness import IngestWorker, ServiceWorker, stop_all
from benchmarks.peak import PeakBenchmark, Section, ingest_profile_path, main, processes_label
from benchmarks.report import markdown, results_name


def test_processes_label_names_every_process_that_ran() -> None:
    assert processes_label(1, 0) == "1 worker (both stages)"
    assert processes_label(2, 0) == "2 workers (both stages)"
    assert processes_label(1, 1) == "1 worker + 1 ingest process"
    assert processes_label(2, 4) == "2 workers + 4 ingest processes"


def test_ingest_capacity_line_sizes_ingest_processes_by_their_own_rate() -> None:
    line = analysis.ingest_capacity_line(50_000, 12_000, None, source_partitions=8)
    assert line["processes_at_full_load"] == 5  # ceil(50,000 / 12,000)
    assert line["processes_at_latency_load"] == 9  # ceil(50,000 / 6,000)
    assert line["per_process_events_per_second"] == 12_000
    assert line["needs_more_source_partitions"] is True and line["source_partitions"] == 8
    assert not any(key.startswith("workers") for key in line)
    measured = analysis.ingest_capacity_line(50_000, 12_000, 0.5, source_partitions=8)
    assert measured["processes_at_full_load"] == 9 and measured["scaling_efficiency_measured"] is True
    assert analysis.ingest_capacity_line(50_000, None, None, 8)["processes_at_full_load"] is None


def test_py_spy_profile_of_the_ingest_process_goes_next_to_the_worker_profile() -> None:
    assert ingest_profile_path(Path("out/profile.json")) == Path("out/profile-ingest.json")


@pytest.mark.parametrize("argv", [["--ingest-per-worker", "2"], ["--topology", "split", "--ingest-per-worker", "0"],
                                  ["--topology", "both"]])
def test_peak_rejects_inconsistent_topology_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--profile", "smoke", *argv])
    assert exit_info.value.code == 2


def _result(topology: str, ingest_per_worker: int) -> dict:
    processes = processes_label(1, ingest_per_worker)
    service = {"events_per_second": 4_000.0, "events_per_second_per_worker": 4_000.0, "workers": 1,
               "whole_section_events_per_second": 3_500.0, "whole_section_events_per_second_per_worker": 3_500.0,
               "cpu_seconds": {"service": 1.0}, "events_per_second_per_core": 4_000.0,
               "ingest_processes": ingest_per_worker, "processes": processes,
               "ingest": {"events_per_second": 15_000.0, "whole_section_events_per_second": 14_000.0},
               "events_per_ledger_record": 100.0}
    result = {
        "profile": "quick", "topology": topology, "ingest_processes_per_worker": ingest_per_worker, "seed": 1,
        "partitions": 8, "machine": {"python": "3.11", "cpus": 2, "broker": "embedded"},
        "targets": [{"target": "bulk >= 100k events/s per worker end to end", "measured": 4_000.0,
                     "threshold": 100_000, "met": False, "processes": processes}],
        "throughput": {"mix": {"events": 4_000, "service": service, "dead_letters": 0}},
        "resources": {"peak_rss_mib_per_worker": 200.0,
                      "peak_rss_mib_per_ingest_process": [90.0] * ingest_per_worker},
        "restart": {},
    }
    capacity = analysis.capacity_line(50_000, 4_000.0, None, 8)
    capacity.update(topology=topology, assumptions="as stated")
    if topology == "split":
        capacity["ingest"] = analysis.ingest_capacity_line(50_000, 15_000.0, None, 8)
    result["capacity"] = capacity
    return result


def test_split_markdown_says_which_processes_ran_and_sizes_both_kinds() -> None:
    text = markdown(_result("split", 1))
    assert "# Peak benchmark: `quick` profile, `split` topology" in text
    assert "**1 ingest process per worker**" in text and "per Faust (availability) worker" in text
    assert "Measured with 1 worker + 1 ingest process." in text
    mix_row = next(line for line in text.splitlines() if line.startswith("| mix |"))
    # slope, whole section, CPU seconds, per core, (passes), the ingest stage's whole-section rate
    assert mix_row.startswith("| mix | service: 1 worker + 1 ingest process | 4,000 | 4,000 | 3,500 | 1.0 | 4,000 | | "
                              "14,000 |")
    assert "**13 workers** at full load" in text and "**4 ingest processes** at full load" in text
    assert "per ingest process: 90.0 MiB" in text
    assert results_name(_result("split", 1)) == "quick-split"
    assert results_name({**_result("split", 1), "memory_census": True}) == "quick-split-memory-census"


def test_all_markdown_keeps_its_file_name_and_sizes_workers_only() -> None:
    result = _result("all", 0)
    text = markdown(result)
    assert "`all` topology" in text and "runs both stages" in text
    assert "| mix | service: 1 worker (both stages) |" in text
    assert "ingest processes** at full load" not in text and "per ingest process" not in text
    assert results_name(result) == "quick"


def test_an_ingest_consumer_is_assigned_only_while_it_holds_source_partitions(tmp_path: Path) -> None:
    process = IngestWorker(Settings(kafka_bootstrap_servers="127.0.0.1:9", data_dir=tmp_path))
    assert not process.ingest_assigned()  # no log yet
    lines = ["[t] [1] [INFO] ingest process: group g reading a; writing ledger (8 partitions)",
             "[t] [1] [INFO] ingest process: assigned source.a[0], source.a[1]"]
    process.log_path.write_text("\n".join(lines) + "\n")
    assert process.ingest_assigned()
    lines.append("[t] [1] [INFO] ingest process: revoked source.a[0], source.a[1]")
    process.log_path.write_text("\n".join(lines) + "\n")
    assert not process.ingest_assigned()  # between a revocation and the next assignment
    lines.append("[t] [1] [INFO] ingest process: assigned no partitions")
    process.log_path.write_text("\n".join(lines) + "\n")
    assert not process.ingest_assigned()


def test_ingest_worker_needs_a_broker_address(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kafka_bootstrap_servers"):
        IngestWorker(Settings(data_dir=tmp_path))


class _Unstoppable(ServiceWorker):
    def stop(self, grace_seconds: float = 30.0) -> None:
        raise OSError("refused")


def test_stop_all_stops_every_process_even_when_one_fails(tmp_path: Path) -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9", data_dir=tmp_path)
    sleepers = [IngestWorker(settings), ServiceWorker(settings), IngestWorker(settings)]
    try:
        for sleeper in sleepers:
            sleeper.process = subprocess.Popen(["sleep", "60"])
        with pytest.raises(RuntimeError, match="refused"):
            stop_all([sleepers[0], _Unstoppable(settings), sleepers[1], sleepers[2]], grace_seconds=5)
        assert all(sleeper.process.poll() is not None for sleeper in sleepers)
    finally:
        for sleeper in sleepers:
            if sleeper.process is not None and sleeper.process.poll() is None:
                sleeper.process.kill()
                sleeper.process.wait()


def _ledgered_section(records: int, events_per_ledger_record: int, milliseconds_apart: int):
    """A scenario stand-in whose ledger (one partition) holds `records` events, and the section of them."""
    ledger = analysis.LedgerMap(1)
    for offset in range(records // events_per_ledger_record):
        ids = [f"e{offset}-{index}" for index in range(events_per_ledger_record)]
        ledger.add(0, offset, 1_000 + offset * milliseconds_apart, ids)
    scenario = SimpleNamespace(settings=Settings(batch_size=1000), ledger_tail=SimpleNamespace(map=ledger))
    section = Section("s", {0: 0}, records, 0, records=[None] * records, end_events={0: records})
    return scenario, section


def test_ingest_rate_comes_from_the_ledger_records_of_the_section() -> None:
    scenario, section = _ledgered_section(10_000, 100, milliseconds_apart=10)  # 100 events per 10 ms
    figure = PeakBenchmark.ingest_throughput(scenario, section)
    assert figure["events_per_second"] == pytest.approx(10_000, rel=0.02)


def test_ingest_rate_of_one_or_two_micro_batches_is_not_measured() -> None:
    scenario, section = _ledgered_section(1_999, 1_999, milliseconds_apart=1)
    figure = PeakBenchmark.ingest_throughput(scenario, section)
    assert figure["events_per_second"] is None and figure["overall_events_per_second"] is None
    assert "not measured" in figure["note"]


def test_a_run_with_memory_censuses_says_so_first_and_gives_each_phase_s_largest() -> None:
    result = _result("all", 0)
    assert "memory censuses" not in markdown(result)
    census = {"resident": 480.0, "malloc_in_use": 180.0, "malloc_free": 140.0, "pymalloc_arenas": 210.0,
              "pymalloc_in_use": 160.0, "python_objects": 150.0,
              "parts": {"decoded SKU states": 95.5, "kept records (seen ids, finished reservations)": 15.4,
                        "partitioner memos": 0.9}}
    result = {**result, "memory_census": True,
              "resources": {**result["resources"], "memory_census_by_phase_mib": {"live": census}}}
    text = markdown(result)
    assert text.index("**A run with memory censuses**") < text.index("## Targets")
    assert "| live | 480.0 | 180.0 / 140.0 | 210.0 / 160.0 | 150.0 | 95.5 | 15.4 | 0.9 |" in text
    assert results_name(result) == "quick-memory-census"
