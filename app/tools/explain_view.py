"""`availability explain SKU`: fetch GET /availability/{sku}/explain from a worker and show it as tables.

`fetch_explanation` does the HTTP (standard library only) and turns every failure into one ExplainError line;
`render_explanation` is pure: the explanation document in, rich renderables out.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from app.errors import UserError


class ExplainError(UserError):
    """The explanation could not be fetched; the message says what to do."""


def fetch_explanation(
    base_url: str, sku: str, *, channel: str | None = None, location: str | None = None,
    token: str | None = None, timeout: float = 10.0,
) -> dict[str, Any]:
    parameters = {name: value for name, value in (("channel", channel), ("location", location)) if value is not None}
    url = f"{base_url.rstrip('/')}/availability/{urllib.parse.quote(sku, safe='')}/explain"
    if parameters:
        url += "?" + urllib.parse.urlencode(parameters)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) URL from the user
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        message = _error_message(error)
        if error.code == 401:
            raise ExplainError(f"the worker at {base_url} needs a token; set AVAILABILITY_API_TOKEN") from None
        if error.code == 403:
            raise ExplainError(f"the worker at {base_url} refused the token; check AVAILABILITY_API_TOKEN") from None
        if error.code == 503:
            raise ExplainError(f"{message}; the worker is not ready for {sku!r} yet, retry in a moment") from None
        raise ExplainError(f"{message} (HTTP {error.code})") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ExplainError(f"cannot reach a worker at {base_url} ({reason}); start one (`availability worker`, or "
                           "`availability demo`) or pass --url") from None
    except ValueError:
        raise ExplainError(f"the answer from {base_url} is not JSON; is --url a worker of this service?") from None


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(error.read())["error"])
    except Exception:  # noqa: BLE001 - any unreadable error body: say the status only
        return error.reason or "request failed"


def _number(value: Any) -> str:
    return "-" if value is None else str(value)


def utc_time(epoch_ms: int | None) -> str:
    """Epoch milliseconds as ISO 8601 UTC to the millisecond (`2026-01-05T10:15:00.114Z`); None: `never`."""
    if epoch_ms is None:
        return "never"
    moment = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=epoch_ms)  # exact, no float
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_explanation(document: dict[str, Any]) -> Group:
    policy = document.get("policy")
    heading = Text.assemble(
        (f"{document['sku']}", "bold"),
        f"   ledger partition {document['ledger_partition']}, last offset {document['last_ledger_offset']}, ",
        f"policy v{policy['version']} (from offset {policy['effective_offset']})" if policy else "no policy yet",
    )
    parts: list[Any] = [heading]

    locations = Table(title="Stock per location", title_justify="left")
    for column in ("location", "type", "sellable", "reserved", "safety stock (rule)", "in transit", "ATP",
                   "ATP+transit", "feeds"):
        locations.add_column(column, justify="left" if column in ("location", "type", "feeds") else "right")
    for row in document["locations"]:
        safety = row["safety_stock"]
        locations.add_row(
            row["location"], _number(row["location_type"]), str(row["sellable"]), str(row["reserved"]),
            f"{safety['quantity']} ({safety['rule'] or 'no rule'})", str(row["in_transit"]), _number(row["atp"]),
            _number(row["atp_with_transit"]), ", ".join(row["channels"]),
        )
    parts.append(locations)

    channels = Table(title="Channels, in waterfall order: pool -> advertised quantity", title_justify="left")
    for column in ("channel / key", "rule", "pool", "own res.", "after waterfall", "share", "free", "after buffer",
                   "quantity", "status", "published", "ok"):
        channels.add_column(column, justify="left" if column in ("channel / key", "rule", "status") else "right")
    for plan in document["channels"]:
        rule = plan["rule"]
        summary = (f"{rule['share_bp'] / 100:g}% prot.above {rule['protected_above']} buf {rule['buffer']} "
                   f"cap {_number(rule['max_advertised'])}{' +transit' if rule['include_in_transit'] else ''} "
                   f"low<={rule['low_stock_threshold']}")
        for key in plan["keys"]:
            steps = key["steps"]
            published = key["published"]
            channels.add_row(
                f"{plan['channel']} {key['key']}", summary, str(steps["pool"]), str(steps["own_reserved"]),
                str(steps["after_waterfall"]), _number(steps["share"]), _number(steps["free"]),
                _number(steps["after_buffer"]), str(key["quantity"]), key["status"],
                "never" if published is None else f"{published['quantity']} v{published['version']}",
                "yes" if key["matches_published"] else "NO",
            )
    parts.append(channels)

    if document["reservations"]:
        reservations = Table(title="Active reservations", title_justify="left")
        for column in ("reservation", "channel", "requested", "reserved", "lines", "expires at (UTC)"):
            reservations.add_column(column)
        for item in document["reservations"]:
            lines = ", ".join(f"{line['location']}:{line['quantity']}" for line in item["lines"])
            reservations.add_row(item["reservation_id"], item["channel"], str(item["requested_quantity"]),
                                 str(item["reserved_quantity"]), lines, utc_time(item["expires_at"]))
        parts.append(reservations)

    entries = Table(title="Last ledger entries, newest first", title_justify="left")
    for column in ("position", "event id", "kind", "result", "reservation"):
        entries.add_column(column)
    for entry in document["recent_entries"]:
        entries.add_row(f"ledger[{entry['ledger_partition']}]@{entry['ledger_offset']}", entry["event_id"],
                        entry["kind"], entry["result"], entry["reservation_id"] or "")
    parts.append(entries)
    return Group(*parts)
