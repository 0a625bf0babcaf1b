"""Figures of the fault-injection tests: `benchmarks/results/chaos.json`, one entry per test, merged (a test run
alone updates its own entry and keeps the others). docs/RELIABILITY.md summarises them."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "chaos.json"


def record_figures(test: str, figures: dict) -> None:
    try:
        results = json.loads(RESULTS_PATH.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        results = {}
    results.setdefault("machine", {})
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "broker": "embedded Tansu"}
    results.setdefault("tests", {})[test] = figures
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    temporary = RESULTS_PATH.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    temporary.replace(RESULTS_PATH)


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process, from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None
