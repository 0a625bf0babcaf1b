"""The `availability reconcile` and `availability preview` commands: arguments checked before any broker is asked,
progress on a terminal, reports, and the exit status. app/tools/cli.py parses the arguments and hands them here."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from app.errors import UserError
from app.operations.export import read_export
from app.replay.commands import parse_time, reading_progress

if TYPE_CHECKING:
    import argparse

    from app.settings import Settings

EXIT_AGREE = 0
EXIT_DRIFTS = 1
EXIT_NOT_COMPARED = 4  # added to the status when some rows could not be compared


class OperationsArgumentError(UserError):
    """An argument of reconcile or preview cannot be used; the message names it."""


def writable_report_path(option: str, given: str | None) -> Path | None:
    """The report file of `option`, once its directory is known to exist and be writable (checked up front, so a
    long run never ends on a path it cannot write)."""
    if given is None:
        return None
    path = Path(given)
    directory = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OperationsArgumentError(f"{option} {given}: is a directory; give a file name")
    if not directory.is_dir():
        raise OperationsArgumentError(f"{option} {given}: the directory {directory} does not exist")
    if not os.access(directory, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OperationsArgumentError(f"{option} {given}: not writable")
    return path


def as_of_time(text: str, settings: Settings) -> int:
    try:
        as_of = parse_time(text)
    except ValueError:
        raise OperationsArgumentError(f"--as-of {text!r} is neither milliseconds since the epoch nor an ISO-8601 "
                                      "time (e.g. 2026-01-05T10:00:00+00:00)") from None
    now = int(time.time() * 1000)
    if as_of > now + settings.engine_limits.max_event_time_skew_ms:
        raise OperationsArgumentError(f"--as-of {text} is in the future; the service only knows the past")
    if as_of < 0:
        raise OperationsArgumentError(f"--as-of {text} is before 1970")
    return as_of


def run_reconcile_command(args: argparse.Namespace, settings: Settings,
                          require_broker: Callable[[Settings, float], str]) -> int:
    from app.operations.reconcile import reconcile
    from app.operations.reconcile_report import print_report, write_csv, write_json

    export = Path(args.snapshot)
    as_of_ms = as_of_time(args.as_of, settings)
    json_path = writable_report_path("--json", args.json)
    csv_path = writable_report_path("--csv", args.csv)
    next(iter(read_export(export)), None)  # a missing file or header fails here, before the broker is asked
    bootstrap_servers = require_broker(settings, args.timeout)
    console = Console(stderr=True)  # the bar on stderr; the report alone on stdout
    with reading_progress(console, "ledger records read", enabled=console.is_terminal) as bar:
        update = None if bar is None else (lambda stage, done, expected: bar(done, expected))
        result = reconcile(settings, bootstrap_servers, export, as_of_ms, args.apply, on_progress=update)
    output = Console()
    if not output.is_terminal:
        output = Console(width=160)
    print_report(output, result, args.apply, args.limit)
    if json_path is not None:
        write_json(json_path, result, args.apply)
    if csv_path is not None:
        write_csv(csv_path, result, args.apply)
    comparison = result.comparison
    status = EXIT_DRIFTS if comparison.drifts else EXIT_AGREE
    return status + (EXIT_NOT_COMPARED if comparison.bad_rows else 0)


def read_candidate(path_text: str, settings: Settings):
    from app.operations.candidate_policy import CandidatePolicyError, parse_candidate

    path = Path(path_text)
    if not path.is_file():
        raise OperationsArgumentError(f"--policy {path_text}: no such file")
    try:
        return parse_candidate(path.read_bytes(), settings.channels)
    except CandidatePolicyError as error:
        raise CandidatePolicyError(f"{path_text}: {error}") from None


def run_preview_command(args: argparse.Namespace, settings: Settings,
                        require_broker: Callable[[Settings, float], str]) -> int:
    import json

    from app.operations.preview_report import print_preview
    from app.operations.preview_sources import preview_from_changelogs

    candidate = read_candidate(args.policy, settings)
    json_path = writable_report_path("--json", args.json)
    bootstrap_servers = require_broker(settings, args.timeout)
    console = Console(stderr=True)
    started = time.monotonic()
    with reading_progress(console, "reading the SKU states", enabled=console.is_terminal) as update:
        document, reading, computing = preview_from_changelogs(settings, bootstrap_servers, candidate, args.limit,
                                                               on_progress=update)
    output = Console()
    if not output.is_terminal:
        output = Console(width=160)
    print_preview(output, document, time.monotonic() - started)
    if json_path is not None:
        document = {**document, "seconds": {"reading": round(reading, 2), "computing": round(computing, 2)}}
        json_path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return 0
