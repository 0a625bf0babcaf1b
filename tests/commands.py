"""Run `availability ...` as a user does: a separate process, an environment without the developer's settings.

`run_cli(...)` runs a command to its end; `RunningCommand` starts a long-running one (connect, demo, tail), collects
its output lines as they come, lets a test wait for a line (never for a fixed time), and always ends the process
(SIGINT first, then SIGKILL) even when the test fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "app.tools.cli"]  # what the `availability` console script runs


def cli_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any AVAILABILITY_* or KAFKA_BOOTSTRAP_SERVERS variable, plus `env`."""
    environment = {
        name: value for name, value in os.environ.items()
        if not name.upper().startswith("AVAILABILITY_") and name.upper() != "KAFKA_BOOTSTRAP_SERVERS"
    }
    environment.update(env or {})
    return environment


def run_cli(*arguments: str, env: dict[str, str] | None = None, timeout: float = 60,
            cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *arguments], cwd=cwd, env=cli_environment(env), capture_output=True, text=True,
                          timeout=timeout)


class RunningCommand:
    """`with RunningCommand("connect", "--channel", "ecommerce", env=...) as command:` ...

    stdout and stderr are read by threads into `stdout_lines` / `stderr_lines`; `wait_for_line(pattern)` returns
    the first line matching it or fails the test with everything printed so far."""

    def __init__(self, *arguments: str, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT,
                 merge_stderr: bool = False) -> None:
        self.arguments = arguments
        self.process = subprocess.Popen(
            [*CLI, *arguments], cwd=cwd, env=cli_environment(env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE, text=True,
        )
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._changed = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(self.process.stdout, self.stdout_lines),
                                          daemon=True)]
        if not merge_stderr:
            self._readers.append(threading.Thread(target=self._read, args=(self.process.stderr, self.stderr_lines),
                                                  daemon=True))
        for reader in self._readers:
            reader.start()

    def _read(self, stream, lines: list[str]) -> None:
        for line in iter(stream.readline, ""):
            with self._changed:
                lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(["--- stdout", *self.stdout_lines, "--- stderr", *self.stderr_lines])

    def wait_for_line(self, pattern: str, timeout: float, stream: str = "any") -> str:
        """The first line of `stream` ("stdout", "stderr", "any") that matches the regex `pattern`."""
        expression = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                sources = {"stdout": [self.stdout_lines], "stderr": [self.stderr_lines]}.get(
                    stream, [self.stdout_lines, self.stderr_lines])
                for lines in sources:
                    for line in lines:
                        if expression.search(line):
                            return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.process.poll() is not None and not any(r.is_alive() for r in self._readers)):
                    break
                self._changed.wait(min(remaining, 0.5))
        raise AssertionError(f"no line matching {pattern!r} within {timeout}s from `availability "
                             f"{' '.join(self.arguments)}` (exit status {self.process.poll()}):\n{self.output}")

    def interrupt(self, timeout: float = 30) -> int:
        """SIGINT (Ctrl-C), then the exit status; fails the test if the process does not end within `timeout`."""
        self.process.send_signal(signal.SIGINT)
        try:
            status = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`availability {' '.join(self.arguments)}` still runs {timeout}s after SIGINT:\n"
                                 f"{self.output}") from None
        for reader in self._readers:
            reader.join(timeout=5)
        return status

    def __enter__(self) -> RunningCommand:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for reader in self._readers:  # they end at EOF, which the process's end brings
            reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
