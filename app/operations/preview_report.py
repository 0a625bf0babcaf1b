"""What `availability preview` prints from a preview document (`PolicyPreview.to_json()`, or several merged): per
channel the keys that would change, units gained and lost, keys that would go out of stock, the largest changes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console


def print_preview(console: Console, preview: dict, seconds: float) -> None:
    if preview["stale_version"]:
        console.print(f"version {preview['candidate_version']} is not above the policy in force "
                      f"({preview['current_version']}): published as it is, it would be refused "
                      "(STALE_POLICY_VERSION); shown as the next version", style="yellow", highlight=False)
    channels = preview["channels"]
    summary = Table(title=f"candidate policy over {preview['skus']:,} SKUs in {len(preview['partitions'])} "
                    "partitions", show_edge=False)
    for column in ("channel", "keys changed", "units gained", "units lost", "net", "out of stock"):
        summary.add_column(column, justify="left" if column == "channel" else "right")
    for name, channel in channels.items():
        summary.add_row(name, f"{channel['changed_keys']:,}", f"{channel['units_gained']:,}",
                        f"{channel['units_lost']:,}", f"{channel['units_gained'] - channel['units_lost']:+,}",
                        f"{channel['out_of_stock']:,}")
    console.print(summary)
    for name, channel in channels.items():
        largest = Table(title=f"{name}: largest changes", show_edge=False)
        for column in ("sku", "location", "now", "candidate", "change", "status"):
            largest.add_column(column, justify="right" if column in ("now", "candidate", "change") else "left")
        for change in channel["largest"]:
            before, after = change["before_status"], change["after_status"]
            largest.add_row(change["sku"], change["location"] or "-", f"{change['before']:,}",
                            f"{change['after']:,}", f"{change['change']:+,}",
                            after if after == before else f"{before} -> {after}")
        console.print(largest)
    changed = sum(channel["changed_keys"] for channel in channels.values())
    console.print(f"{changed:,} keys would change; nothing was published and no state changed ({seconds:.1f}s)",
                  highlight=False)
