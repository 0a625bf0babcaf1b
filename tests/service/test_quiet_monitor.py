"""The worker's Faust Monitor: silent per record, except for what Faust's own liveness check reads."""

from __future__ import annotations

from time import monotonic

from faust.types import TP

from app.service.runtime import QuietMonitor


def test_each_event_taken_by_a_stream_is_timed_for_fausts_liveness_check() -> None:
    """Faust logs "Stream has not started processing" as an ERROR for a partition whose stream never stamped this,
    every few seconds once stream_processing_timeout has passed: a false alarm on a worker that is keeping up."""
    monitor = QuietMonitor()
    ledger_3 = TP("ledger", 3)
    before = monotonic()
    monitor.on_stream_event_in(ledger_3, 41, stream=None, event=None)
    assert before <= monitor.stream_inbound_time[ledger_3] <= monotonic()
    assert TP("ledger", 4) not in monitor.stream_inbound_time
    # and nothing else is kept per record
    monitor.on_message_in(ledger_3, 41, message=None)
    assert monitor.events_total == 0 and monitor.messages_received_total == 0
