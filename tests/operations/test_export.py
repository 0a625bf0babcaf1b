"""Reading a system of record's export: CSV and JSON Lines, and every kind of bad row with its line number."""

from __future__ import annotations

import json

import pytest

from app.operations.export import BadRow, ExportError, ExportRow, read_export


def rows(path):
    return list(read_export(path))


def test_csv_with_bom_quotes_extra_columns_and_a_default_bucket(tmp_path):
    path = tmp_path / "onhand.csv"
    path.write_bytes("\ufeffwarehouse_name,SKU,location,on_hand,bucket\n"
                     '"North, main",SKU-A,S1,7,\n'
                     '"x",SKU-A,S1,2,damaged\n'
                     '"y","SKU-B","DC1","40","QUARANTINE"\n'.encode())
    assert rows(path) == [
        ExportRow(2, "SKU-A", "S1", "SELLABLE", 7),
        ExportRow(3, "SKU-A", "S1", "DAMAGED", 2),
        ExportRow(4, "SKU-B", "DC1", "QUARANTINE", 40),
    ]


def test_every_kind_of_bad_csv_row_is_named_with_its_line_and_the_rest_is_read(tmp_path):
    path = tmp_path / "onhand.csv"
    path.write_text("sku,location,on_hand,bucket\n"
                    "SKU-A,S1,5\n"          # 2: fine: the optional bucket may be left off the end
                    "SKU-A\n"               # 3: too few fields
                    ",S1,5,\n"              # 4: sku missing
                    "SKU/B,S1,5,\n"         # 5: not an identifier
                    "SKU-C,S1,five,\n"      # 6: not a number
                    "SKU-C,S1,-1,\n"        # 7: below zero
                    "SKU-C,S1,2000000000,\n"  # 8: too large
                    "SKU-C,S1,1,BROKEN\n"   # 9: unknown bucket
                    "SKU-A,S1,6,sellable\n"  # 10: same position again
                    "\n"                    # blank: skipped
                    "SKU-D,DC1,3,\n")       # 12: fine
    found = rows(path)
    assert [row for row in found if isinstance(row, ExportRow)] == [
        ExportRow(2, "SKU-A", "S1", "SELLABLE", 5), ExportRow(12, "SKU-D", "DC1", "SELLABLE", 3)]
    bad = {row.line: str(row) for row in found if isinstance(row, BadRow)}
    assert sorted(bad) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert "field" in bad[3]
    assert bad[4] == "line 4: sku is missing"
    assert "not an identifier" in bad[5]
    assert "not a whole number" in bad[6]
    assert "below zero" in bad[7]
    assert "above" in bad[8]
    assert "bucket 'BROKEN'" in bad[9]
    assert "already given on line 2" in bad[10]


def test_json_lines_rows_and_bad_lines(tmp_path):
    path = tmp_path / "onhand.jsonl"
    path.write_text("\n".join([
        json.dumps({"sku": "SKU-A", "location": "S1", "on_hand": 4, "note": "extra"}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"sku": "SKU-A", "location": "S2", "on_hand": 1.5}),
        json.dumps({"sku": "SKU-A", "location": "S2", "on_hand": True}),
        json.dumps({"sku": "SKU-A", "location": "S2"}),
        json.dumps({"sku": "SKU-B", "location": "S2", "on_hand": "3", "bucket": "damaged"}),
    ]) + "\n")
    found = rows(path)
    assert found[0] == ExportRow(1, "SKU-A", "S1", "SELLABLE", 4)
    assert found[-1] == ExportRow(7, "SKU-B", "S2", "DAMAGED", 3)
    bad = {row.line: row.problem for row in found if isinstance(row, BadRow)}
    assert sorted(bad) == [2, 3, 4, 5, 6]
    assert bad[2].startswith("not JSON")
    assert bad[3] == "a JSON list, not an object"
    assert "not a whole number" in bad[4] and "not a whole number" in bad[5]
    assert bad[6] == "on_hand is missing"


def test_a_json_file_without_a_telling_name_is_recognised_by_its_content(tmp_path):
    path = tmp_path / "onhand.export"
    path.write_text('{"sku": "SKU-A", "location": "S1", "on_hand": 4}\n')
    assert rows(path) == [ExportRow(1, "SKU-A", "S1", "SELLABLE", 4)]


@pytest.mark.parametrize("content, message", [
    ("", "empty file"),
    ("sku,place,on_hand\nA,S1,1\n", "lacks the column(s) location"),
])
def test_a_file_that_is_not_an_export_is_one_error(tmp_path, content, message):
    path = tmp_path / "onhand.csv"
    path.write_text(content)
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rows(path)


def test_a_missing_file_is_one_error(tmp_path):
    with pytest.raises(ExportError, match="no such file"):
        rows(tmp_path / "absent.csv")
