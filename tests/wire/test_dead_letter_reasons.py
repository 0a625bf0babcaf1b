"""The dead-letter reasons of docs/CONTRACT.md against the code, both ways: the table lists exactly the codes each
stage can write (app/engine/reasons.py), and what the stages do write, on malformed and refused input of every kind,
is in the table."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import Rejection, ReservationDecision, reasons
from tests.engine.factories import (
    Ledger,
    adjustment,
    count,
    fulfil,
    policy,
    receipt,
    received,
    release,
    reserve,
    sale,
    shipped,
    tick,
)

ROOT = Path(__file__).resolve().parents[2]
CODES = {name: value for name, value in vars(reasons).items() if name.isupper() and isinstance(value, str)}


def contract_tables() -> tuple[dict[str, set[str]], set[str], set[str]]:
    """(reason -> stages) of the dead-letter table, the decision-only reasons and the acknowledgements, read from
    docs/CONTRACT.md (the last two are tables of two columns: reason, when; told apart by their heading)."""
    text = (ROOT / "docs" / "CONTRACT.md").read_text()
    section = text[text.index("## Dead letters"):text.index("## Bootstrapping a connector")]
    dead_letters, two_column = {}, {"decision": set(), "acknowledgement": set()}
    table = None
    for line in section.splitlines():
        if line.startswith("Reasons that are only the `reason` of a REJECTED"):
            table = "decision"
        elif line.startswith("Acknowledgements"):
            table = "acknowledgement"
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not cells or not re.fullmatch(r"`[A-Z_]+`", cells[0]):
            continue
        code = cells[0].strip("`")
        if len(cells) == 3:
            dead_letters[code] = {stage.strip() for stage in cells[1].split(",")}
        elif len(cells) == 2 and table is not None:
            two_column[table].add(code)
    return dead_letters, two_column["decision"], two_column["acknowledgement"]


def test_every_reason_code_has_its_place():
    dead_letters = reasons.INGEST_DEAD_LETTER_REASONS | reasons.LEDGER_DEAD_LETTER_REASONS
    assert set(CODES.values()) == dead_letters | reasons.DECISION_ONLY_REASONS | reasons.ACKNOWLEDGEMENTS
    assert not reasons.DECISION_ONLY_REASONS & dead_letters and not reasons.ACKNOWLEDGEMENTS & dead_letters


def test_the_contract_table_is_the_code_both_ways():
    dead_letters, decision_only, acknowledgements = contract_tables()
    assert acknowledgements == reasons.ACKNOWLEDGEMENTS
    assert {code for code, stages in dead_letters.items() if "ingest" in stages} == reasons.INGEST_DEAD_LETTER_REASONS
    assert {code for code, stages in dead_letters.items() if "availability" in stages} == (
        reasons.LEDGER_DEAD_LETTER_REASONS)
    assert all(stages <= {"ingest", "availability"} for stages in dead_letters.values())
    assert decision_only == reasons.DECISION_ONLY_REASONS


def test_the_code_names_no_reason_outside_the_codes():
    """Every `reasons.X` the application reads is one of the codes (so each is in the table)."""
    used = set()
    for path in (ROOT / "app").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "reasons":
                used.add(node.attr)
    sets = {"VALIDATION_REASONS", "INGEST_DEAD_LETTER_REASONS", "LEDGER_DEAD_LETTER_REASONS", "DECISION_ONLY_REASONS",
            "ACKNOWLEDGEMENTS"}
    assert used - sets <= set(CODES), sorted(used - sets - set(CODES))


def _events(draw_index: int, quantity: int, time: int):
    """Events of every kind, well formed or not, for one roll."""
    kinds = [
        lambda: sale(quantity, time=time),
        lambda: receipt(quantity, time=time),
        lambda: adjustment(quantity - 3, time=time),
        lambda: count(quantity - 1, time=time),
        lambda: shipped(quantity, "S1", "S2", time=time),
        lambda: received(quantity, "S2", "S1", time=time),
        lambda: sale(1, "NOWHERE", time=time),
        lambda: reserve(f"r{quantity % 3}", quantity - 1, time=time, expires_at=time + quantity * 10),
        lambda: reserve(f"r{quantity % 3}", 1, channel_name="unknown-channel", time=time),
        lambda: release(f"r{quantity % 3}", time=time),
        lambda: fulfil(f"r{quantity % 3}", time=time, channel_name="marketplace"),
        lambda: reserve("bad id", 1, time=time),
        lambda: tick(time),
        lambda: policy(version=1, event_time=time),
    ]
    return kinds[draw_index % len(kinds)]()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 6), st.integers(-5, 40)), max_size=60),
       st.booleans())
def test_what_the_engine_refuses_is_in_the_table(rolls, policy_first):
    ledger = Ledger()
    if policy_first:
        ledger.apply(policy(event_time=0))
    time = 10
    for roll, quantity, step in rolls:
        time = max(0, time + step)
        for output in ledger.apply(_events(roll, quantity, time)):
            if isinstance(output, Rejection):
                assert output.reason in reasons.LEDGER_DEAD_LETTER_REASONS, output
            elif isinstance(output, ReservationDecision) and output.reason is not None:
                assert output.reason in (reasons.LEDGER_DEAD_LETTER_REASONS | reasons.DECISION_ONLY_REASONS), output


def test_what_the_ingest_stage_refuses_is_in_the_table():
    from app.engine import event_to_record
    from app.service.ingest import LedgerWriter
    from app.settings import Settings
    from app.wire.serialization import AvroCodec
    from app.wire.topics import POLICY_CHANGES, STOCK_MOVEMENTS, STORE_TRANSACTIONS

    codec = AvroCodec(Settings(_env_file=None))
    writer = LedgerWriter(codec, 4, max_record_bytes=4096)
    sale_bytes = codec.encode(STORE_TRANSACTIONS.name, event_to_record(sale(1))[1])
    bad = [
        (STORE_TRANSACTIONS.name, b"not avro"),
        (STORE_TRANSACTIONS.name, None),
        (STORE_TRANSACTIONS.name, b"\x00\x00\x00\x10\x92" + sale_bytes[5:]),
        (STORE_TRANSACTIONS.name, sale_bytes[: len(sale_bytes) // 2]),
        (STORE_TRANSACTIONS.name, b"x" * 5000),
        (STORE_TRANSACTIONS.name, codec.encode(STORE_TRANSACTIONS.name, event_to_record(sale(0))[1])),
        (STORE_TRANSACTIONS.name, codec.encode(STORE_TRANSACTIONS.name, event_to_record(sale(1, time=10**15))[1])),
        (STOCK_MOVEMENTS.name, codec.encode(STOCK_MOVEMENTS.name, {"movements": [
            event_to_record(adjustment(0))[1], event_to_record(sale(1, sku="bad sku"))[1]]})),
        (POLICY_CHANGES.name, codec.encode(POLICY_CHANGES.name, event_to_record(policy(version=0))[1])),
    ]
    found = set()
    for offset, (topic, value) in enumerate(bad):
        for dead in writer.ingest(topic, 0, offset, value, ingest_time=1_000).dead_letters:
            found.add(dead.reason)
    assert found <= reasons.INGEST_DEAD_LETTER_REASONS
    assert {reasons.UNDECODABLE_RECORD, reasons.RECORD_TOO_LARGE, reasons.EVENT_TIME_IN_FUTURE,
            reasons.INVALID_QUANTITY, reasons.INVALID_DELTA, reasons.INVALID_ID, reasons.INVALID_POLICY} <= found
