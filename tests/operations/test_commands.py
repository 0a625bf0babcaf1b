"""`availability reconcile` and `availability preview` without a broker: help, one-line errors for what a user can
fix (checked before any broker is asked), and reconcile's exit statuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.operations import reconcile as reconcile_module
from app.operations.drift import Comparison, Drift
from app.operations.export import BadRow
from app.operations.reconcile import ReconcileRun
from app.tools.cli import main
from tests.commands import run_cli
from tests.tools.test_cli import assert_one_line_error

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPORT = str(REPO_ROOT / "docs" / "examples" / "onhand.csv")
CANDIDATE = REPO_ROOT / "docs" / "examples" / "candidate-policy.json"
NO_BROKER = {"KAFKA_BOOTSTRAP_SERVERS": ""}


@pytest.mark.parametrize("command, words", [
    ("reconcile", ("--snapshot", "--as-of", "--apply", "--json", "--csv", "--limit", "Exit status", "DAMAGED")),
    ("preview", ("--policy", "--json", "--limit", "PolicyChange.avsc", "POST /policy/preview")),
])
def test_help(command, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for word in words:
        assert word in text


@pytest.mark.parametrize("arguments, expected", [
    (["--snapshot", "absent.csv", "--as-of", "2026-01-05T06:00:00+00:00"], "absent.csv: no such file"),
    (["--snapshot", EXPORT, "--as-of", "yesterday"], "--as-of 'yesterday' is neither"),
    (["--snapshot", EXPORT, "--as-of", "2999-01-01T00:00:00+00:00"], "is in the future"),
    (["--snapshot", EXPORT, "--as-of", "0", "--json", "no/such/dir/drift.json"], "the directory no/such/dir"),
    (["--snapshot", EXPORT, "--as-of", "0", "--csv", "docs"], "is a directory"),
    (["--snapshot", EXPORT, "--as-of", "0"], "no Kafka broker configured"),  # everything else was fine
])
def test_reconcile_errors_are_one_line_and_come_before_the_broker(arguments, expected):
    assert_one_line_error(run_cli("reconcile", *arguments, env=NO_BROKER), expected)


def test_an_export_without_the_columns_is_one_line(tmp_path):
    export = tmp_path / "onhand.csv"
    export.write_text("item,store,qty\nA,S1,1\n")
    assert_one_line_error(run_cli("reconcile", "--snapshot", str(export), "--as-of", "0", env=NO_BROKER),
                          "lacks the column(s) sku, location, on_hand")


@pytest.mark.parametrize("change, expected", [
    (lambda policy: policy["channels"][1].update(share_bp="half"), 'channels[1].share_bp: expected an integer'),
    (lambda policy: policy.pop("version"), "version: missing"),
    (lambda policy: policy.update(colour="red"), "unknown field 'colour'"),
    (lambda policy: policy["channels"][0].update(granularity="GLOBAL"), '"GLOBAL" is not one of NETWORK, LOCATION'),
    (lambda policy: policy["channels"][0].update(channel="wholesale"), "channels without a topic here: wholesale"),
    (lambda policy: policy["channels"][0].update(share_bp=20000), "breaks a rule"),
])
def test_an_invalid_candidate_policy_is_one_line_naming_the_field(tmp_path, change, expected):
    policy = json.loads(CANDIDATE.read_text())
    change(policy)
    path = tmp_path / "candidate.json"
    path.write_text(json.dumps(policy))
    assert_one_line_error(run_cli("preview", "--policy", str(path), env=NO_BROKER), "candidate.json", expected)


def test_a_valid_candidate_reaches_the_broker_question():
    assert_one_line_error(run_cli("preview", "--policy", str(CANDIDATE), env=NO_BROKER),
                          "no Kafka broker configured")


def run_with(monkeypatch, drifts: int, bad_rows: int) -> int:
    comparison = Comparison(rows=5, compared=5 - bad_rows, agreeing=5 - bad_rows - drifts)
    comparison.drifts = [Drift(2 + index, "SKU-A", f"S{index}", "SELLABLE", 3, 1, None) for index in range(drifts)]
    comparison.bad_rows = [BadRow(9, "on_hand is missing")] * bad_rows
    monkeypatch.setattr(reconcile_module, "reconcile",
                        lambda *args, **kwargs: ReconcileRun("run", 0, comparison))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    monkeypatch.setattr("app.tools.cli.require_broker", lambda settings, timeout: "127.0.0.1:9")
    return main(["reconcile", "--snapshot", EXPORT, "--as-of", "0"])


@pytest.mark.parametrize("drifts, bad_rows, status", [(0, 0, 0), (2, 0, 1), (0, 1, 4), (2, 1, 5)])
def test_exit_status_says_drifts_and_rows_not_compared(monkeypatch, capsys, drifts, bad_rows, status):
    assert run_with(monkeypatch, drifts, bad_rows) == status
    output = capsys.readouterr().out
    assert f"{drifts} drift" in output and f"{bad_rows} not compared" in output


def test_a_ledger_trimmed_by_retention_is_refused(monkeypatch):
    class TrimmedLedger:
        low = {0: 0, 1: 120}
        starts = {0: 0, 1: 0}
        expected_records = 0

        def __init__(self, *args, **kwargs) -> None:
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc_info) -> None:
            pass

        def batches(self):
            raise AssertionError("nothing is applied from a trimmed ledger")

    from app.settings import Settings

    monkeypatch.setattr(reconcile_module, "PartitionsReader", TrimmedLedger)
    settings = Settings()
    with pytest.raises(reconcile_module.ReconcileError, match=r"ledger partitions 1 \(starts at offset 120\) lost"):
        reconcile_module.positions_as_of(settings, "127.0.0.1:9", AvroCodecStub(), 0, [0, 1])


class AvroCodecStub:
    def serde(self, topic):
        return None
