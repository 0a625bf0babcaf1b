"""produce_or_wait: a record is handed over once, with exactly the options given, also after the local queue was
full (BufferError) and delivery callbacks were served for it to drain."""

from __future__ import annotations

import pytest

from app.kafka.producing import produce_or_wait


class QueueFullFor:
    """A producer whose local queue is full for the first `times` tries."""

    def __init__(self, times: int) -> None:
        self.full = times
        self.produced: list[tuple] = []
        self.polls: list[float] = []

    def produce(self, topic, value, key, **options) -> None:
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")
        self.produced.append((topic, value, key, options))

    def poll(self, timeout: float) -> int:
        self.polls.append(timeout)
        return 0


def on_delivery(error, message) -> None:
    pass


@pytest.mark.parametrize("full", [0, 1, 3])
@pytest.mark.parametrize("options", [
    {},
    {"headers": [("reason", b"X")]},
    {"partition": 2, "on_delivery": on_delivery},
])
def test_a_record_is_produced_once_with_its_options_however_often_the_queue_was_full(full, options):
    producer = QueueFullFor(full)
    produce_or_wait(producer, "topic", b"value", b"key", wait_seconds=0.01, **options)
    assert producer.produced == [("topic", b"value", b"key", options)]
    assert producer.polls == [0.01] * full  # callbacks served between tries, and only then
