"""Listing output: caller-controlled text cannot break tables, CSV and JSON stay exact."""

from __future__ import annotations

import csv
import io
import json

from calltrack.output import fit, render, width

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


def test_wide_characters_keep_the_columns_aligned() -> None:
    rows = [{"name": "東京配管", "n": 1}, {"name": "Pipes 🔧", "n": 2}, {"name": "Ana", "n": 3}]
    lines = render(rows, "table").splitlines()
    # The second column starts at the same terminal column on every line.
    starts = {width(line[: line.rindex(" ") + 1]) for line in lines}
    assert len(starts) == 1, lines
    assert width("東京配管") == 8 and width("🔧") == 2


def test_long_cells_are_cut_to_the_width_with_an_ellipsis() -> None:
    assert fit("x" * 50, 10) == "x" * 9 + "…"
    assert fit("東京配管サービス株式会社", 9) == "東京配管…"  # 4 wide characters = 8 columns, then the ellipsis
    assert width(fit("東京配管サービス株式会社", 9)) <= 9
    assert fit("short", 10) == "short"
    assert fit("/var/lib/calltrack/recordings/account-1/2026/12/02/1234.mp3", 20) == "…2026/12/02/1234.mp3"
    line = render([{"name": "A" * 100}], "table").splitlines()[1]
    assert line.endswith("…") and width(line) == 40


def test_terminal_escapes_in_cells_are_shown_not_obeyed() -> None:
    line = render([{"name": "evil\x1b[2Jname"}], "table").splitlines()[1]
    assert "\x1b" not in line and "\\x1b[2Jname" in line
