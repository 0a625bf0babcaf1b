"""A replay process stopped by SIGTERM unwinds (exit 143, its `finally` blocks run), also when the signal arrives
while its gc callback (app.service.gc_pauses) runs, where Python drops what a handler raises."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

from app.service.gc_pauses import FullCollectionFreezer, inside_collection_callback

REPO_ROOT = Path(__file__).resolve().parents[2]

# SIGTERM arrives while a full collection's callback runs: gc.freeze, called by the callback, is made to send it.
STOPPED_INSIDE_THE_CALLBACK = textwrap.dedent("""
    import gc, os, signal, sys, time
    from app.replay.parallel import stop_on_terminate
    from app.service.gc_pauses import frozen_survivors

    def freeze_and_be_stopped():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # the handler runs here, inside the callback
            pass

    signal.signal(signal.SIGTERM, stop_on_terminate)
    gc.freeze = freeze_and_be_stopped
    try:
        with frozen_survivors():
            gc.collect()
            time.sleep(20)  # the signal sent again ends this
            print("went on")
    finally:
        print("unwound", flush=True)
""")


def test_sigterm_inside_the_collection_callback_still_stops_the_replay_process() -> None:
    completed = subprocess.run([sys.executable, "-c", STOPPED_INSIDE_THE_CALLBACK], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode == 128 + 15, completed.stdout + completed.stderr
    assert completed.stdout.split() == ["unwound"] and "Exception ignored" not in completed.stderr, completed.stderr


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
