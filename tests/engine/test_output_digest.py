"""Pins the engine's exact outputs and state bytes for a small seeded benchmark stream.

Performance work on the engine must not change behaviour: the same ledger must give byte-identical records, and
the same state must encode to the same bytes. A change of these digests is a change of behaviour (or of the state
format, which needs a new format byte): update them only on purpose, and say why.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from app.engine import EncodingStore, MemoryStore, PartitionEngine, encode_partition_state, encode_sku_state
from app.engine.positions import ledger_position
from benchmarks.engine_benchmark import CHANNELS, SEED, StreamGenerator, build_policy

# (events, locations per SKU, SKUs, stores) -> (outputs digest, states digest). The state digests changed with
# SkuState format 2 (the per-SKU entry history for explanations); the output digests did not: same records. Both
# changed with ledger positions (records gained `ledger_index`; states hold positions, offset * 2**20 + index): the
# engine applied at raw offsets, with `ledger_index` dropped, still gave the digests pinned before. The state digests
# changed again with format 3 (finished reservations and event ids kept beside the SKU states, applied source
# positions inside them); the output digests did not. Both changed when facts stopped being refused: the stream's
# 476 transfers received without a shipment on record, refused INSUFFICIENT_IN_TRANSIT before, are applied (in-transit
# below zero, 492 NEGATIVE_IN_TRANSIT exceptions) and publish 905 more availability records; nothing else differs.
# Both changed again with the `fallbacks` field of ChannelAvailability (empty here: no feed rule) and partition state
# format 2 (feeds seen); with that field left out, the outputs give the digests pinned before. The output digests
# changed when a RESERVATION_NOT_ACTIVE dead letter began to say how its reservation ended ("RELEASE: it ended
# EXPIRED" for "RELEASE"; 180 and 7 such records here); with that text cut at the colon, they give the digests before.
PINNED = {
    (20_000, 20, 300, 300): (
        "998de5f81707029a57b88cdacbd91c42d16df4986d624875ae26897ebfa37365",
        "cb3da62509f2ec843eefa5d5a0db6ee5e6760c73fcdffe16615779ccb5a45f11",
    ),
    (5_000, 305, 20, 300): (  # every location stocked: sourcing walks the policy's order
        "fa3c45450ffaa97df76a8e1cdc33517323dec1d57ab19f83d0f08b7d74a40b73",
        "a89d74f2d67ca492f4b64f56d18714dadc62ba40586dcacd53a3116b15c732f8",
    ),
}


def _ledger(events: int, locations_per_sku: int, sku_count: int, store_count: int) -> list:
    generator = StreamGenerator(SEED, sku_count, store_count, 5, locations_per_sku)
    return [build_policy(store_count, 5), *generator.seed_stock(), *generator.events(events)]


def _run(store, ledger: list) -> tuple[str, str]:
    engine = PartitionEngine(0, store, CHANNELS)
    outputs = hashlib.sha256()
    for offset, event in enumerate(ledger):
        for output in engine.apply(event, ledger_position(offset)):
            line = json.dumps([type(output).__name__, output.key, output.to_record()], separators=(",", ":"))
            outputs.update(line.encode() + b"\n")
    states = hashlib.sha256()
    for sku in store.skus():
        states.update(encode_sku_state(store.get_sku_state(sku)) + b"\n")
    states.update(encode_partition_state(store.get_partition_state()))
    return outputs.hexdigest(), states.hexdigest()


@pytest.mark.parametrize("shape", sorted(PINNED))
def test_benchmark_stream_outputs_and_states_are_pinned(shape):
    assert _run(MemoryStore(), _ledger(*shape)) == PINNED[shape]


def test_benchmark_stream_through_the_codec_gives_the_same_digests():
    ledger = _ledger(events=3_000, locations_per_sku=8, sku_count=60, store_count=40)
    assert _run(EncodingStore(), ledger) == _run(MemoryStore(), ledger)
