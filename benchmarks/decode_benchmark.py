"""CPU per ledger entry of decoding the availability stage's ledger, and per record of encoding its availability
records: fastavro against the compiled decoder and encoders.

    python -m benchmarks.decode_benchmark [--events 100000] [--repeats 3]

The ledger is the one `benchmarks.service_throughput` produces for the peak workload's mix (`ledger_of_workload`,
8 partitions), built in this process. Each way decodes every record of it, best of `--repeats`, in the same run:
- fastavro: what `RecordSerde.decode` did before the compiled decoder, `fastavro.schemaless_reader` on a BytesIO
  with `return_record_name=True, return_record_name_override=True`;
- compiled: `RecordSerde.decode` itself, whose records of its own schema id go through app/wire/avro_decoder.py.
Both must give the same values (checked) and the figures are process CPU time per ledger entry.

Reading: the same records read into what the engine applies, each entry's event and origin, alternated, best of
`--repeats`: from the dicts (`RecordSerde.decode`, `ledger_items`, `event_from_record`), as the stage did before,
against straight from the bytes (`app.wire.ledger.read_ledger_record`, which builds the movements and commands
without their dicts); the events must be equal (checked).

Encoding: the availability records the engine publishes for that ledger (`LedgerApplier`, the stage's own loop),
each encoded by `fastavro.schemaless_writer` (what the codec falls back to) and by `RecordSerde.encode` (the
compiled encoders of app/wire/avro_encoder.py), best of `--repeats`; the bytes must be equal (checked). And each
availability output encoded as the stage once did, `to_record()` then the compiled encoder, against the encoder that
reads the output's fields (app/wire/output_encoders.py), alternated, best of `--repeats`. Result in
benchmarks/results/decode.json ($BENCHMARK_RESULTS_DIR where it is set).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from typing import Any

import fastavro

from app.engine import ChannelAvailability, event_from_record
from app.replay.applying import LedgerApplier
from app.settings import Settings
from app.wire.ledger import item_event, ledger_items, read_ledger_record
from app.wire.output_encoders import availability_encoder
from app.wire.serialization import HEADER_SIZE, AvroCodec
from app.wire.topics import LEDGER, availability_topic
from benchmarks.report import results_dir
from benchmarks.service_throughput import ledger_of_workload, with_offsets

INGEST_TIME = 1_767_225_600_000  # 2026-01-01, ms: a six-byte varint like a live ingest time


def fastavro_decode(schema: dict) -> Callable[[bytes], dict]:
    """`RecordSerde.decode` of its own schema id before the compiled decoder (`schema`: the parsed writer schema)."""

    def decode(data: bytes) -> dict:
        buffer = io.BytesIO(data)
        buffer.seek(HEADER_SIZE)
        value = fastavro.schemaless_reader(buffer, schema, None, return_record_name=True,
                                           return_record_name_override=True)
        if buffer.tell() != len(data):
            raise ValueError("trailing bytes")
        return value

    return decode


def best_cpu(decode: Callable[[Any], object], values: list, repeats: int) -> float:
    """Each value is dropped once decoded, as the stage does: keeping them all would time the garbage collector
    walking them."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        for value in values:
            decode(value)
        best = min(best, time.process_time() - started)
    return best


def availability_outputs(settings: Settings, serde, ledger: list) -> list[ChannelAvailability]:
    """Every availability change the engine publishes for `ledger`, in order."""
    applier = LedgerApplier(serde, frozenset(settings.channels), settings.engine_limits)
    outputs = []
    for partition, offset, value in with_offsets(ledger):
        outputs += [output for _, output in applier.apply(partition, offset, value)
                    if type(output) is ChannelAvailability]
    return outputs


def measure_encoding(settings: Settings, codec: AvroCodec, ledger: list, repeats: int) -> dict:
    outputs = availability_outputs(settings, codec.serde(LEDGER), ledger)
    records = [(output.channel, output.to_record()) for output in outputs]
    serdes = {channel: codec.serde(availability_topic(channel)) for channel in settings.channels}
    from_outputs = {channel: availability_encoder(serde) for channel, serde in serdes.items()}
    schema = codec.schemas.parsed(availability_topic(settings.channels[0]).value_record)

    def by_fastavro(channel_record: tuple[str, dict]) -> bytes:
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, schema, channel_record[1])
        return buffer.getvalue()

    def compiled(channel_record: tuple[str, dict]) -> bytes:
        return serdes[channel_record[0]].encode(channel_record[1])

    def dict_then_compiled(output: ChannelAvailability) -> bytes:  # what the stage did before the object encoders
        return serdes[output.channel].encode(output.to_record())

    def from_output(output: ChannelAvailability) -> bytes:  # what the stage and replay do (app/wire/output_encoders.py)
        return from_outputs[output.channel](output)

    for output, channel_record in zip(outputs, records):
        if compiled(channel_record)[HEADER_SIZE:] != by_fastavro(channel_record):
            raise RuntimeError("the compiled encoder and fastavro disagree on an availability record")
        if from_output(output) != compiled(channel_record):
            raise RuntimeError("the encoder of outputs and the compiled encoder disagree on an availability record")
    fastavro_seconds = best_cpu(by_fastavro, records, repeats)
    compiled_seconds = best_cpu(compiled, records, repeats)
    # alternated, each the best of its passes: the two ways the stage can encode an output
    dict_seconds = output_seconds = float("inf")
    for _ in range(repeats):
        dict_seconds = min(dict_seconds, best_cpu(dict_then_compiled, outputs, 1))
        output_seconds = min(output_seconds, best_cpu(from_output, outputs, 1))
    return {"availability_records": len(records),
            "fastavro_us_per_record": round(fastavro_seconds / len(records) * 1e6, 3),
            "compiled_us_per_record": round(compiled_seconds / len(records) * 1e6, 3),
            "speedup": round(fastavro_seconds / compiled_seconds, 2),
            "to_record_then_compiled_us_per_output": round(dict_seconds / len(outputs) * 1e6, 3),
            "from_output_us_per_output": round(output_seconds / len(outputs) * 1e6, 3),
            "from_output_speedup": round(dict_seconds / output_seconds, 2)}


def measure_reading(serde, values: list[bytes], entries: int, repeats: int) -> dict:
    def from_dicts(value: bytes) -> None:
        for item in ledger_items(serde.decode(value).value):
            event_from_record(item.record_name, item.record), item.origin

    def from_bytes(value: bytes) -> None:
        for item in read_ledger_record(serde, value):
            item_event(item), item.origin

    for value in values:
        expected = [event_from_record(item.record_name, item.record)
                    for item in ledger_items(serde.decode(value).value)]
        read = [item_event(item) for item in read_ledger_record(serde, value)]
        if read != expected:
            raise RuntimeError("the events read from the bytes and from the dicts differ")
    dicts_seconds = bytes_seconds = float("inf")
    for _ in range(repeats):
        dicts_seconds = min(dicts_seconds, best_cpu(from_dicts, values, 1))
        bytes_seconds = min(bytes_seconds, best_cpu(from_bytes, values, 1))
    return {"events_from_dicts_us_per_entry": round(dicts_seconds / entries * 1e6, 3),
            "events_from_bytes_us_per_entry": round(bytes_seconds / entries * 1e6, 3),
            "speedup": round(dicts_seconds / bytes_seconds, 2)}


def measure(events: int, repeats: int) -> dict:
    settings = Settings(partitions=8)
    codec = AvroCodec(settings)
    serde = codec.serde(LEDGER)
    ledger, entries = ledger_of_workload(settings, codec, events, INGEST_TIME)
    values = [value for _, _, value in ledger]
    by_fastavro = fastavro_decode(codec.schemas.parsed(LEDGER.value_record))
    fastavro_seconds = best_cpu(by_fastavro, values, repeats)
    compiled_seconds = best_cpu(serde.decode, values, repeats)
    decoded = 0
    for value in values:
        compiled = serde.decode(value).value
        if compiled != by_fastavro(value):
            raise RuntimeError("the compiled decoder and fastavro disagree on the ledger")
        decoded += len(ledger_items(compiled))
    if decoded != entries:
        raise RuntimeError(f"the decoded ledger holds {decoded} entries, {entries} were written")
    return {"events": events, "ledger_records": len(values), "ledger_entries": entries,
            "megabytes": round(sum(map(len, values)) / 1e6, 2), "repeats": repeats,
            "fastavro_us_per_entry": round(fastavro_seconds / entries * 1e6, 3),
            "compiled_us_per_entry": round(compiled_seconds / entries * 1e6, 3),
            "speedup": round(fastavro_seconds / compiled_seconds, 2),
            "reading": measure_reading(serde, values, entries, repeats),
            "encoding": measure_encoding(settings, codec, ledger, repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = measure(args.events, args.repeats)
    print(f"{result['ledger_entries']} ledger entries in {result['ledger_records']} records "
          f"({result['megabytes']} MB), best of {result['repeats']}: fastavro {result['fastavro_us_per_entry']} us, "
          f"compiled {result['compiled_us_per_entry']} us per entry ({result['speedup']}x)")
    reading = result["reading"]
    print(f"read into events and origins, best of {result['repeats']}: from the dicts "
          f"{reading['events_from_dicts_us_per_entry']} us, straight from the bytes "
          f"{reading['events_from_bytes_us_per_entry']} us per entry ({reading['speedup']}x)")
    encoding = result["encoding"]
    print(f"{encoding['availability_records']} availability records, best of {result['repeats']}: fastavro "
          f"{encoding['fastavro_us_per_record']} us, compiled {encoding['compiled_us_per_record']} us per record "
          f"({encoding['speedup']}x); from the outputs: {encoding['to_record_then_compiled_us_per_output']} us "
          f"through to_record(), {encoding['from_output_us_per_output']} us straight "
          f"({encoding['from_output_speedup']}x)")
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode.json").write_text(json.dumps({"benchmark": "decode", **result}, indent=2) + "\n")


if __name__ == "__main__":
    main()
