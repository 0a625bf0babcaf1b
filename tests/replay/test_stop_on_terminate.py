"""A replay process stopped by SIGTERM unwinds (exit 143, its `finally` blocks run), also when the signal arrives
while its gc callback (app.service.gc_pauses.frozen_survivors) runs, where Python drops what a handler raises; and
so does anything run under that callback stopped by Ctrl-C (SIGINT: a replay, reconcile's ledger pass)."""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from app.replay.parallel import stop_on_terminate
from app.service.gc_pauses import FullCollectionFreezer, frozen_survivors, inside_collection_callback

REPO_ROOT = Path(__file__).resolve().parents[2]

def stopped_inside_the_callback(signal_name: str, handler: str) -> str:
    """A program that installs `handler` for `signal_name`, then sends itself that signal while a full collection's
    callback runs (gc.freeze, which the callback calls, is made to send it)."""
    return textwrap.dedent(f"""
        import gc, os, signal, sys, time
        from app.replay.parallel import stop_on_terminate
        from app.service.gc_pauses import frozen_survivors

        def freeze_and_be_stopped():
            os.kill(os.getpid(), signal.{signal_name})
            for _ in range(10_000):  # the handler runs here, inside the callback
                pass

        signal.signal(signal.{signal_name}, {handler})
        gc.freeze = freeze_and_be_stopped
        try:
            with frozen_survivors():
                gc.collect()
                time.sleep(20)  # the signal sent again ends this
                print("went on")
        finally:
            print("unwound", flush=True)
    """)


def run(program: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_sigterm_inside_the_collection_callback_still_stops_the_replay_process() -> None:
    completed = run(stopped_inside_the_callback("SIGTERM", "stop_on_terminate"))
    assert completed.returncode == 128 + 15, completed.stdout + completed.stderr
    assert completed.stdout.split() == ["unwound"] and "Exception ignored" not in completed.stderr, completed.stderr


def test_ctrl_c_inside_the_collection_callback_still_interrupts() -> None:
    completed = run(stopped_inside_the_callback("SIGINT", "signal.default_int_handler"))
    assert completed.returncode == -signal.SIGINT, completed.stdout + completed.stderr  # KeyboardInterrupt, unhandled
    assert completed.stdout.split() == ["unwound"] and "Exception ignored" not in completed.stderr, completed.stderr


def test_the_handlers_are_the_callers_again_after_the_block() -> None:
    previous = signal.signal(signal.SIGTERM, stop_on_terminate)
    previous_interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the test runner set
    try:
        with frozen_survivors():
            assert signal.getsignal(signal.SIGTERM).wrapped is stop_on_terminate
            assert signal.getsignal(signal.SIGINT).wrapped is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is stop_on_terminate
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_interrupt)


def test_a_frame_is_inside_the_callback_only_while_the_freezer_runs() -> None:
    frames: list = []
    freezer = FullCollectionFreezer()
    original = gc.freeze
    gc.freeze = lambda: frames.append(sys._getframe())
    try:
        freezer("stop", {"generation": 2})
    finally:
        gc.freeze = original
    assert inside_collection_callback(frames[0].f_back)  # the freezer's own frame
    assert not inside_collection_callback(sys._getframe())
    assert not inside_collection_callback(None)
