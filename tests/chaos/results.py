"""Figures of the fault-injection tests: the file CHAOS_RESULTS_FILE names (`make chaos` names
`benchmarks/results/chaos.json`), one entry per test, merged (a test run alone updates its own entry and keeps the
others). docs/RELIABILITY.md summarises them. Without CHAOS_RESULTS_FILE nothing is written: the poison-input test
also runs in the default suite, whose figures must not replace those of the suite's last run."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS_FILE_VARIABLE = "CHAOS_RESULTS_FILE"


def record_figures(test: str, figures: dict) -> None:
    if not os.environ.get(RESULTS_FILE_VARIABLE):
        return
    results_path = Path(os.environ[RESULTS_FILE_VARIABLE])
    try:
        results = json.loads(results_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        results = {}
    results.setdefault("machine", {})
    results["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "broker": "embedded Tansu"}
    results.setdefault("tests", {})[test] = figures
    results_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = results_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    temporary.replace(results_path)


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process, from /proc (None once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None
