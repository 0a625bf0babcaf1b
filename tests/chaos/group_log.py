"""What the workers' logs say of their consumer group: the joins and syncs, and the embedded broker's wedge.

Tansu (the embedded broker) can answer a group's joins with a leader that left while the group was rebalancing
(its LeaveGroup came before it rejoined): the members that are left join that generation again and again, none of
them leader, none able to sync, and every later generation keeps that leader, even after the group emptied and
new members joined. Apache Kafka removes a member at its LeaveGroup. Seen in 4 of 11 runs of an earlier version of
tests/chaos/test_membership_churn.py on a 2-core machine, each time when the leader left (docs/RELIABILITY.md).
"""

from __future__ import annotations

import re
import time

JOINS_OF_A_WEDGE = 3  # the same generation joined this many times in a row, never synced
JOINED = re.compile(r"Joined group '[^']+' \(generation (\d+)\)")
SYNCED = re.compile(r"synced group \S+ with generation (\d+)")
GROUP_LOG_LINE = re.compile(r"joining group|Joined group|synced group|Revoking|newly assigned|group leader|"
                            r"rebalanc|ingest process: (assigned|revoked)", re.IGNORECASE)


def group_events(log_text: str) -> list[tuple[str, int]]:
    """("joined" or "synced", generation), in the order of the log."""
    events = []
    for line in log_text.splitlines():
        if joined := JOINED.search(line):
            events.append(("joined", int(joined[1])))
        elif synced := SYNCED.search(line):
            events.append(("synced", int(synced[1])))
    return events


def wedged_generation(log_text: str) -> int | None:
    """The generation the log's worker has joined again and again without syncing it (the wedge above), if any."""
    last = group_events(log_text)[-JOINS_OF_A_WEDGE:]
    if len(last) == JOINS_OF_A_WEDGE and {kind for kind, _ in last} == {"joined"} and len(set(last)) == 1:
        return last[-1][1]
    return None


def synced_last_join(log_text: str) -> bool:
    events = group_events(log_text)
    return bool(events) and events[-1][0] == "synced"


def wait_for_settling(workers, timeout: float = 120.0) -> int | None:
    """Until every worker has synced the generation it last joined (None), or all keep joining one generation that
    none syncs (that generation: the wedge above). None at the timeout too, for the caller's own wait to report."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [worker.log_text() for worker in workers]
        wedged = {wedged_generation(text) for text in logs}
        if len(wedged) == 1 and None not in wedged:
            return wedged.pop()
        if all(synced_last_join(text) for text in logs):
            return None
        time.sleep(0.5)
    return None


def group_log_lines(settings, last: int = 25) -> str:
    """The worker log's last lines about its consumer groups (joins, syncs, assignments, rebalances)."""
    try:
        text = (settings.data_dir / "worker.log").read_text(errors="replace")
    except FileNotFoundError:
        return "(no worker.log)"
    lines = [line[:240] for line in text.splitlines() if GROUP_LOG_LINE.search(line)]
    return "\n".join(lines[-last:])
