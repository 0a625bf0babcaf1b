"""The peak benchmark runs end to end (its `smoke` profile: the mix scenario at toy size) and writes its results.

It checks that the harness works, not the figures: those depend on the machine."""

from __future__ import annotations

import json

import pytest

from benchmarks.peak import main


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_smoke_profile_runs_and_writes_results(tmp_path):
    assert main(["--profile", "smoke", "--results-dir", str(tmp_path)]) == 0

    result = json.loads((tmp_path / "smoke.json").read_text())
    mix = result["throughput"]["mix"]
    assert mix["service"]["events"] == 2_000 and mix["service"]["events_per_second"] > 0
    assert mix["baselines"]["faust"]["records"] > 0 and mix["baselines"]["confluent"]["events"] > 0
    assert mix["ratios"]["vs_confluent"] is not None
    assert mix["dead_letters"] <= 2  # the generated workload is valid
    live = result["live"]
    assert live["events_sent"] > 0 and live["latency"]["steady"]["count"] > 0
    assert live["latency"]["steady"]["p50_ms"] > 0
    assert result["restart"]["warm"]["seconds_to_first_output"] > 0
    assert result["resources"]["sku_locations_held"] > 0 and result["resources"]["rocksdb_bytes"] > 0
    assert result["capacity"]["workers_at_full_load"] >= 1
    assert {row["target"][:10] for row in result["targets"]} and len(result["targets"]) == 4
    markdown = (tmp_path / "smoke.md").read_text()
    assert "## Targets" in markdown and "## Live run" in markdown
    assert (tmp_path / "smoke.png").stat().st_size > 10_000
