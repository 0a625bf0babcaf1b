"""`replay()`: a replay in this process, or in several (`availability replay --processes N`), the ledger partitions
shared among them and each share replayed by a Replayer of its own.

Why processes: a replay is one Python thread that decodes, applies and encodes every entry, so one core bounds it
(`benchmarks/results/replay.md`). Ledger partitions are independent (each has its own engine on its own state), so
N processes, each replaying a share of them, go up to N times as fast where N cores are free.

What stays the same: each ledger partition is read, applied and written by one process, in offset order, by the
same loop, with one request in flight per broker. Every key of an availability topic belongs to one SKU and so to
one ledger partition: its records come out in the same order with the same bytes, which is what the equivalence
and `availability verify` compare. What may differ: how the records of different ledger partitions interleave
within an output partition. They have no order relative to each other (docs/CONTRACT.md), and two runs of the live
service interleave them differently too.

Partition p goes to process p mod N (round-robin over the partitions replayed), so a process's share is fixed by N.
The processes are spawned, not forked (the parent holds librdkafka clients, whose threads do not survive a fork).
If one fails, the others are stopped and the replay fails with its error.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import time
import traceback
from typing import TYPE_CHECKING

from app.errors import UserError
from app.replay.namespace import create_namespace_topics
from app.replay.replay import ProgressCallback, Replayer, ReplayError, ReplaySummary

if TYPE_CHECKING:
    from app.replay.replay import ReplayOptions
    from app.settings import Settings
    from app.wire.serialization import AvroCodec

POLL_SECONDS = 0.5


def shares(partitions: list[int], processes: int) -> list[list[int]]:
    """The partitions of each process: the i-th of the sorted partitions goes to process i mod N; no empty share."""
    ordered = sorted(partitions)
    return [ordered[index::processes] for index in range(min(processes, len(ordered)))]


def replay(settings: Settings, bootstrap_servers: str, options: ReplayOptions,
           on_progress: ProgressCallback | None = None, codec: AvroCodec | None = None) -> ReplaySummary:
    """Replay the ledger as `options` say, with `options.processes` processes; raises ReplayError if it could not
    be done (a process's error, records not delivered)."""
    parent = Replayer(settings, bootstrap_servers, options, codec, on_progress)  # checks the options first
    if options.processes == 1:
        return parent.run()
    create_namespace_topics(settings, bootstrap_servers, parent.topics.values())
    return _run_in_processes(parent)


def _run_in_processes(parent: Replayer) -> ReplaySummary:
    options = parent.options
    started = time.monotonic()
    parts = shares(parent.ledger_partitions(), options.processes)
    if len(parts) <= 1:  # one partition (or none): one process does it, this one
        return Replayer(parent.settings, parent.bootstrap_servers, options, parent.codec, parent.on_progress,
                        partitions=parts[0] if parts else ()).run()
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    processes = [
        context.Process(target=_replay_share, name=f"replay-{index}", daemon=True,
                        args=(parent.settings, parent.bootstrap_servers, options, share, index, messages))
        for index, share in enumerate(parts)
    ]
    for process in processes:
        process.start()
    try:
        done = _gather(parent, processes, parts, messages, started)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(10)
    return _merged(options, [summary for summary, _ in done.values()],
                   max(finished - (summary.seconds - summary.busy_seconds) for summary, finished in done.values())
                   - started, time.monotonic() - started)


def _gather(parent: Replayer, processes: list, parts: list[list[int]], messages,
            started: float) -> dict[int, tuple[ReplaySummary, float]]:
    """Each process's summary and when it arrived, passing the processes' progress on, added up, as it comes."""
    progress = {index: (0, 0, 0) for index in range(len(processes))}
    done: dict[int, tuple[ReplaySummary, float]] = {}
    last_report = 0.0
    while len(done) < len(processes):
        try:
            message = messages.get(timeout=POLL_SECONDS)
        except queue.Empty:
            for index, process in enumerate(processes):
                if index not in done and not process.is_alive() and messages.empty():
                    raise ReplayError(f"the replay process of ledger partitions {_named(parts[index])} ended "
                                      f"(exit code {process.exitcode}) without a summary")
            continue
        kind, index, *body = message
        if kind == "progress":
            progress[index] = tuple(body)
        elif kind == "done":
            done[index] = (body[0], time.monotonic())
        else:
            raise ReplayError(f"replaying ledger partitions {_named(parts[index])}: {body[0]}")
        now = time.monotonic()
        if parent.on_progress is not None and (now - last_report >= POLL_SECONDS or len(done) == len(processes)):
            last_report = now
            parent.on_progress(*(sum(values) for values in zip(*progress.values())))
    return done


def _replay_share(settings: Settings, bootstrap_servers: str, options: ReplayOptions, share: list[int], index: int,
                  messages) -> None:
    """In a replay process: its share of the partitions, its progress and then its summary (or error) to the
    parent."""
    def progress(done: int, expected: int, events: int) -> None:
        messages.put(("progress", index, done, expected, events))

    signal.signal(signal.SIGTERM, stop_on_terminate)  # the parent stops the others when one fails
    try:
        summary = Replayer(settings, bootstrap_servers, options, on_progress=progress, partitions=share).run()
    except SystemExit:
        raise  # stopped: nobody is listening any more
    except UserError as error:
        messages.put(("error", index, str(error)))
    except BaseException:  # anything else: the parent reports it, with where it came from
        messages.put(("error", index, traceback.format_exc(limit=-3).strip()))
    else:
        messages.put(("done", index, summary))


def stop_on_terminate(signum: int, _frame) -> None:
    """SIGTERM handler of a replay process: unwind as an exit does, so that the replay's `finally` blocks delete
    what it kept on disk (app/replay/kept_on_disk.py); the default action ends the process where it stands. The
    replay runs it outside its gc callback, where what it raises would be dropped (app.service.gc_pauses)."""
    raise SystemExit(128 + signum)


def _merged(options: ReplayOptions, summaries: list[ReplaySummary], busy_seconds: float,
            seconds: float) -> ReplaySummary:
    """One summary of the processes' summaries. Its durations are the parent's: from before the processes started
    to the last one's end (`seconds`), and to the end of the last one's work, its quiet wait at the end of the
    ledger excluded (`busy_seconds`)."""
    merged = ReplaySummary(options.namespace, options.from_earliest, processes=len(summaries))
    for summary in summaries:
        merged.events += summary.events
        merged.ledger_records += summary.ledger_records
        merged.records.update(summary.records)
        merged.rejections.update(summary.rejections)
        merged.partitions.update(summary.partitions)
        merged.peak_rss_mib += summary.peak_rss_mib
        merged.peak_disk_mib += summary.peak_disk_mib
    merged.partitions = dict(sorted(merged.partitions.items()))
    merged.peak_rss_mib = round(merged.peak_rss_mib, 1)
    merged.peak_disk_mib = round(merged.peak_disk_mib, 1)
    merged.seconds = seconds
    merged.busy_seconds = busy_seconds
    return merged


def _named(partitions: list[int]) -> str:
    return ", ".join(map(str, partitions))
