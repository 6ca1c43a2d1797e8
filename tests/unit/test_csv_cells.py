"""CSV cells: every OWASP formula trigger is neutralised; plain numbers and E.164 numbers stay raw."""

from __future__ import annotations

import csv
import io

import pytest

from calltrack.output import render
from tracking.csv_cells import cell, row


@pytest.mark.parametrize(
    "hostile",
    [
        '=HYPERLINK("http://evil.test","x")',
        "+cmd|' /C calc'!A0",
        "-2+3+cmd|' /C calc'!A0",
        "@SUM(1+1)",
        "\t=1+1",
        "\r=1+1",
        "\0=1+1",
        "+1-404-555-1234",  # looks like a phone number, is a formula to a spreadsheet
        "-1e3+A1",
        "=1",
        "+",
        "-",
    ],
)
def test_a_cell_that_would_start_a_formula_gets_an_apostrophe(hostile: str) -> None:
    assert cell(hostile) == "'" + hostile
    # through the CLI's CSV writer too, and the csv module's quoting keeps the text exact
    (back,) = list(csv.DictReader(io.StringIO(render([{"v": hostile}], "csv"), newline="")))
    assert back["v"] == "'" + hostile


@pytest.mark.parametrize("raw", ["+14045551234", "-5", "+3", "12.50", "-0.5", "1e3", "-.5", "0", "Jane", "'=x", ""])
def test_numbers_e164_and_ordinary_text_stay_as_they_are(raw: str) -> None:
    assert cell(raw) == raw


def test_a_carriage_return_inside_a_cell_cannot_split_the_row() -> None:
    text = render([{"name": "Jane\rDoe", "n": 1}, {"name": "Ann", "n": 2}], "csv")
    assert list(csv.DictReader(io.StringIO(text, newline=""))) == [
        {"name": "Jane\rDoe", "n": "1"},
        {"name": "Ann", "n": "2"},
    ]


def test_a_row_leaves_values_that_are_not_text_to_the_writer() -> None:
    assert row(["=x", 5, None, "+14045551234"]) == ["'=x", 5, None, "+14045551234"]
