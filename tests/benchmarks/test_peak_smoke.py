"""The peak benchmark runs end to end (its `smoke` profile: the mix scenario at toy size, with every baseline, Quix
Streams included) in both topologies (`all` with `-m slow`) and writes its results.

It checks that the harness works and that its figures hold together (the whole section is never faster than its
own middle, per core is events over the CPU seconds it reports, the headline ratio is the lower one), not the
figures themselves: those depend on the machine."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.peak import main


def _running_children() -> dict[int, str]:
    """Pid and command line of this process's children that are still running (zombies count as stopped)."""
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            children[int(stat.parent.name)] = cmdline
    return children


@pytest.mark.integration
@pytest.mark.timeout(300)
# `split` in the default suite: it runs all of `all`'s harness plus the ingest processes; `all` with `-m slow` (the
# topology itself runs in most of the service's integration tests).
@pytest.mark.parametrize("topology", [pytest.param("all", marks=pytest.mark.slow), "split"])
def test_smoke_profile_runs_and_writes_results(tmp_path, topology, embedded_broker_starts):
    running_before = _running_children()  # a broker of another test's fixture, say
    try:
        # `all` also asks its worker for memory censuses (benchmarks/memory_census.py)
        census = ["--memory-census"] if topology == "all" else []
        assert main(["--profile", "smoke", "--topology", topology, "--results-dir", str(tmp_path), *census]) == 0
    finally:
        # every broker, worker, ingest process, baseline and sender the run started has been stopped
        left_running = {pid: line for pid, line in _running_children().items() if pid not in running_before}
        assert not left_running

    name = "smoke-memory-census" if topology == "all" else "smoke-split"
    result = json.loads((tmp_path / f"{name}.json").read_text())
    ingest_processes = 0 if topology == "all" else 1
    assert result["topology"] == topology and result["ingest_processes_per_worker"] == ingest_processes
    mix = result["throughput"]["mix"]
    service = mix["service"]
    assert service["events"] == 3_500 and service["events_per_second"] > 0
    assert service["workers"] == 1 and service["ingest_processes"] == ingest_processes
    assert service["processes"] == ("1 worker (both stages)" if topology == "all" else "1 worker + 1 ingest process")
    assert service["ingest"]["events_per_second"] > 0  # the ingest stage's own rate, from the ledger
    # the whole section holds the window of the outputs, so its rate is never above first-output-to-last
    assert 0 < service["whole_section_events_per_second"] <= service["overall_events_per_second"]
    # per core: the workers' and ingest processes' CPU over the section
    assert set(service["cpu_seconds"]["processes"]) == (
        {"worker-1"} if topology == "all" else {"worker-1", "ingest-1"})
    assert all(seconds > 0 for seconds in service["cpu_seconds"]["processes"].values())
    assert service["events_per_second_per_core"] == pytest.approx(
        3_500 / service["cpu_seconds"]["service"], rel=0.01)

    baselines = mix["baselines"]
    assert set(baselines) == {"quix", "confluent", "faust"}
    quix = baselines["quix"]
    assert quix["events"] == 3_500 and quix["passes"] == 1  # every event of the section applied once
    for figure in baselines.values():
        assert 0 < figure["whole_section_events_per_second"] <= figure["overall_events_per_second"]
        assert figure["cpu_seconds"] > 0 and figure["events_per_second_per_core"] > 0
    ratios = mix["ratios"]["quix"]
    assert ratios["headline"] == min(ratios["whole_section"], ratios["per_core"])
    assert ratios["per_core"] == pytest.approx(
        service["events_per_second_per_core"] / quix["events_per_second_per_core"], rel=0.01)
    assert mix["dead_letters"] <= 2  # the generated workload is valid
    reasons = result["validity"]["dead_letter_reasons"]  # each dead letter is told by its reason and origin
    assert sum(reason["count"] for reason in reasons) == mix["dead_letters"]
    for reason in reasons:  # and by its error texts, which count every dead letter when there are few kinds
        assert 0 < sum(error["count"] for error in reason["errors"]) <= reason["count"]

    live = result["live"]
    assert live["events_sent"] > 0 and live["latency"]["steady"]["count"] > 0
    assert live["latency"]["steady"]["p50_ms"] > 0
    assert live["steady_events_per_second"] <= 250  # the smoke profile's cap
    for window in ("steady", "burst", "after_burst"):
        cpu = live["cpu_seconds"][window]
        assert cpu["workers"] > 0 and cpu["broker"] > 0 and cpu["sender"] >= 0
        # the machine ran at least our processes; the two figures are read at slightly different instants (the
        # machine's from /proc/stat, each process's from its own stat, a reaped child's CPU at once), which in a
        # smoke window of 2-4.5 s is worth up to about half a CPU second
        slack = 0.1 + 0.5 / cpu["wall_seconds"]
        assert cpu["machine_cores_busy"] >= cpu["cores_busy"] - slack, (cpu, slack)
        assert (cpu["ingest_processes"] > 0) == (topology == "split")
        assert cpu["service_events_per_cpu_second"] == round(
            cpu["events_applied"] / (cpu["workers"] + cpu["ingest_processes"]))
    # the three windows meet: together they hold the live run's events, none twice. The applied series sees an event
    # through an output of it or of a later entry of its partition, so a partition's last events that publish
    # nothing (a refused sale, say) may go unseen
    windows = ("steady", "burst", "after_burst")
    windows_applied = sum(live["cpu_seconds"][window]["events_applied"] for window in windows)
    assert 0.99 * live["events_sent"] <= windows_applied <= live["events_sent"]
    assert result["restart"]["warm"]["seconds_to_first_output"] > 0
    assert result["resources"]["sku_locations_held"] > 0 and result["resources"]["rocksdb_bytes"] > 0
    assert len(result["resources"]["peak_rss_mib_per_ingest_process"]) == ingest_processes
    assert result["capacity"]["workers_at_full_load"] >= 1
    if topology == "split":
        assert result["capacity"]["ingest"]["processes_at_full_load"] >= 1
        assert "kept running" in result["restart"]["warm"]["ingest"]

    targets = {row["target"]: row for row in result["targets"]}
    assert len(targets) == 6
    # the live stream's rate while behind, against the mix backlog's: from the burst's start, a window of data
    live_rate = live["live_rate_while_behind"]
    assert live_rate["events_per_second"] > 0 and live_rate["window_seconds"] > 0
    assert live_rate["window_end"] in ("lag back within the threshold", "last record sent",
                                       "burst's end (kept up with it)")
    [live_target] = [row for name, row in targets.items() if name.startswith("live stream")]
    assert live_target["measured"] == live_rate["fraction_of_sustained_max"] > 0
    if live_rate["kept_up"]:  # the smoke profile's burst is capped far below the backlog rate: a lower bound only
        assert live_target["met"] in (None, True) and "lower bound" in live_target["note"]
    assert live_target["threshold"] == live_rate["target_fraction_of_sustained_max"] == 0.9
    assert "the sustained maximum (the target: 0.90x)" in (tmp_path / f"{name}.md").read_text()
    quix_targets = [row for name, row in targets.items() if "Quix" in name]
    assert len(quix_targets) == 2 and quix_targets[0]["measured"] == ratios["per_core"]
    assert all({"measured", "threshold", "met"} <= set(row) for row in targets.values())
    markdown = (tmp_path / f"{name}.md").read_text()
    assert "## Targets" in markdown and "## Live run" in markdown and f"`{topology}` topology" in markdown
    assert "| | Quix Streams app |" in markdown and "service / Quix" in markdown
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000

    censuses = result["resources"].get("memory_census_by_phase_mib")
    if topology == "split":
        assert censuses is None and not list(tmp_path.glob("*memory-census*"))
        return
    # at least the phase it starts in and the live run's, each with the states the worker had decoded by then
    assert {"start", "live"} <= set(censuses), censuses
    assert censuses["live"]["parts"]["decoded SKU states"] > 0
    assert 0 < censuses["live"]["pymalloc_in_use"] <= censuses["live"]["pymalloc_arenas"] < censuses["live"]["resident"]
    assert len(list((tmp_path / "smoke-memory-census").glob("census-*.json"))) >= 2
    assert "**A run with memory censuses**" in markdown and "| live |" in markdown
