"""`availability explain`: rendering (pure) and its errors, against a small stand-in HTTP server (no worker)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rich.console import Console

from app.engine.explain import explain_sku
from app.kafka.broker import free_loopback_port
from app.tools.cli import main
from app.tools.explain_view import render_explanation
from tests.engine.factories import reserve
from tests.engine.test_rules import worked_ledger
from tests.serving import serving

TOKEN = "cli-token-0123456789abcdef"


def worked_document() -> dict:
    ledger = worked_ledger()
    ledger.feed(reserve("r1", 10, channel_name="marketplace", event_id="c-r1"))
    return json.loads(json.dumps(explain_sku(ledger.sku(), ledger.engine.state)))


def rendered(document: dict) -> str:
    console = Console(record=True, width=200)
    console.print(render_explanation(document))
    return console.export_text()


def test_the_tables_show_the_steps_the_rules_and_the_entries():
    text = rendered(worked_document())
    assert "policy v1" in text
    assert "2 (LOCATION_TYPE)" in text and "0 (SKU_LOCATION)" in text and "0 (no rule)" in text
    marketplace = next(line for line in text.splitlines() if "marketplace SKU1" in line)
    assert "50% prot.above 3 buf 3 cap 12" in marketplace
    # pool 30, own 10: 30 + 10 - 3 = 37; 50% -> 18; - own 10 = 8; - buffer 3 = 5 LOW_STOCK, as published
    assert re.search(r"30\W+10\W+37\W+18\W+8\W+5\W+5\W+LOW_STOCK\W+5 v\d+\W+yes", marketplace), marketplace
    assert "c-r1" in text and "RESERVE" in text and "ACCEPTED" in text
    assert "r1" in text and "DC1:10" in text


def test_expiry_times_are_shown_in_iso_8601_utc_not_epoch_milliseconds():
    document = worked_document()
    document["reservations"][0]["expires_at"] = 1_767_608_100_114
    text = rendered(document)
    assert "2026-01-05T10:15:00.114Z" in text and "1767608100114" not in text
    assert "expires at (UTC)" in text
    document["reservations"][0]["expires_at"] = None
    assert "never" in rendered(document)


class StandIn(BaseHTTPRequestHandler):
    """Answers like a worker: the explanation with the right token, 401 without one, 404 for SKU-NONE."""

    document: dict = {}

    def do_GET(self):  # noqa: N802 - http.server's naming
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._answer(401, {"error": "authentication required"})
        elif self.path.startswith("/availability/SKU-NONE/"):
            self._answer(404, {"error": "unknown sku 'SKU-NONE'"})
        elif self.path == "/availability/SKU1/explain?channel=marketplace":
            self._answer(200, self.document)
        else:
            self._answer(400, {"error": f"unexpected {self.path}"})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[str]:
    StandIn.document = worked_document()
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), StandIn)) as server:
        yield f"http://127.0.0.1:{server.server_address[1]}"


def test_explain_prints_the_tables(stand_in, monkeypatch, capsys):
    monkeypatch.setenv("AVAILABILITY_API_TOKEN", TOKEN)
    assert main(["explain", "SKU1", "--channel", "marketplace", "--url", stand_in]) == 0
    out = capsys.readouterr().out
    assert "marketplace SKU1" in out and "Last ledger entries" in out


@pytest.mark.parametrize(
    ("sku", "token", "complaint"),
    [
        ("SKU1", None, "needs a token; set AVAILABILITY_API_TOKEN"),
        ("SKU-NONE", TOKEN, "unknown sku 'SKU-NONE' (HTTP 404)"),
    ],
)
def test_explain_errors_are_one_line(stand_in, monkeypatch, capsys, sku, token, complaint):
    monkeypatch.delenv("AVAILABILITY_API_TOKEN", raising=False)
    if token:
        monkeypatch.setenv("AVAILABILITY_API_TOKEN", token)
    assert main(["explain", sku, "--url", stand_in]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("availability: error: ") and complaint in err


def test_explain_without_a_worker_is_one_line(capsys):
    assert main(["explain", "SKU1", "--url", f"http://127.0.0.1:{free_loopback_port()}", "--timeout", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot reach a worker" in err
