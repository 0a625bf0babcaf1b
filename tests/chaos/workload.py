"""The seeded workload of the fault-injection tests, sent to the source topics in waves so that faults can be
injected between (or during) them.

Events come from the engine benchmark's realistic generator (Zipf-popular SKUs, stores and DCs, four channels,
sales, receipts, returns, adjustments, counts, transfers, and ~20% reservation commands that race for stock).
Stock movements travel in bulk `StockMovementBatch` records (as a WMS/ERP feed does: fast to produce even for a
million events); reservation commands one per record; the policy first. Clock ticks of the generator are dropped:
only the service appends ticks to the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from app.engine import ClockTick, ReservationCommand, StockMovement, event_to_record, validate
from app.engine.reservations import answerable
from app.wire.topics import POLICY_CHANGES, RESERVATION_COMMANDS, STOCK_MOVEMENTS
from benchmarks.engine_benchmark import StreamGenerator, build_policy
from tests.service.harness import SourceProducer, read_topic

CHAOS_CHANNELS = ("ecommerce", "marketplace", "store-pickup", "wholesale")  # the generator's policy has these four
MOVEMENTS_PER_BATCH = 500


@dataclass
class Workload:
    """A generator of waves; remembers every event it sent that reaches the ledger (the checker's oracle computes
    the expected outputs from these, once each: tests.service.scenario.ledger_of_sent_events). Invalid ones are only
    counted: the ingest stage dead-letters them before the ledger."""

    seed: int = 20240601
    sku_count: int = 300
    store_count: int = 20
    dc_count: int = 2
    locations_per_sku: int = 4
    sent: dict[str, object] = field(default_factory=dict)  # event id -> the event, as sent
    sent_events: int = 0
    invalid_events_sent: int = 0

    def __post_init__(self) -> None:
        self._generator = StreamGenerator(self.seed, self.sku_count, self.store_count, self.dc_count,
                                          self.locations_per_sku)
        self.policy = build_policy(self.store_count, self.dc_count)

    # -- what goes out ---------------------------------------------------------------------------------------

    def send_policy(self, source: SourceProducer) -> None:
        source.send(POLICY_CHANGES.name, event_to_record(self.policy)[1], key="policy")
        source.flush()
        self.record(self.policy)

    def record(self, *events) -> None:
        """Events sent outside the waves (probes) that the ledger must hold."""
        for event in events:
            self.sent[event.event_id] = event

    def send_seed_stock(self, source: SourceProducer) -> int:
        """Every SKU received at each of its locations: the stock the rest of the stream draws on."""
        return self._send(source, self._generator.seed_stock())

    def send_wave(self, source: SourceProducer, events: int) -> int:
        """`events` generated events (fewer by the dropped clock ticks); returns how many were sent."""
        return self._send(source, self._generator.events(events))

    def _send(self, source: SourceProducer, events: list) -> int:
        movements: list[StockMovement] = []
        sent = 0
        for event in events:
            if type(event) is ClockTick:
                continue
            if type(event) is StockMovement:
                movements.append(event)
                if len(movements) == MOVEMENTS_PER_BATCH:
                    self._send_batch(source, movements)
                    movements = []
            else:
                assert type(event) is ReservationCommand
                source.send(RESERVATION_COMMANDS.name, event_to_record(event)[1], key=event.reservation_id)
            if validate(event) is None or (type(event) is ReservationCommand and answerable(event)):
                self.record(event)  # a malformed command with a usable id is decided on the ledger
            else:  # the generator makes a few (transfers to their own location): ingest dead-letters them
                self.invalid_events_sent += 1
            sent += 1
            if sent % 50_000 == 0:
                source.flush()  # librdkafka's queue holds 100,000 messages: never let a big wave overflow it
        if movements:
            self._send_batch(source, movements)
        source.flush()
        self.sent_events += sent
        return sent

    @staticmethod
    def _send_batch(source: SourceProducer, movements: list[StockMovement]) -> None:
        source.send(STOCK_MOVEMENTS.name, {"movements": [event_to_record(m)[1] for m in movements]},
                    key=movements[0].sku)


def waves(total_events: int, wave_size: int) -> Iterator[int]:
    """Wave sizes that add up to `total_events`."""
    while total_events > 0:
        yield min(wave_size, total_events)
        total_events -= wave_size


def wait_for_outputs(bootstrap_servers: str, topic: str, partitions: int, at_least: int, timeout: float = 120.0):
    """Block until `topic` holds `at_least` records: "the stream is flowing" before a fault is injected."""
    return read_topic(bootstrap_servers, topic, partitions, until=lambda records: len(records) >= at_least,
                      idle_seconds=0, timeout=timeout)
