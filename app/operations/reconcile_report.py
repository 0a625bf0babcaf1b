"""What `availability reconcile` prints and writes: a terminal table, a JSON document and a CSV file of drifts."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

    from app.operations.reconcile import ReconcileRun

PARTIAL_EXPORT_NOTE = ("positions the export does not list were not compared: a partial export (one store, one "
                       "category) is safe")
CSV_COLUMNS = ("line", "sku", "location", "bucket", "export_on_hand", "service_on_hand", "drift", "corrected")


def iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def report_document(result: ReconcileRun, applied: bool, limit: int | None = None) -> dict:
    comparison = result.comparison
    drifts = comparison.drifts if limit is None else comparison.drifts[:limit]
    return {
        "run_id": result.run,
        "as_of": iso_time(result.as_of_ms),
        "as_of_ms": result.as_of_ms,
        "ledger_entries": result.ledger_entries,
        "seconds": round(result.seconds, 2),
        "ledger_seconds": round(result.ledger_seconds, 2),
        "export_seconds": round(result.export_seconds, 2),
        "rows": comparison.rows,
        "compared": comparison.compared,
        "agreeing": comparison.agreeing,
        "drifting": len(comparison.drifts),
        "not_compared": len(comparison.bad_rows),
        "total_drift": comparison.total_drift,
        "absolute_drift": comparison.absolute_drift,
        "impact_by_channel": dict(sorted(comparison.impact.items())),
        "applied": applied,
        "corrections_written": result.corrections_written,
        "exceptions_published": result.exceptions_published,
        "note": PARTIAL_EXPORT_NOTE,
        "drifts": [
            {"line": drift.line, "sku": drift.sku, "location": drift.location, "bucket": drift.bucket,
             "export_on_hand": drift.export_on_hand, "service_on_hand": drift.service_on_hand,
             "drift": drift.drift, "corrected": applied and drift.correctable}
            for drift in drifts
        ],
        "impact_by_sku": comparison.sku_impact,
        "bad_rows": [{"line": bad.line, "problem": bad.problem} for bad in comparison.bad_rows],
    }


def write_json(path: Path, result: ReconcileRun, applied: bool) -> None:
    path.write_text(json.dumps(report_document(result, applied), indent=1) + "\n", encoding="utf-8")


def write_csv(path: Path, result: ReconcileRun, applied: bool) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for drift in result.comparison.drifts:
            writer.writerow((drift.line, drift.sku, drift.location, drift.bucket, drift.export_on_hand,
                             drift.service_on_hand, drift.drift, "yes" if applied and drift.correctable else "no"))


def print_report(console: Console, result: ReconcileRun, applied: bool, limit: int) -> None:
    comparison = result.comparison
    for bad in comparison.bad_rows[:limit]:
        console.print(f"not compared: {bad}", highlight=False, markup=False)
    if len(comparison.bad_rows) > limit:
        console.print(f"... and {len(comparison.bad_rows) - limit:,} more rows not compared (--json lists all)",
                      highlight=False)
    if comparison.drifts:
        table = Table(title=f"drifts as of {iso_time(result.as_of_ms)} (export minus service), largest first",
                      show_edge=False)
        for column in ("line", "sku", "location", "bucket", "export", "service", "drift"):
            table.add_column(column, justify="right" if column in ("line", "export", "service", "drift") else "left")
        for drift in comparison.drifts[:limit]:
            table.add_row(str(drift.line), drift.sku, drift.location, drift.bucket, f"{drift.export_on_hand:,}",
                          f"{drift.service_on_hand:,}", f"{drift.drift:+,}")
        console.print(table)
        if len(comparison.drifts) > limit:
            console.print(f"... {len(comparison.drifts) - limit:,} more drifts (--limit, --json, --csv)",
                          highlight=False)
    impact = ", ".join(f"{channel} {units:+,}" for channel, units in sorted(comparison.impact.items()))
    console.print(f"{comparison.rows:,} rows: {comparison.compared:,} compared, {comparison.agreeing:,} agree, "
                  f"{len(comparison.drifts):,} drift (total {comparison.total_drift:+,} units, "
                  f"{comparison.absolute_drift:,} absolute), {len(comparison.bad_rows):,} not compared; "
                  f"{result.ledger_entries:,} ledger entries; {result.seconds:.1f}s (ledger {result.ledger_seconds:.1f}s, "
                  f"export {result.export_seconds:.1f}s)", highlight=False)
    console.print(f"availability impact if corrected: {impact or 'none'}", highlight=False)
    console.print(f"{result.exceptions_published:,} RECONCILIATION_DRIFT records published to inventory-exceptions "
                  f"(run {result.run})", highlight=False)
    if applied:
        console.print(f"{result.corrections_written:,} corrections written to source.stock-movements as cycle "
                      "counts (DAMAGED and QUARANTINE drifts are reported, not corrected)", highlight=False)
    elif any(drift.correctable for drift in comparison.drifts):
        console.print("nothing corrected: --apply writes the SELLABLE corrections as cycle counts", highlight=False)
    console.print(PARTIAL_EXPORT_NOTE, style="dim", highlight=False)
