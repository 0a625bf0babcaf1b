"""The heap trimmer after write-backs: at most once per interval, and harmless where there is nothing to call."""

from __future__ import annotations

import platform

import pytest

from app.service.heap_trim import HeapTrimmer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_trims_at_most_once_per_interval() -> None:
    clock, calls = Clock(), []
    trimmer = HeapTrimmer(min_interval_seconds=1.0, clock=clock, trim=lambda pad: calls.append(pad) or 1)
    trimmer()
    clock.now += 0.5
    trimmer()  # too soon
    clock.now += 0.6
    trimmer()
    assert calls == [0, 0] and trimmer.trims == 2


def test_without_malloc_trim_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.service.heap_trim._malloc_trim", lambda: None)
    trimmer = HeapTrimmer()
    trimmer()
    assert not trimmer.available and trimmer.trims == 0


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_the_real_malloc_trim_runs_here() -> None:
    trimmer = HeapTrimmer()
    garbage = [bytearray(4096) for _ in range(10_000)]  # 40 MiB through malloc, then freed
    del garbage
    trimmer()
    assert trimmer.available and trimmer.trims == 1 and trimmer.seconds >= 0
