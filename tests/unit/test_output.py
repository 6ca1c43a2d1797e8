"""Listing output: caller-controlled text cannot break tables, CSV and JSON stay exact."""

from __future__ import annotations

import csv
import io
import json

from calltrack.output import render

ROWS = [{"name": 'Jane "JD" Doe\nINJECTED', "city": "Zürich", "n": 3, "ok": True, "none": None}]


def test_table_keeps_each_row_on_one_line() -> None:
    lines = render(ROWS, "table").splitlines()
    assert lines[0].split() == ["NAME", "CITY", "N", "OK", "NONE"]
    assert len(lines) == 2
    assert 'Jane "JD" Doe\\nINJECTED' in lines[1] and "Zürich" in lines[1] and "yes" in lines[1]


def test_csv_and_json_round_trip_the_exact_values() -> None:
    back = list(csv.DictReader(io.StringIO(render(ROWS, "csv"))))
    assert back == [{"name": 'Jane "JD" Doe\nINJECTED', "city": "Zürich", "n": "3", "ok": "yes", "none": ""}]
    assert json.loads(render(ROWS, "json")) == ROWS


def test_empty_listings() -> None:
    assert render([], "table") == "(none)"
    assert json.loads(render([], "json")) == []
    assert render([], "csv", ["a", "b"]) == "a,b"
