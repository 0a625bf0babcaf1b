"""Every `availability replay | verify | snapshot` line of docs/REPLAY.md runs exactly as written (through bash, with
the settings in the environment as a user's shell would have them), on a generated ledger whose live topics were
filled by a replay to live first, so that `verify live ...` has something to agree with."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.harness import settings_environment

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO_ROOT = Path(__file__).resolve().parents[2]


def documented_lines() -> list[str]:
    """The `availability replay|verify|snapshot` lines of docs/REPLAY.md's code blocks, comments after `  #` dropped,
    in the order given."""
    lines = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", (REPO_ROOT / "docs/REPLAY.md").read_text(), flags=re.S):
        for line in block.splitlines():
            command = line.split("  #", 1)[0].strip()
            if command.startswith(("availability replay", "availability verify", "availability snapshot")):
                lines.append(command)
    return lines


def run_at_once(commands: list[str], environment: dict[str, str]) -> dict[str, subprocess.CompletedProcess]:
    started = {command: subprocess.Popen(["bash", "-c", command], cwd=REPO_ROOT, env=environment, text=True,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
               for command in commands}
    outcomes = {}
    try:
        for command, process in started.items():
            stdout, stderr = process.communicate(timeout=180)
            outcomes[command] = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    finally:
        for process in started.values():  # ours, still running only when the test failed
            if process.poll() is None:
                process.kill()
                process.wait()
    return outcomes


def test_the_documented_replay_commands_run_as_written(replayed, bootstrap_servers):
    lines = documented_lines()
    assert len(lines) == 10, lines
    environment = {**settings_environment(replayed),  # the console script of this environment, as a user has it
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    fill_live = "availability replay --to-live --yes --quiet"
    setup = run_at_once([fill_live], environment)[fill_live]
    assert setup.returncode == 0, setup.stderr

    # The replays at once (each writes a namespace of its own), then the reading commands (verify, snapshot) at once:
    # they read what the replays wrote, and mostly wait for quiet topics.
    outcomes = run_at_once([line for line in lines if line.startswith("availability replay")], environment)
    outcomes.update(run_at_once([line for line in lines if not line.startswith("availability replay")], environment))
    for command, completed in outcomes.items():
        if command == "availability replay --to-live":  # not a terminal: it cannot ask, so it refuses
            assert completed.returncode == 2 and "--yes" in completed.stderr, completed.stderr
            continue
        assert completed.returncode == 0, f"{command}: {completed.stdout[-2000:]}{completed.stderr[-2000:]}"

    assert "with 2 processes" in outcomes["availability replay --name audit2 --processes 2"].stdout
    assert "equal: audit1 and audit2" in outcomes["availability verify audit1 audit2"].stdout
    assert "equal: live and audit1" in outcomes["availability verify live audit1"].stdout
    beyond_the_end = outcomes["availability replay --name p3 --from-offsets 3:120000"].stdout
    assert "0 ledger entries from 0 partitions" in beyond_the_end, beyond_the_end
    noon = outcomes["availability replay --name from-noon --from-time 2024-06-01T12:00:00+00:00"].stdout
    assert "started after the earliest offset" in noon
    assert re.search(r"snapshot \S+: \d+ keys of availability\.ecommerce\.replay-audit1",
                     outcomes["availability snapshot ecommerce --from audit1"].stdout)
