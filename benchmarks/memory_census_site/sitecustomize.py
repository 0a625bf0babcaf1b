"""Run by Python at the start of each process with this directory on its PYTHONPATH (`python -m benchmarks.peak
--memory-census` puts it on the worker's): starts the memory census watcher (benchmarks/memory_census.py) when the
environment names a census directory."""

import os
import sys
from pathlib import Path

if os.environ.get("BENCHMARK_MEMORY_CENSUS_DIR"):
    sys.path.append(str(Path(__file__).resolve().parents[2]))  # the project, for `benchmarks` and `app`
    from benchmarks.memory_census import start_watching

    start_watching()
