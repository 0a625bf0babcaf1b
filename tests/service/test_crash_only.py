"""An unexpected error in a batch ends the worker (so a restart redelivers the batch); bad input never does."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from app.service import runtime as service_runtime


def _event(topic: str, partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition, offset=offset))


def test_batch_positions_names_every_partition_span():
    events = [_event("ledger", 1, 7), _event("ledger", 0, 3), _event("ledger", 1, 5), _event("ledger", 0, 4)]
    assert service_runtime.batch_positions(events) == "ledger[0]@3-4, ledger[1]@5-7"


def test_unexpected_error_ends_the_process_with_the_batch_positions_logged(monkeypatch, caplog):
    exits = []

    def fake_exit(status):
        exits.append(status)
        raise SystemExit(status)

    monkeypatch.setattr(service_runtime.os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        with service_runtime.end_worker_on_unexpected_error("apply_ledger", [_event("ledger", 2, 40)]):
            raise RuntimeError("boom")
    assert exits == [service_runtime.EXIT_AGENT_CRASHED]
    assert "ledger[2]@40-40" in caplog.text and "apply_ledger" in caplog.text


def test_a_batch_without_error_does_not_end_the_process(monkeypatch):
    monkeypatch.setattr(service_runtime.os, "_exit", lambda status: pytest.fail("worker ended"))
    with service_runtime.end_worker_on_unexpected_error("apply_ledger", [_event("ledger", 0, 1)]):
        pass
