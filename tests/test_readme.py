"""What README.md tells a new user about the machine is true: where the command is, where the broker binary goes,
which documents exist."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
README = (PROJECT_ROOT / "README.md").read_text()
MAKE_VARIABLES = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "TEST_PROCESSES", "PYTEST_ARGS"}


def environment_outside_make() -> dict[str, str]:
    """This process's environment without the variables of a make the suite may run under (`make test
    TEST_PROCESSES=4` passes its own on to any make started inside it)."""
    return {name: value for name, value in os.environ.items() if name not in MAKE_VARIABLES}


def test_read_next_links_every_document() -> None:
    linked = set(re.findall(r"\(docs/([A-Z_]+\.md)\)", README))
    present = {path.name for path in (PROJECT_ROOT / "docs").glob("*.md")}
    assert present <= linked, f"README's Read next misses {sorted(present - linked)}"


def test_the_command_is_where_the_readme_says() -> None:
    assert "`.venv/bin/availability`" in README
    command = PROJECT_ROOT / ".venv" / "bin" / "availability"
    if Path(sys.prefix).resolve() != (PROJECT_ROOT / ".venv").resolve():
        pytest.skip(f"the tests run from {sys.prefix}, not from the project's .venv (make test uses it)")
    result = subprocess.run([".venv/bin/availability", "--help"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert command.is_file() and result.returncode == 0, result.stderr
    assert "usage: availability" in result.stdout


def test_the_broker_binary_is_copied_where_the_readme_says(monkeypatch) -> None:
    from app.kafka.broker import resolve_tansu_binary

    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    written = re.search(r"`~/(\.calfkit/bin)/tansu-<version>`", README)
    assert written, "README no longer says where the broker binary goes"
    binary = Path(resolve_tansu_binary())
    assert binary.parent == Path.home() / written[1] and binary.name.startswith("tansu-")


def pytest_line_of_make(*arguments: str) -> list[str]:
    """The pytest command line that `make test ARGUMENTS` runs, as make prints it without running it (`make -n`)."""
    printed = subprocess.run(["make", "-n", "test", *arguments], cwd=PROJECT_ROOT, env=environment_outside_make(),
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    [line] = [line for line in printed.stdout.splitlines() if " -m pytest " in line]
    return shlex.split(line)


def test_make_test_runs_the_suite_in_two_processes_or_in_one_as_the_readme_says() -> None:
    assert "`make test TEST_PROCESSES=0` runs it in one" in README and "in two processes" in README
    assert pytest_line_of_make()[-4:] == ["-n", "2", "--dist", "loadfile"]
    in_one = pytest_line_of_make("TEST_PROCESSES=0")
    assert in_one[-4:] == ["-n", "0", "--dist", "loadfile"]
    if Path(sys.prefix).resolve() != (PROJECT_ROOT / ".venv").resolve():
        pytest.skip(f"the tests run from {sys.prefix}, not from the project's .venv (make test uses it)")
    # The line as make would run it, up to collecting the default suite (running it here would run this test again).
    collected = subprocess.run([*in_one, "--collect-only", "-q"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                               timeout=120)
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    # "856/891 tests collected (35 deselected)": the default filter of pyproject.toml applies
    summary = re.search(r"^\d{3,}/\d+ tests collected \(\d+ deselected\)", collected.stdout, flags=re.M)
    assert summary, collected.stdout[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_make_test_in_one_process_runs_as_written() -> None:
    """The README's `make test TEST_PROCESSES=0`, run as written: the whole default suite in one process (17-18
    minutes on 2 cores), hence `-m slow`; the default suite checks its pytest line instead (above)."""
    [command] = re.findall(r"`(make test TEST_PROCESSES=0)`", README)
    completed = subprocess.run(["bash", "-c", command], cwd=PROJECT_ROOT, env=environment_outside_make(),
                               capture_output=True, text=True, timeout=3500)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert " -n 0 " in completed.stdout and "workers [" not in completed.stdout  # pytest-xdist's "2 workers [N items]"
    assert re.search(r"=+ \d{3,} passed", completed.stdout), completed.stdout[-3000:]
