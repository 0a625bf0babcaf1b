"""The memory census (benchmarks/memory_census.py): what it counts in a process, when the peak benchmark asks for
one, and that a process started with the census environment answers a request."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from app.engine.state import Position
from app.kafka.batch_sender import default_partition
from benchmarks.memory_census import PhaseCensuses, census, census_environment, request, summary
from tests.tables.test_store import store_with


def test_a_census_counts_the_decoded_states_a_store_holds_and_python_s_arenas():
    store, _ = store_with([f"SKU-{n}" for n in range(300)], cache_limit=1_000)
    for n in range(300):
        state = store.get_sku_state(f"SKU-{n}")
        for location in range(20):
            state.positions[f"L{location}"] = Position()
    default_partition(b"SKU-1/L1", 8)  # a key in the outputs' partitioner memo
    result = census("test")
    states = result["parts"]["decoded SKU states"]
    # 300 states of 20 positions: the positions alone are 6,000 objects
    assert states["objects"] > 6_000 and states["by_type"]["Position"] >= 6_000 * 56
    assert 0 < result["pymalloc"]["in_use"] <= result["pymalloc"]["arenas"]
    assert result["python_objects"]["bytes"] > states["bytes"] > 0
    assert result["by_type"]["dict"]["count"] > 300
    assert result["parts"]["partitioner memos"]["by_type"]["bytes"] > 0
    figures = summary(result)
    assert figures["parts"]["decoded SKU states"] == round(states["bytes"] / 2**20, 1)
    del store


def test_censuses_are_asked_for_at_a_phase_s_new_highs_and_not_more_often_than_the_interval(tmp_path: Path):
    now = [0.0]
    censuses = PhaseCensuses(tmp_path, pid=42, min_growth_mib=16, min_interval_seconds=20, clock=lambda: now[0])
    for at, phase, resident in [(0, "mix", 300), (10, "mix", 400),  # within the interval: not asked
                                (30, "mix", 310),  # not 16 MiB above the last census of the phase
                                (40, "mix", 330), (45, "live", 500),  # a new phase, but within the interval
                                (61, "live", 500), (90, "live", 510), (120, "live", 530)]:
        now[0] = at
        censuses.scraped(phase, {"resident": resident})
    assert (tmp_path / "request").read_text().splitlines() == ["42 mix-0", "42 mix-1", "42 live-0", "42 live-1"]
    # per phase the census with the largest resident set, of those written
    for tag, resident in (("mix-0", 300), ("mix-1", 330), ("live-0", 500)):  # live-1 never written
        (tmp_path / f"census-42-{tag}.json").write_text(json.dumps(_written(tag, resident)))
    found = censuses.by_phase(wait_seconds=0)
    assert {phase: figures["tag"] for phase, figures in found.items()} == {"mix": "mix-1", "live": "live-0"}
    assert found["mix"]["resident"] == 330.0


def test_a_process_started_with_the_census_environment_answers_a_request(tmp_path: Path):
    with census_environment(tmp_path):
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        path = request(tmp_path, process.pid, "now")
        deadline = time.monotonic() + 60
        while not path.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        result = json.loads(path.read_text())
        assert result["pid"] == process.pid and result["tag"] == "now"
        assert result["resident"] > 0 and result["python_objects"]["count"] > 1_000
        assert not list(tmp_path.glob("*.tmp"))
    finally:
        process.kill()
        process.wait()


def _written(tag: str, resident_mib: float) -> dict:
    return {"tag": tag, "seconds": 1.0, "resident": resident_mib * 2**20, "malloc_in_use": 0, "malloc_free": 0,
            "pymalloc": {"arenas": 0, "in_use": 0}, "python_objects": {"count": 1, "bytes": 1}, "parts": {},
            "by_type": {}, "large_by_holder": {}}
