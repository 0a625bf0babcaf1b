"""`availability benchmark` hands its options to `python -m benchmarks.peak` (no benchmark runs here)."""

from __future__ import annotations

import pytest

import benchmarks.peak
from app.tools.cli import main


def test_benchmark_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--help"])
    assert exit_info.value.code == 0
    assert "--profile" in capsys.readouterr().out


def test_benchmark_passes_profile_target_and_results_dir(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    received = []
    monkeypatch.setattr(benchmarks.peak, "main", lambda argv: received.append(argv) or 0)
    assert main(["benchmark", "--profile", "peak", "--target-rate", "12000", "--results-dir", str(tmp_path)]) == 0
    assert received == [["--profile", "peak", "--target-rate", "12000.0", "--topology", "all",
                          "--results-dir", str(tmp_path)]]


def test_benchmark_passes_the_split_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    received = []
    monkeypatch.setattr(benchmarks.peak, "main", lambda argv: received.append(argv) or 0)
    assert main(["benchmark", "--topology", "split", "--ingest-per-worker", "2"]) == 0
    assert received == [["--profile", "quick", "--target-rate", "50000.0", "--topology", "split",
                         "--ingest-per-worker", "2"]]


def test_benchmark_rejects_an_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--profile", "huge"])
    assert exit_info.value.code == 2
