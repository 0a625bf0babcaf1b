"""The `availability replay | verify | snapshot` commands: confirmation, progress, and what is printed.

app/tools/cli.py parses the arguments and hands them here; the work is done by replay.py, verify.py and snapshot.py.
"""

from __future__ import annotations

import signal
import sys
import time
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from app.errors import UserError
from app.replay.namespace import LIVE, output_topics
from app.replay.parallel import replay, stop_on_terminate
from app.replay.replay import ReplayOptions, ReplaySummary, parse_offsets
from app.replay.snapshot import take_snapshot
from app.replay.verify import verify

if TYPE_CHECKING:
    import argparse

    from app.settings import Settings

EXIT_DIFFERENT = 1


class ConfirmationRefused(UserError):
    """Writing the live topics was not confirmed: pass --yes, or type the namespace `live` when asked."""


def parse_time(text: str) -> int:
    """Milliseconds since the epoch, or an ISO-8601 time (`2024-06-01T12:00:00+00:00`; naive means UTC)."""
    if text.lstrip("-").isdigit():
        return int(text)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        from datetime import timezone

        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def confirm_live(args: argparse.Namespace, console: Console) -> None:
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationRefused("--to-live writes the live topics; confirm with --yes")
    console.print("[bold red]This replay writes the LIVE output topics[/] that connectors and order management "
                  "read.")
    answer = console.input(f"Type [bold]{LIVE}[/] to go on: ").strip()
    if answer != LIVE:
        raise ConfirmationRefused(f"not confirmed (typed {answer!r}); nothing was written")


@contextmanager
def progress_display(console: Console, enabled: bool):
    """Yields a progress callback: a rich bar with ledger records read, events/s and time left (None when
    disabled)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("replaying ledger records"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:>9,.0f} events/s"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("replay", total=None, rate=0.0)
        started = time.monotonic()

        def update(done: int, expected: int, events: int) -> None:
            elapsed = time.monotonic() - started
            progress.update(task, completed=done, total=max(expected, done) or None,
                            rate=events / elapsed if elapsed > 0 else 0.0)

        yield update


def print_replay_summary(console: Console, summary: ReplaySummary) -> None:
    table = Table(title=f"replay into namespace {summary.namespace}", show_edge=False)
    table.add_column("output topic")
    table.add_column("records", justify="right")
    for topic, count in sorted(summary.records.items()):
        table.add_row(topic, f"{count:,}")
    console.print(table)
    rejections = ", ".join(f"{reason} {count:,}" for reason, count in sorted(summary.rejections.items()))
    processes = f" with {summary.processes} processes" if summary.processes > 1 else ""
    console.print(f"{summary.events:,} ledger entries from {len(summary.partitions)} partitions in "
                  f"{summary.seconds:.1f}s{processes} ({summary.events_per_second:,.0f} events/s); "
                  f"at most {summary.peak_disk_mib:,.1f} MiB on disk; rejections: {rejections or 'none'}",
                  highlight=False)
    if not summary.from_earliest:
        console.print("started after the earliest offset on fresh state: compare with the live topics only if "
                      "the ledger before the start holds nothing", style="yellow")


def run_replay_command(args: argparse.Namespace, settings: Settings, bootstrap_servers: str) -> int:
    console = Console(stderr=False)
    namespace = LIVE if args.to_live else args.namespace
    if args.to_live:
        confirm_live(args, console)
    options = ReplayOptions(
        namespace=namespace, confirmed_live=args.to_live,
        from_time_ms=parse_time(args.from_time) if args.from_time else None,
        from_offsets=parse_offsets(args.from_offsets) if args.from_offsets else None,
        idle_seconds=args.idle, clock_ticks=args.clock_ticks, processes=args.processes,
    )
    replayer_topics = ", ".join(spec.name for spec in output_topics(settings, namespace).values())
    console.print(f"replaying ledger on {bootstrap_servers} into {replayer_topics}")
    previous = signal.signal(signal.SIGTERM, stop_on_terminate)  # a replay stopped by SIGTERM cleans up too
    try:
        with progress_display(console, enabled=not args.quiet) as on_progress:
            summary = replay(settings, bootstrap_servers, options, on_progress=on_progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_replay_summary(console, summary)
    return 0


def run_verify_command(args: argparse.Namespace, settings: Settings, bootstrap_servers: str) -> int:
    report = verify(settings, bootstrap_servers, args.a, args.b, topics=args.topic or None, limit=args.limit,
                    idle_seconds=args.idle)
    for topic, (count_a, count_b) in report.records.items():
        print(f"{topic}: {report.keys[topic]} keys; {count_a} records in {args.a}, {count_b} in {args.b}")
    for difference in report.differences:
        print(f"DIFF {difference}")
    if report.equal:
        print(f"equal: {args.a} and {args.b} hold the same records per key")
        return 0
    shown = len(report.differences)
    print(f"{report.difference_count} differences between {args.a} and {args.b}"
          + (f" (first {shown} shown; --limit for more)" if shown < report.difference_count else ""))
    return EXIT_DIFFERENT


def run_snapshot_command(args: argparse.Namespace, settings: Settings, bootstrap_servers: str) -> int:
    console = Console(stderr=True)  # the bar on stderr, the summary alone on stdout
    with reading_progress(console, f"reading availability.{args.channel}", enabled=console.is_terminal) as update:
        summary = take_snapshot(settings, bootstrap_servers, args.channel, namespace=args.namespace,
                                on_progress=update)
    offsets = ",".join(f"{partition}:{offset}" for partition, offset in sorted(summary.channel_offsets.items()))
    print(f"snapshot {summary.snapshot_id}: {summary.keys} keys of {summary.source_topic} "
          f"({summary.records_read} records read) published to {summary.snapshot_topic} in {summary.seconds:.1f}s; "
          f"covers {summary.source_topic} up to {offsets or 'nothing'}")
    return 0


@contextmanager
def reading_progress(console: Console, label: str, enabled: bool):
    """Yields `update(done, expected)` for a rich bar of records read (None when disabled: not a terminal)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task(label, total=None)

        def update(done: int, expected: int) -> None:
            progress.update(task, completed=done, total=max(expected, done) or None)

        yield update
