"""The peak benchmark runs end to end (its `smoke` profile: the mix scenario at toy size) in both topologies and
writes its results.

It checks that the harness works, not the figures: those depend on the machine."""

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
@pytest.mark.timeout(240)
@pytest.mark.parametrize("topology", ["all", "split"])
def test_smoke_profile_runs_and_writes_results(tmp_path, topology):
    running_before = _running_children()  # a broker of another test's fixture, say
    assert main(["--profile", "smoke", "--topology", topology, "--results-dir", str(tmp_path)]) == 0

    name = "smoke" if topology == "all" else "smoke-split"
    result = json.loads((tmp_path / f"{name}.json").read_text())
    ingest_processes = 0 if topology == "all" else 1
    assert result["topology"] == topology and result["ingest_processes_per_worker"] == ingest_processes
    mix = result["throughput"]["mix"]
    assert mix["service"]["events"] == 3_500 and mix["service"]["events_per_second"] > 0
    assert mix["service"]["workers"] == 1 and mix["service"]["ingest_processes"] == ingest_processes
    assert mix["service"]["processes"] == ("1 worker (both stages)" if topology == "all"
                                           else "1 worker + 1 ingest process")
    assert mix["service"]["ingest"]["events_per_second"] > 0  # the ingest stage's own rate, from the ledger
    assert mix["baselines"]["faust"]["records"] > 0 and mix["baselines"]["confluent"]["events"] > 0
    assert mix["ratios"]["vs_confluent"] is not None
    assert mix["dead_letters"] <= 2  # the generated workload is valid
    live = result["live"]
    assert live["events_sent"] > 0 and live["latency"]["steady"]["count"] > 0
    assert live["latency"]["steady"]["p50_ms"] > 0
    assert result["restart"]["warm"]["seconds_to_first_output"] > 0
    assert result["resources"]["sku_locations_held"] > 0 and result["resources"]["rocksdb_bytes"] > 0
    assert len(result["resources"]["peak_rss_mib_per_ingest_process"]) == ingest_processes
    assert result["capacity"]["workers_at_full_load"] >= 1
    if topology == "split":
        assert result["capacity"]["ingest"]["processes_at_full_load"] >= 1
        assert "kept running" in result["restart"]["warm"]["ingest"]
    assert {row["target"][:10] for row in result["targets"]} and len(result["targets"]) == 4
    markdown = (tmp_path / f"{name}.md").read_text()
    assert "## Targets" in markdown and "## Live run" in markdown and f"`{topology}` topology" in markdown
    assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    # every broker, worker, ingest process and baseline the run started has been stopped
    left_running = {pid: line for pid, line in _running_children().items() if pid not in running_before}
    assert not left_running
