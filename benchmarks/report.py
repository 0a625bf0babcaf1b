"""Writes a peak benchmark result: <profile>.json (everything), <profile>.md (the tables docs/PERFORMANCE.md
explains) and <profile>.png (throughput, latency and lag over time of the live run; matplotlib, Agg backend). A run
of the `split` topology writes <profile>-split.*, so that it never replaces the default topology's files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from benchmarks.live_sender import DEFAULT_LINGER_MS

RESULTS_DIR = Path(__file__).resolve().parent / "results"
RESULTS_DIR_VARIABLE = "BENCHMARK_RESULTS_DIR"  # another directory for a run's results (the tests use it)


def results_dir() -> Path:
    """Where a benchmark writes its results: benchmarks/results, or $BENCHMARK_RESULTS_DIR where it is set."""
    return Path(os.environ.get(RESULTS_DIR_VARIABLE, RESULTS_DIR))


def results_name(result: dict) -> str:
    """`<profile>`, `-<topology>` unless `all`, `-memory-census` for a run with censuses (its speed figures are not
    ones to quote: never in place of a plain run's)."""
    topology = result.get("topology", "all")
    name = result["profile"] if topology == "all" else f"{result['profile']}-{topology}"
    return f"{name}-memory-census" if result.get("memory_census") else name


def write_results(result: dict, chart_data: dict | None, directory: Path, chart: bool = True) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    name = results_name(result)
    paths = [directory / f"{name}.json", directory / f"{name}.md"]
    paths[0].write_text(json.dumps(result, indent=2, default=str) + "\n")
    if chart and chart_data:
        png = directory / f"{name}.png"
        write_chart(chart_data, png, f"Live run ({result['profile']} profile, {result.get('topology', 'all')} "
                                     f"topology): {result['live']['steady_events_per_second']:,.0f} "
                                     f"events/s steady, {result['live']['burst_events_per_second']:,.0f} in the burst")
        paths.append(png)
        result = {**result, "chart": png.name}
    paths[1].write_text(markdown(result))
    return paths


def _n(value, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}{suffix}"
    return f"{round(value):,}{suffix}"


def _live_rate_line(live: dict) -> str:
    """The live run's rate while behind, against the backlog rate and its target (runs before it was measured have
    none; runs before the target was stored beside it show it as n/a)."""
    rate = live.get("live_rate_while_behind")
    if not rate:
        return "- live rate while behind: not measured in this run"
    target = rate.get("target_fraction_of_sustained_max")
    return (f"- live rate while behind: {_n(rate.get('events_per_second'))} events/s applied from the burst's start "
            f"over {_n(rate.get('window_seconds'), 1, ' s')} (to the {rate.get('window_end') or 'n/a'}), "
            f"{_times(rate.get('fraction_of_sustained_max'))} the sustained maximum (the target: {_times(target)})")


def _ratio(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _times(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


BASELINE_NAMES = {"quix": "Quix Streams app", "confluent": "plain confluent-kafka loop",
                  "faust": "bare Faust agent (consume only)"}


def topology_line(result: dict) -> str:
    """The header line that says which processes every figure comes from."""
    per_worker = result.get("ingest_processes_per_worker") or 0
    if result.get("topology", "all") == "all":
        return ("Topology `all`: each worker (`python -m app.service.worker`) runs both stages, ingest and "
                "availability; every figure per worker is per such process.")
    return (f"Topology `split`: each worker runs the availability stage only (`AVAILABILITY_STAGES=availability`), "
            f"and **{per_worker} ingest process{'es' if per_worker != 1 else ''} per worker** "
            f"(`python -m app.service.ingest_worker`) feed{'s' if per_worker == 1 else ''} the ledger. Figures "
            "*per worker* are per Faust (availability) worker, **not** per process: the column *processes* says "
            "what ran. *Ingest events/s* is the ingest stage's own rate (the section's events reaching the "
            "ledger). Restarts restart the worker alone; the ingest processes keep running.")


def _census_lines(result: dict) -> list[str]:
    """A run with memory censuses says so first, and what its worker held at each phase's largest census."""
    censuses = result.get("resources", {}).get("memory_census_by_phase_mib")
    if not result.get("memory_census") or censuses is None:
        return []
    lines = ["**A run with memory censuses** (`--memory-census`): each census stopped the worker for seconds, so "
             "its speed and latency figures are not ones to quote. The worker at the largest census of each phase "
             "(MiB):", "",
             "| phase | resident | C heap in use / held free | Python's arenas / in use | Python objects | decoded "
             "SKU states | kept records | partitioner memos |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for phase, figures in censuses.items():
        parts = figures["parts"]
        lines.append(
            f"| {phase} | {figures['resident']} | {figures['malloc_in_use']} / {figures['malloc_free']} | "
            f"{figures['pymalloc_arenas']} / {figures['pymalloc_in_use']} | {figures['python_objects']} | "
            f"{parts.get('decoded SKU states', 0)} | {parts.get('kept records (seen ids, finished reservations)', 0)} "
            f"| {parts.get('partitioner memos', 0)} |")
    return lines + [""]


def markdown(result: dict) -> str:
    lines = [f"# Peak benchmark: `{result['profile']}` profile, `{result.get('topology', 'all')}` topology", ""]
    machine = result["machine"]
    lines += [
        f"Python {machine['python']}, {machine['cpus']} CPUs, {machine['broker']}; {result['partitions']} partitions; "
        f"ledger records of up to {result.get('ledger_batch_max_entries', 'n/a')} events; "
        f"state write-back every {result.get('write_back_interval_seconds', 0)} s (0: after every chunk); "
        f"seed {result['seed']}; run took {result.get('duration_seconds', 'n/a')} s; load average (1/5/15 min) "
        f"{result.get('load_average_at_start')} at the start, {result.get('load_average_at_end')} at the end. The "
        "broker, the workers, the "
        "baselines and the benchmark share the machine: compare the ratios, not the absolute figures, across "
        "machines. `docs/PERFORMANCE.md` explains every figure.",
        "",
        topology_line(result),
        "",
        *_census_lines(result),
        "## Targets",
        "",
        "Each on a whole-section figure (first record sent to last event applied); per core = events per CPU second "
        "of the processes that did the work.",
        "",
        "| target | measured | threshold | met |",
        "|---|---:|---:|:---:|",
    ]
    for row in result["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[row["met"]]
        unit = row.get("unit")
        shown, threshold = (_times(row["measured"]), _times(row["threshold"])) if unit == "ratio" else (
            _n(row["measured"], 1), _n(row["threshold"]))
        lines.append(f"| {row['target']} | {shown} | {threshold} | {met} |")
    target_notes = [f"- {row['target']}: {row['note']}" for row in result["targets"] if row.get("note")]
    if target_notes:
        lines += [""] + target_notes
    processes = {row.get("processes") for row in result["targets"]} - {None}
    if processes:
        lines += ["", f"Measured with {', '.join(sorted(processes))}."]
    lines += ["", "## Throughput", "",
              "Events/s: *slope* between 10% and 90% of the section's events applied; *whole section* from its first "
              "record sent (a baseline: its first record received) to its last event applied. *CPU s*: CPU seconds "
              "of the processes that did the work over the whole section (the service: its workers and ingest "
              "processes; a baseline: its process); *per core* = events / CPU s. A baseline that ran more than one "
              "pass read the section's records again.",
              "",
              "| section | who | events | slope | whole section | CPU s | per core | passes | ingest, whole section "
              "| events per ledger record |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, entry in result["throughput"].items():
        service = entry["service"]
        cpu = (service.get("cpu_seconds") or {}).get("service")
        lines.append(
            f"| {name} | service: {service.get('processes', 'n/a')} | {_n(entry.get('events'))} | "
            f"{_n(service.get('events_per_second_per_worker'))} | "
            f"{_n(service.get('whole_section_events_per_second_per_worker'))} | {_n(cpu, 1)} | "
            f"{_n(service.get('events_per_second_per_core'))} | | "
            f"{_n((service.get('ingest') or {}).get('whole_section_events_per_second'))} | "
            f"{_n(service.get('events_per_ledger_record'), 1)} |")
        for kind, figure in (entry.get("baselines") or {}).items():
            lines.append(
                f"| | {BASELINE_NAMES.get(kind, kind)} | {_n(figure.get('events'))} | "
                f"{_n(figure.get('events_per_second'))} | {_n(figure.get('whole_section_events_per_second'))} | "
                f"{_n(figure.get('cpu_seconds'), 1)} | {_n(figure.get('events_per_second_per_core'))} | "
                f"{_n(figure.get('passes'), 1)} | | |")
    lines += ["", "## Ratios: service over each baseline", "",
              "*Headline*: the lower of the two whole-section ratios (per worker, per core), the one less "
              "flattering to the service. Service / Quix Streams is the headline of every section.", "",
              "| section | service / Quix: headline | per core | whole section | slope | service / confluent-kafka "
              "loop: headline | per core | service / bare Faust: headline | per core |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, entry in result["throughput"].items():
        ratios = entry.get("ratios") or {}
        if not ratios:
            continue
        quix, loop, faust = (ratios.get(kind) or {} for kind in ("quix", "confluent", "faust"))
        lines.append(f"| {name} | **{_times(quix.get('headline'))}** | {_times(quix.get('per_core'))} | "
                     f"{_times(quix.get('whole_section'))} | {_times(quix.get('slope'))} | "
                     f"{_times(loop.get('headline'))} | {_times(loop.get('per_core'))} | "
                     f"{_times(faust.get('headline'))} | {_times(faust.get('per_core'))} |")
    notes = [f"- {name}, {BASELINE_NAMES.get(kind, kind)}: {figure['note']}"
             for name, entry in result["throughput"].items()
             for kind, figure in (entry.get("baselines") or {}).items() if figure.get("note")]
    if notes:
        lines += [""] + notes
    dead_letters = {entry.get("dead_letters") for entry in result["throughput"].values()} - {None}
    if dead_letters:
        lines += ["", f"Dead letters of the scenario: {', '.join(_n(value) for value in sorted(dead_letters))}."]
        for reason in (result.get("validity") or {}).get("dead_letter_reasons") or ():
            errors = reason.get("errors") or [{"error": reason.get("first_error", ""), "count": reason["count"]}]
            lines.append(f"- {_n(reason['count'])} `{reason['reason']}` from {reason['source_topic']}: "
                         + "; ".join(f"{_n(error['count'])} {error['error']}" for error in errors))
    scaled = [entry["service"] for name, entry in result["throughput"].items()
              if name.startswith("mix_") and entry["service"]["workers"] > 1]
    for service in scaled:
        lines.append("")
        lines.append(f"Scaling: {service['workers']} workers sustain "
                     f"{_n(service.get('whole_section_events_per_second'))} events/s over the whole section, "
                     f"efficiency {_ratio(service.get('scaling_efficiency'))} of {service['workers']} x one worker "
                     f"({service.get('processes', 'n/a')}); the ingest stage "
                     f"{_ratio(service.get('ingest_scaling_efficiency'))} of its one-worker rate x "
                     f"{service['workers']}.")
    live = result.get("live")
    if live:
        lines += ["", "## Live run: latency and lag", "",
                  f"Steady {_n(live['steady_events_per_second'])} events/s (half the sustained maximum: "
                  f"{live.get('sustained_max_measure', 'the mix backlog rate')}, "
                  f"{_n(live.get('sustained_max_events_per_second'))} events/s), "
                  f"a {live['burst_seconds']:g} s burst at {_n(live['burst_events_per_second'])} events/s; "
                  f"{_n(live['events_sent'])} events sent in {live['seconds_sent']} s, all applied "
                  f"{live.get('seconds_until_all_applied', 'n/a')} s after the start; the source producer's "
                  f"linger {live.get('sender_linger_ms', DEFAULT_LINGER_MS)} ms. Latency: {live['latency_measure']}.",
                  "", "| window | outputs | p50 ms | p99 ms | p99.9 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
        for window, figures in live["latency"].items():
            lines.append(f"| {window} | {_n(figures['count'])} | {_n(figures['p50_ms'])} | {_n(figures['p99_ms'])} | "
                         f"{_n(figures['p999_ms'])} | {_n(figures['max_ms'])} |")
        arithmetic = live.get("burst_backlog_arithmetic") or {}
        lines += ["",
                  f"- maximum lag: {_n(live['max_ledger_lag_events'])} events sent but not yet on the ledger, "
                  f"{_n(live['max_publish_lag_events'])} sent but not yet published",
                  f"- lag when the burst began: {_n(live['publish_lag_at_burst_start_events'])} events unpublished",
                  f"- catch-up after the burst: {_n(live['catch_up_seconds_after_burst'], 1, ' s')} (lag back to "
                  f"<= {_n(live['caught_up_lag_events'])} events, a quarter second of the steady rate; n/a: not "
                  "within the run)",
                  _live_rate_line(live),
                  f"- arithmetic: the burst leaves ~{_n(arithmetic.get('backlog_events_expected'))} events, drained "
                  f"in ~{_n(arithmetic.get('drain_seconds_expected'), 1, ' s')} at the measured maximum"]
        cpu = live.get("cpu_seconds") or {}
        if cpu:
            lines += ["", "CPU seconds in each window of the live run, per kind of process (the sender is a process "
                      "of its own that only hands pre-encoded records to librdkafka; *benchmark* is the harness "
                      "reading the ledger and committed offsets). *Cores busy* = all of them over the window's "
                      "seconds; *machine* = every process of the machine, other jobs included (/proc/stat): near the "
                      "core count, the machine was the limit. *Events applied* in the window, and per CPU second "
                      "of the service's processes (workers and ingest processes): beside the per-core figures of the "
                      "backlogs above.", "",
                      "| window | seconds | workers | ingest processes | broker | sender | benchmark | cores busy | "
                      "machine | events applied | per service CPU second |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for window, figure in cpu.items():
                lines.append(f"| {window} | {_n(figure['wall_seconds'], 1)} | {_n(figure['workers'], 1)} | "
                             f"{_n(figure['ingest_processes'], 1)} | {_n(figure['broker'], 1)} | "
                             f"{_n(figure['sender'], 1)} | {_n(figure['benchmark'], 1)} | "
                             f"{_n(figure['cores_busy'], 2)} of {figure.get('cores', 'n/a')} | "
                             f"{_n(figure.get('machine_cores_busy'), 2)} | {_n(figure.get('events_applied'))} | "
                             f"{_n(figure.get('service_events_per_cpu_second'))} |")
    resources = result.get("resources") or {}
    restart = result.get("restart") or {}
    lines += ["", "## Resources and restarts", ""]
    if resources:
        ingest_rss = resources.get("peak_rss_mib_per_ingest_process") or []
        lines += [f"- peak RSS per worker: {_n(resources.get('peak_rss_mib_per_worker'), 1, ' MiB')}"
                  + (f"; per ingest process: {', '.join(_n(value, 1, ' MiB') for value in ingest_rss)}"
                     if ingest_rss else ""),
                  f"- RocksDB on disk: {_n(resources['rocksdb_bytes'] / 2**20 if resources.get('rocksdb_bytes') else None, 1, ' MiB')} "
                  f"for {_n(resources.get('sku_locations_held'))} SKU-locations = "
                  f"**{_n(resources.get('rocksdb_mib_per_million_sku_locations'), 1, ' MiB')} per million "
                  f"SKU-locations** ({resources.get('measured_after')})"]
        at_peak = resources.get("worker_memory_at_peak_mib") or {}
        if at_peak:
            parts = ", ".join(f"{part} {_n(value, 1)}" for part, value in at_peak.items()
                              if part not in ("phase", "cached_sku_states"))
            lines.append(f"- the worker's memory at its largest scraped resident set (phase `{at_peak.get('phase')}`,"
                         f" MiB; /metrics every 2 s): {parts}; SKU states held decoded "
                         f"{_n(at_peak.get('cached_sku_states'))}")
    for kind, figures in restart.items():
        lines.append(f"- restart with {kind} local state: first output after "
                     f"{_n(figures['seconds_to_first_output'], 2, ' s')}, every partition after "
                     f"{_n(figures['seconds_to_output_on_every_partition'], 2, ' s')} ({figures['local_state']}"
                     f"{'; ' + figures['ingest'] if figures.get('ingest') else ''})")
    capacity = result.get("capacity") or {}
    if capacity.get("workers_at_full_load"):
        ingest = capacity.get("ingest") or {}
        lines += ["", "## Capacity", "",
                  f"This sizes {capacity.get('sizes', 'Faust workers running both stages')}. "
                  f"For {_n(capacity['target_events_per_second'])} events/s of the realistic mix: "
                  f"**{capacity['workers_at_full_load']} workers** at full load, "
                  f"**{capacity['workers_at_latency_load']} workers** at {capacity['utilisation_for_latency']:.0%} "
                  f"load (per worker {_n(capacity['per_worker_events_per_second'])} events/s, scaling efficiency "
                  f"{capacity['scaling_efficiency']:.0%}"
                  f"{' (capped)' if capacity.get('scaling_efficiency_capped') else ''}"
                  f"{'' if capacity['scaling_efficiency_measured'] else ' assumed, not measured in this profile'}; "
                  f"{capacity['partitions']} partitions"
                  f"{' — more partitions needed' if capacity['needs_more_partitions'] else ''}). "
                  + (_ingest_capacity(ingest) if capacity.get("topology") == "split" else "")
                  + f"Assumptions: {capacity['assumptions']}"]
    if result.get("chart"):
        lines += ["", f"![throughput, latency and lag over time]({result['chart']})"]
    return "\n".join(lines) + "\n"


def _ingest_capacity(ingest: dict) -> str:
    if not ingest.get("processes_at_full_load"):
        return "Ingest processes: n/a (no ingest rate measured). "
    return (f"Plus **{ingest['processes_at_full_load']} ingest processes** at full load, "
            f"**{ingest['processes_at_latency_load']}** at {ingest['utilisation_for_latency']:.0%} load (per ingest "
            f"process {_n(ingest['per_process_events_per_second'])} events/s to the ledger, scaling efficiency "
            f"{ingest['scaling_efficiency']:.0%}{' (capped)' if ingest.get('scaling_efficiency_capped') else ''}"
            f"{'' if ingest['scaling_efficiency_measured'] else ' assumed'}; "
            f"{ingest['source_partitions']} partitions per source topic"
            f"{' — more source partitions needed' if ingest['needs_more_source_partitions'] else ''}). ")


def write_chart(data: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rate_axis, latency_axis, lag_axis) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    burst_start, burst_end = data["burst"]
    for axis in (rate_axis, latency_axis, lag_axis):
        axis.axvspan(burst_start, burst_end, color="orange", alpha=0.15, label="burst")
        axis.grid(alpha=0.3)
    if data["sent_rate"]:
        rate_axis.plot(*zip(*data["sent_rate"]), label="sent", color="grey", linestyle="--")
    if data["applied_rate"]:
        rate_axis.plot(*zip(*data["applied_rate"]), label="published (applied)", color="tab:blue")
    rate_axis.set_ylabel("events/s")
    rate_axis.legend(loc="upper right")
    if data["latency"]:
        seconds, p50, p99 = zip(*data["latency"])
        latency_axis.plot(seconds, p50, label="p50", color="tab:green")
        latency_axis.plot(seconds, p99, label="p99", color="tab:red")
        latency_axis.set_yscale("log")
    latency_axis.axhline(250, color="black", linewidth=0.8, linestyle=":", label="250 ms target")
    latency_axis.set_ylabel("end-to-end latency, ms\n(by send time)")
    latency_axis.legend(loc="upper right")
    if data["lag"]:
        lag_axis.plot(*zip(*data["lag"]), label="sent, not yet published", color="tab:purple")
    if data["ledger_lag"]:
        lag_axis.plot(*zip(*data["ledger_lag"]), label="sent, not yet on the ledger", color="tab:olive")
    lag_axis.set_ylabel("lag, events")
    lag_axis.set_xlabel("seconds since the live run started")
    lag_axis.legend(loc="upper right")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
