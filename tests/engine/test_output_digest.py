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
from benchmarks.engine_benchmark import CHANNELS, SEED, StreamGenerator, build_policy

# (events, locations per SKU, SKUs, stores) -> (outputs digest, states digest). The state digests changed with
# SkuState format 2 (the per-SKU entry history for explanations); the output digests did not: same records.
PINNED = {
    (20_000, 20, 300, 300): (
        "60a413f7c887d787aa9c7d42e0ec1a177cd806e54d719cd16bcc64eddd0a1486",
        "c75b6d5b80429747b5bf70915db6c68180a0c1abfee5d5d660e7123d3faa27fe",
    ),
    (5_000, 305, 20, 300): (  # every location stocked: sourcing walks the policy's order
        "eeca9261fa334c162f51feb9385d225aaf374d9c45936e47f888b225c6289ceb",
        "fe476230d4e3320f33f36e7f43224883a2d68935475d44c9fb873e5898caa3dd",
    ),
}


def _ledger(events: int, locations_per_sku: int, sku_count: int, store_count: int) -> list:
    generator = StreamGenerator(SEED, sku_count, store_count, 5, locations_per_sku)
    return [build_policy(store_count, 5), *generator.seed_stock(), *generator.events(events)]


def _run(store, ledger: list) -> tuple[str, str]:
    engine = PartitionEngine(0, store, CHANNELS)
    outputs = hashlib.sha256()
    for offset, event in enumerate(ledger):
        for output in engine.apply(event, offset):
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
