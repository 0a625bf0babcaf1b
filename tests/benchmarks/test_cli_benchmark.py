"""`availability benchmark` hands its options to `python -m benchmarks.peak` (no benchmark runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

import app.tools.cli
from app.tools.cli import main


def test_benchmark_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--help"])
    assert exit_info.value.code == 0
    assert "--profile" in capsys.readouterr().out


def test_benchmark_passes_profile_target_and_results_dir(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    received = []
    monkeypatch.setattr(app.tools.cli, "run_benchmark_module", lambda root, argv: received.append(argv) or 0)
    assert main(["benchmark", "--profile", "peak", "--target-rate", "12000", "--results-dir", str(tmp_path)]) == 0
    assert received == [["--profile", "peak", "--target-rate", "12000.0", "--topology", "all",
                          "--results-dir", str(tmp_path)]]


def test_benchmark_passes_the_split_topology(monkeypatch: pytest.MonkeyPatch) -> None:
    received = []
    monkeypatch.setattr(app.tools.cli, "run_benchmark_module", lambda root, argv: received.append(argv) or 0)
    assert main(["benchmark", "--topology", "split", "--ingest-per-worker", "2"]) == 0
    assert received == [["--profile", "quick", "--target-rate", "50000.0", "--topology", "split",
                         "--ingest-per-worker", "2"]]


def test_benchmark_rejects_an_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--profile", "huge"])
    assert exit_info.value.code == 2


def test_the_benchmark_module_runs_from_the_checkout_whatever_the_working_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path, capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no benchmarks/ here: the module must be found in the checkout
    root = Path(app.tools.cli.__file__).resolve().parents[2]
    assert app.tools.cli.run_benchmark_module(root, ["--help"]) == 0
    assert "--profile" in capfd.readouterr().out
