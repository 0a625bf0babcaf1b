"""What `availability preview` prints: per channel the keys that would change, units gained and lost, keys that
would go out of stock, and the largest changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

    from app.operations.preview import PolicyPreview


def print_preview(console: Console, preview: PolicyPreview, seconds: float) -> None:
    if preview.stale_version:
        console.print(f"version {preview.candidate_version} is not above the policy in force "
                      f"({preview.current_version}): published as it is, it would be refused (STALE_POLICY_VERSION); "
                      "shown as the next version", style="yellow", highlight=False)
    summary = Table(title=f"candidate policy over {preview.skus:,} SKUs in {len(preview.partitions)} partitions",
                    show_edge=False)
    for column in ("channel", "keys changed", "units gained", "units lost", "net", "out of stock"):
        summary.add_column(column, justify="left" if column == "channel" else "right")
    for name in sorted(preview.channels):
        channel = preview.channels[name]
        summary.add_row(name, f"{channel.changed_keys:,}", f"{channel.units_gained:,}", f"{channel.units_lost:,}",
                        f"{channel.units_gained - channel.units_lost:+,}", f"{channel.out_of_stock:,}")
    console.print(summary)
    for name in sorted(preview.channels):
        largest = Table(title=f"{name}: largest changes", show_edge=False)
        for column in ("sku", "location", "now", "candidate", "change", "status"):
            largest.add_column(column, justify="right" if column in ("now", "candidate", "change") else "left")
        for change in preview.channels[name].top():
            status = change.after_status if change.after_status == change.before_status else \
                f"{change.before_status} -> {change.after_status}"
            largest.add_row(change.sku, change.location or "-", f"{change.before:,}", f"{change.after:,}",
                            f"{change.change:+,}", status)
        console.print(largest)
    changed = sum(channel.changed_keys for channel in preview.channels.values())
    console.print(f"{changed:,} keys would change; nothing was published and no state changed ({seconds:.1f}s)",
                  highlight=False)
