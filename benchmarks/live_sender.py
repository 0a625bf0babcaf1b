"""The live run's sender: pre-encoded records sent with librdkafka at their scheduled times, in a process of its own.

On 2 cores the sender, the broker, the ingest processes and the workers share the machine, so sending must cost
little and be measured apart: the records are encoded (and their partitions computed) before the run starts, and
this process only hands them to a confluent-kafka Producer when they are due, every record due by now at once
(a tick of at most TICK_SECONDS; the records of a tick share their send time), so a send costs a `produce()` call
and librdkafka does the rest in C. Its CPU seconds are its own process's, read by the benchmark from /proc.

`LiveSender(directory, bootstrap, records, due).start()` writes the records to a file and starts
`python -m benchmarks.live_sender DIR BOOTSTRAP [LINGER_MS]`, which connects, says `ready`, and starts the schedule when told
`go` on its standard input; `sent()` reads how many records are out so far (a counter the sender keeps in a
memory-mapped file); `stop()` tells it `stop` (or finds it done), and returns each sent record's send time
(wall-clock ms, the CreateTime librdkafka stamps at `produce()`).
"""

from __future__ import annotations

import json
import mmap
import pickle
import struct
import subprocess
import sys
import threading
import time
from array import array
from pathlib import Path

TICK_SECONDS = 0.005  # librdkafka's default linger: sending sooner would not reach the broker sooner
DEFAULT_LINGER_MS = 5  # librdkafka's default, as a retailer's producers would have it
_COUNTER = struct.Struct("<q")


def send_schedule(directory: Path, bootstrap: str, linger_ms: int = DEFAULT_LINGER_MS) -> None:
    """The sender process: records and send times from `directory`, progress to its counter file."""
    from confluent_kafka import Producer

    from app.kafka.producing import produce_or_wait

    with open(directory / "records.pickle", "rb") as file:
        records, due = pickle.load(file)
    failures: list[str] = []

    def delivered(error, _message) -> None:
        failures.append(str(error))

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 2 * 1024 * 1024,
                         # a callback for failed records only: one per record would cost more than the send
                         "delivery.report.only.error": True, "on_delivery": delivered})
    producer.list_topics(timeout=30)  # connected before the clock starts
    counter_file = open(directory / "sent.counter", "r+b")
    counter = mmap.mmap(counter_file.fileno(), _COUNTER.size)
    stop = threading.Event()
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return

    def wait_for_stop() -> None:
        sys.stdin.readline()  # "stop", or the end of the input when the benchmark goes away
        stop.set()

    threading.Thread(target=wait_for_stop, daemon=True).start()
    poll = producer.poll
    sent_ms = array("d")
    origin = time.monotonic()
    wall_origin = time.time() * 1000
    index, total = 0, len(records)
    while index < total and not stop.is_set():
        elapsed = time.monotonic() - origin
        now_ms = wall_origin + elapsed * 1000
        while index < total and due[index] <= elapsed:
            topic, key, value, partition = records[index]
            produce_or_wait(producer, topic, value, key, partition=partition, wait_seconds=0.01)
            sent_ms.append(now_ms)
            index += 1
        _COUNTER.pack_into(counter, 0, index)
        poll(0)
        if index < total:
            wait = due[index] - (time.monotonic() - origin)
            if wait > 0:
                time.sleep(min(wait, TICK_SECONDS))  # pacing to the schedule
    undelivered = producer.flush(120)
    with open(directory / "sent_ms.bin", "wb") as file:
        sent_ms.tofile(file)
    print(json.dumps({"start_ms": wall_origin, "sent": index, "undelivered": undelivered,
                      "failures": failures[:3]}), flush=True)


class LiveSender:
    """The sender process of one live run: `records` are (topic, key, value, partition), `due` their send times in
    seconds from the start, ascending. Its files live in `directory`."""

    def __init__(self, directory: Path, bootstrap: str, records: list[tuple[str, bytes, bytes, int]],
                 due: list[float], linger_ms: int = DEFAULT_LINGER_MS) -> None:
        self.directory = directory
        self.linger_ms = linger_ms
        self._bootstrap = bootstrap
        self._records = records
        self._due = due
        self.process: subprocess.Popen | None = None
        self._counter: mmap.mmap | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        """Start the process, wait until it is connected, then start the schedule."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "records.pickle", "wb") as file:
            pickle.dump((self._records, self._due), file, protocol=pickle.HIGHEST_PROTOCOL)
        (self.directory / "sent.counter").write_bytes(bytes(_COUNTER.size))
        with open(self.directory / "sender.log", "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.live_sender", str(self.directory), self._bootstrap,
                 str(self.linger_ms)],
                cwd=Path(__file__).resolve().parents[1], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                text=True)
        if self.process.stdout.readline().strip() != "ready":  # blocks until it is connected, or has exited
            self.kill()
            raise RuntimeError(f"the live sender did not start (log {self.directory / 'sender.log'})")
        counter_file = open(self.directory / "sent.counter", "rb")
        self._counter = mmap.mmap(counter_file.fileno(), _COUNTER.size, access=mmap.ACCESS_READ)
        counter_file.close()
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def sent(self) -> int:
        return _COUNTER.unpack_from(self._counter, 0)[0] if self._counter is not None else 0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, timeout: float) -> None:
        """Until the sender process ends, at most `timeout` seconds."""
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass

    def stop(self, timeout: float = 180.0) -> dict:
        """Stop sending (the records sent are flushed first); returns {"sent_ms": array, "start_ms", ...}."""
        try:
            self.process.stdin.write("stop\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):  # it is done already
            pass
        line = self.process.stdout.readline()
        self.process.wait(timeout)
        if not line:
            raise RuntimeError(f"the live sender ended without a report (log {self.directory / 'sender.log'})")
        result = json.loads(line)
        if result["undelivered"] or result["failures"]:
            raise RuntimeError(f"live sender: {result['undelivered']} records not delivered; {result['failures']}")
        sent_ms = array("d")
        with open(self.directory / "sent_ms.bin", "rb") as file:
            sent_ms.frombytes(file.read())
        result["sent_ms"] = sent_ms
        return result

    def kill(self) -> None:
        """End the process if it still runs (a failed run); idempotent."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self._counter is not None:
            self._counter.close()
            self._counter = None


if __name__ == "__main__":
    send_schedule(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else DEFAULT_LINGER_MS)
