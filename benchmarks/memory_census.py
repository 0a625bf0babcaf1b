"""What a worker's memory holds, counted inside the worker: Python's objects by type, the parts the service keeps
(decoded SKU states, kept records, partitioner memos, ledger records queued for the agent), which objects hold the
large byte strings (the records of the micro-batch being applied among them), and how full Python's small-object
arenas are. `/metrics` says how large the resident set, the C heap and RocksDB are; this says what the Python
objects in them are. The C libraries' own memory (RocksDB, librdkafka, uvloop) is not counted here
(docs/PERFORMANCE.md, "Where the live run's memory is").

`python -m benchmarks.peak --memory-census` puts `benchmarks/memory_census_site` on the main worker's PYTHONPATH and
names a directory DIR (`memory-census-<results name>/` in the results dir); the site's `sitecustomize` starts
`watch(DIR)` in a thread of the worker. The benchmark asks for a census by appending `<pid> <tag>` to DIR/request,
and the worker writes DIR/census-<pid>-<tag>.json. A census holds the GIL for 1-10 s (it walks every object): the
speed and latency figures of such a run are not ones to quote, and what it allocates itself shows in the C heap held
free afterwards.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

CENSUS_DIR_VARIABLE = "BENCHMARK_MEMORY_CENSUS_DIR"
REQUEST_FILE = "request"
SITE_DIR = Path(__file__).parent / "memory_census_site"
LARGE_BYTES = 512  # CPython allocates objects above this with malloc, not in its small-object arenas
# What the walk of a part goes through besides values, containers and the service's own objects (app.engine,
# tables); any other object ends it: a part's objects hold references to the app, the loop, shared policies, and
# without a stop the first part would claim the whole process.
_PART_TYPES = {"ConsumerRecord", "ConsumerMessage", "Event", "Message", "FinishedReservation"}
_CONTAINERS = (dict, list, tuple, set, frozenset, collections.deque, collections.OrderedDict)
_VALUES = (str, bytes, bytearray, int, float, type(None))


def census(tag: str) -> dict:
    """Everything this module counts, now, in this process."""
    from app.service.memory import allocator_bytes, resident_bytes

    started = time.perf_counter()
    head = {"tag": tag, "pid": os.getpid(), "resident": resident_bytes(), **allocator_bytes(),
            "pymalloc": pymalloc_arenas()}
    # frozen objects (app.service.gc_pauses) are not in gc.get_objects(): unfreeze for the count, freeze again
    gc.unfreeze()
    objects = gc.get_objects()
    gc.freeze()
    by_type: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    large_by_holder: collections.Counter = collections.Counter()
    untracked_seen: set[int] = set()
    roots: dict[str, list] = collections.defaultdict(list)
    for thing in objects:
        kind = type(thing).__qualname__
        by_type[kind] += _size(thing)
        count[kind] += 1
        for referent in gc.get_referents(thing):  # strings, bytes and numbers are not tracked: found through holders
            if gc.is_tracked(referent) or id(referent) in untracked_seen:
                continue
            untracked_seen.add(id(referent))
            size = _size(referent)
            by_type[type(referent).__qualname__] += size
            count[type(referent).__qualname__] += 1
            if size >= LARGE_BYTES:
                large_by_holder[f"{type(referent).__qualname__} in {kind}"] += size
        _note_root(thing, kind, roots)
    del untracked_seen
    _note_memos(roots)
    claimed: set[int] = set()
    parts = {name: _deep(roots[name], claimed) for name in sorted(roots, key=_part_order)}
    del objects, claimed
    return {**head, "seconds": round(time.perf_counter() - started, 2),
            "python_objects": {"count": sum(count.values()), "bytes": sum(by_type.values())},
            "parts": parts,
            "by_type": {kind: {"count": count[kind], "bytes": size} for kind, size in by_type.most_common(30)},
            "large_by_holder": dict(large_by_holder.most_common(15))}


def _size(thing) -> int:
    try:
        return sys.getsizeof(thing)
    except (TypeError, ValueError):  # a few C types refuse
        return 0


def _note_root(thing, kind: str, roots: dict[str, list]) -> None:
    module = getattr(type(thing), "__module__", "") or ""
    if kind == "PartitionStateStore":
        roots["decoded SKU states"].append(thing._sku_states)
        roots["kept records (seen ids, finished reservations)"].append(thing._kept)
    elif kind == "ThrowableQueue" and module.startswith("mode"):
        roots["queued ledger records (Faust stream buffers)"].append(thing._queue)


def _note_memos(roots: dict[str, list]) -> None:
    # only where the process has them: a census imports nothing of the service's it has not imported itself
    for module, name in (("app.kafka.batch_sender", "default_partition"), ("app.service.ingest", "_ledger_partition")):
        function = getattr(sys.modules.get(module), name, None)
        for cell in getattr(function, "__closure__", None) or ():
            if isinstance(cell.cell_contents, dict):
                roots["partitioner memos"].append(cell.cell_contents)


def _part_order(name: str) -> tuple[bool, str]:
    return (name != "decoded SKU states", name)  # the states first: what they hold is theirs


def _deep(roots: list, claimed: set[int]) -> dict:
    """Size of everything reachable from `roots` through containers and the service's own objects, each object
    counted in the first part that reaches it."""
    total, objects = 0, 0
    by_type: collections.Counter = collections.Counter()
    pending = [root for root in roots if root is not None]
    while pending:
        thing = pending.pop()
        if id(thing) in claimed or not _walked(thing):
            continue
        claimed.add(id(thing))
        size = _size(thing)
        total += size
        objects += 1
        by_type[type(thing).__qualname__] += size
        pending.extend(gc.get_referents(thing))
    return {"bytes": total, "objects": objects, "by_type": dict(by_type.most_common(8))}


def _walked(thing) -> bool:
    kind = type(thing)
    if isinstance(thing, _VALUES + _CONTAINERS) or kind.__name__ == "array":
        return True
    module = getattr(kind, "__module__", "") or ""  # of the rest, only the service's own objects and records
    return (module.startswith(("app.engine", "tables")) or kind.__name__ in _PART_TYPES) and not isinstance(
        thing, type)


def pymalloc_arenas() -> dict[str, int]:
    """CPython's small-object allocator: the arenas it holds and the bytes in use in them (sys._debugmallocstats,
    which writes to the C stderr, read back from a temporary file)."""
    with tempfile.TemporaryFile("w+") as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read()
    figures = {}
    for name, pattern in (("arenas", r"^Total\s*=\s*([\d,]+)"),
                          ("in_use", r"# bytes in allocated blocks\s*=\s*([\d,]+)"),
                          ("free_in_used_pools", r"# bytes in available blocks\s*=\s*([\d,]+)")):
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            figures[name] = int(found.group(1).replace(",", ""))
    return figures


def watch(directory: Path, poll_seconds: float = 0.5) -> None:
    """In a thread of the worker: take a census for each new `<this pid> <tag>` line in directory/request."""
    request = directory / REQUEST_FILE
    pid = str(os.getpid())
    done: set[str] = set()
    while True:
        time.sleep(poll_seconds)
        try:
            lines = request.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            target, _, tag = line.partition(" ")
            if target != pid or not tag or tag in done:
                continue
            done.add(tag)
            result = census(tag)
            path = directory / f"census-{pid}-{tag}.json"
            path.with_suffix(".tmp").write_text(json.dumps(result, indent=1))
            path.with_suffix(".tmp").replace(path)  # the benchmark never reads half a file


def start_watching() -> None:
    """From sitecustomize: watch the directory named by the environment, if it names one."""
    directory = os.environ.get(CENSUS_DIR_VARIABLE)
    if directory:
        threading.Thread(target=watch, args=(Path(directory),), name="memory-census", daemon=True).start()


@contextlib.contextmanager
def census_environment(directory: Path):
    """Within: processes started with a copy of os.environ (the benchmark harness's) watch `directory` for census
    requests (the census site first on their PYTHONPATH, the directory named)."""
    directory.mkdir(parents=True, exist_ok=True)
    saved = {name: os.environ.get(name) for name in ("PYTHONPATH", CENSUS_DIR_VARIABLE)}
    os.environ[CENSUS_DIR_VARIABLE] = str(directory)
    os.environ["PYTHONPATH"] = os.pathsep.join(path for path in (str(SITE_DIR), saved["PYTHONPATH"]) if path)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def request(directory: Path, pid: int, tag: str) -> Path:
    """Ask worker `pid` for a census tagged `tag`; the path its result will have."""
    with open(directory / REQUEST_FILE, "a") as requests:
        requests.write(f"{pid} {tag}\n")
    return directory / f"census-{pid}-{tag}.json"


class PhaseCensuses:
    """Asks one worker for a census when the resident set of the phase it is in reaches a new high: at a first
    scrape of the phase, then whenever the resident set is `min_growth_mib` above the phase's last census; at most
    once every `min_interval_seconds` whatever the phase (a census stops the worker for seconds). `scraped` is the
    memory sampler's callback (benchmarks.worker_metrics.MemorySampler: memory parts in MiB)."""

    def __init__(self, directory: Path, pid: int, min_growth_mib: float = 16.0,
                 min_interval_seconds: float = 20.0, clock=time.monotonic) -> None:
        self.directory = directory
        self._pid = pid
        self._min_growth = min_growth_mib
        self._min_interval = min_interval_seconds
        self._clock = clock
        self._last_at: float | None = None
        self.requested: dict[str, list[tuple[float, Path]]] = {}  # phase -> (resident MiB asked at, result path)

    def scraped(self, phase: str, memory: dict[str, float]) -> None:
        resident = memory.get("resident")
        if resident is None:
            return
        asked = self.requested.get(phase)
        now = self._clock()
        if self._last_at is not None and now - self._last_at < self._min_interval:
            return
        if asked and resident < asked[-1][0] + self._min_growth:
            return
        self._last_at = now
        tag = f"{phase}-{len(asked or ())}"
        self.requested.setdefault(phase, []).append((resident, request(self.directory, self._pid, tag)))

    def by_phase(self, wait_seconds: float = 30.0) -> dict[str, dict]:
        """Per phase, the summary of its census with the largest resident set; waits up to `wait_seconds` for
        censuses asked for and not written yet (a worker that stopped never writes its last ones)."""
        deadline = self._clock() + wait_seconds
        paths = [path for asked in self.requested.values() for _, path in asked]
        while any(not path.exists() for path in paths) and self._clock() < deadline:
            time.sleep(0.5)
        largest: dict[str, dict] = {}
        for phase, asked in self.requested.items():
            for _, path in asked:
                if path.exists():
                    result = json.loads(path.read_text())
                    if result["resident"] >= largest.get(phase, {}).get("resident", -1):
                        largest[phase] = result
        return {phase: summary(result) for phase, result in largest.items()}


def summary(result: dict) -> dict:
    """The figures of one census in MiB, for a benchmark's JSON."""
    mib = 2**20

    def in_mib(value: int | None) -> float | None:
        return None if value is None else round(value / mib, 1)

    return {
        "tag": result["tag"], "seconds": result["seconds"],
        "resident": in_mib(result.get("resident")), "malloc_in_use": in_mib(result.get("malloc_in_use")),
        "malloc_free": in_mib(result.get("malloc_free")),
        "pymalloc_arenas": in_mib(result["pymalloc"].get("arenas")),
        "pymalloc_in_use": in_mib(result["pymalloc"].get("in_use")),
        "python_objects": in_mib(result["python_objects"]["bytes"]),
        "parts": {name: in_mib(part["bytes"]) for name, part in result["parts"].items()},
        "largest_types": {kind: in_mib(entry["bytes"]) for kind, entry in list(result["by_type"].items())[:8]},
        "large_by_holder": {holder: in_mib(size) for holder, size in list(result["large_by_holder"].items())[:6]},
    }
