"""The availability stage lets the event loop run its other tasks (the group's heartbeats, fetches, HTTP requests)
while it applies a chunk: between two ledger records, once it has held the loop LOOP_HOLD_SECONDS
(app.service.availability). Time here is a fake clock that each applied ledger record moves on."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from app.service import availability
from app.service.availability import LOOP_HOLD_SECONDS, LedgerBatchProcessor
from tests.service.test_write_back import Clock

SECONDS_PER_RECORD = 0.02


def ledger_records(count: int) -> list:
    return [SimpleNamespace(message=SimpleNamespace(value=b"record", offset=offset, partition=0))
            for offset in range(count)]


@pytest.fixture
def applied_records(monkeypatch) -> list[int]:
    """Offsets of the ledger records applied so far; applying one takes SECONDS_PER_RECORD of the fake clock."""
    clock = Clock()
    applied: list[int] = []
    monkeypatch.setattr(availability, "time", SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(availability, "read_ledger_record", lambda serde, value: [SimpleNamespace(ingest_time=1)])

    def apply_ledger_record(engine, items, offset):
        clock.now += SECONDS_PER_RECORD
        applied.append(offset)
        return [(items[0], object(), [])]  # an entry applied, with nothing to publish

    monkeypatch.setattr(availability, "apply_ledger_record", apply_ledger_record)
    return applied


def bare_processor() -> LedgerBatchProcessor:
    processor = LedgerBatchProcessor.__new__(LedgerBatchProcessor)
    processor._ledger = None
    processor._loop_held_since = availability.time.monotonic()
    return processor


def applied_while_another_task_runs(applied_records: list[int], *chunks: int) -> tuple[list, list[int]]:
    """Chunks of `chunks` ledger records applied in turn by one processor while another task runs whenever the loop
    lets it: what each `_apply` returned, and how many records were applied each time the other task ran."""
    seen: list[int] = []

    async def main() -> list:
        stop = asyncio.Event()

        async def other_task() -> None:
            while not stop.is_set():
                seen.append(len(applied_records))
                await asyncio.sleep(0)

        other = asyncio.create_task(other_task())
        await asyncio.sleep(0)  # it runs once before the first chunk
        processor = bare_processor()
        results = [await processor._apply(engine=None, events=ledger_records(count)) for count in chunks]
        stop.set()
        await other
        return results

    return asyncio.run(main()), seen


def test_a_long_chunk_lets_the_loop_run_between_ledger_records(applied_records):
    [(applied, ingest_times)], seen = applied_while_another_task_runs(applied_records, 10)
    assert applied == 10 and ingest_times == {1: 10} and applied_records == list(range(10))
    # 0.02 s per record against a 0.05 s hold: the loop runs before the 4th, 7th and 10th records, then at the end
    assert LOOP_HOLD_SECONDS == 0.05
    assert seen[:4] == [0, 3, 6, 9]


def test_a_short_chunk_applies_without_yielding(applied_records):
    _, seen = applied_while_another_task_runs(applied_records, 2)  # 0.04 s: below the hold
    assert seen == [0]  # before the chunk, and not while it is applied


def test_the_hold_carries_over_from_one_chunk_to_the_next(applied_records):
    # A chunk's end (its submit, a write-back) need not let the loop run, so the next chunk goes on counting.
    _, seen = applied_while_another_task_runs(applied_records, 2, 2)  # 0.06 s held before the 2nd chunk's 2nd record
    assert seen[:2] == [0, 3]
