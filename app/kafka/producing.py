"""One way to hand a record to librdkafka (confluent-kafka's Producer) when its local queue may be full."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Producer


def produce_or_wait(producer: Producer, topic: str, value: bytes | None, key: bytes | None = None, *,
                    partition: int | None = None, headers=None, on_delivery: Callable | None = None,
                    wait_seconds: float = 0.05) -> None:
    """`producer.produce(...)`, retried while the local queue is full (BufferError), serving delivery callbacks
    for `wait_seconds` between tries so that the queue drains. `partition` None: the producer's partitioner."""
    if partition is None and headers is None and on_delivery is None:  # the common case: no options to build
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(wait_seconds)
    options = {} if partition is None else {"partition": partition}
    if headers is not None:
        options["headers"] = headers
    if on_delivery is not None:
        options["on_delivery"] = on_delivery
    while True:
        try:
            producer.produce(topic, value, key, **options)
            return
        except BufferError:
            producer.poll(wait_seconds)
