"""Listing output as a table, JSON or CSV (`--format`)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from tracking.csv_cells import cell as safe_cell

F = TypeVar("F", bound=Callable[..., Any])

format_option: Callable[[F], F] = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="Output format.",
)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


#: a table column is cut to this many terminal columns, with an ellipsis
MAX_WIDTH = 40
ELLIPSIS = "\u2026"


def _table_cell(value: Any) -> str:
    # A caller-controlled value must not break the table into extra lines, nor move the cursor.
    text = _cell(value)
    if text.isascii() and text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _escape(ch) for ch in text)


def _escape(ch: str) -> str:
    return {"\r": "\\r", "\n": "\\n", "\t": " "}.get(ch) or f"\\x{ord(ch):02x}"


def width(text: str) -> int:
    """Terminal columns *text* takes: East Asian wide characters and most emoji take two."""
    if text.isascii():
        return len(text)
    from wcwidth import wcswidth

    measured = wcswidth(text)
    return measured if measured >= 0 else len(text)


def fit(text: str, limit: int = MAX_WIDTH) -> str:
    """*text* cut to *limit* terminal columns, with an ellipsis where something was cut.

    A file path keeps its end (the file's name) and loses its beginning.
    """
    tail = text.startswith("/")
    if text.isascii():
        if len(text) <= limit:
            return text
        return ELLIPSIS + text[-(limit - 1) :] if tail else text[: limit - 1] + ELLIPSIS
    if width(text) <= limit:
        return text
    from wcwidth import wcwidth

    out: list[str] = []
    used = 0
    for ch in reversed(text) if tail else text:
        w = max(wcwidth(ch), 0)
        if used + w > limit - 1:
            break
        out.append(ch)
        used += w
    return ELLIPSIS + "".join(reversed(out)) if tail else "".join(out) + ELLIPSIS


def _pad(text: str, size: int) -> str:
    return text + " " * (size - width(text))


def render(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> str:
    columns = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        # One object a line: readable, and each line goes through json's C encoder
        # (indent= would use the pure-Python one, several times slower on long listings).
        if not rows:
            return "[]"
        body = ",\n".join(json.dumps(row, ensure_ascii=False, default=str) for row in rows)
        return f"[\n{body}\n]"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        # the csv module quotes a cell holding the line terminator, not a lone CR: a row with one is
        # quoted whole, so a carriage return a caller put in a name cannot split the row
        quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        for row in rows:
            # every cell, whoever typed it, starts no spreadsheet formula (tracking/csv_cells.py)
            cells = [safe_cell(_cell(row.get(c))) for c in columns]
            (quoted if any("\r" in c for c in cells) else writer).writerow(cells)
        return buf.getvalue().rstrip("\n")
    if not rows:
        return "(none)"
    # Column by column: a column of plain printable ASCII (nearly every one) is measured with len()
    # and padded by str.format, at C speed; only the others go cell by cell through fit() and width().
    ascii_cols: list[bool] = []
    by_column: list[list[str]] = []
    for c in columns:
        texts = [_cell(row.get(c)) for row in rows]
        joined = "".join(texts)
        if joined.isascii() and joined.isprintable():
            by_column.append([t if len(t) <= MAX_WIDTH else fit(t) for t in texts])
            ascii_cols.append(True)
        else:
            by_column.append([fit(_table_cell(t)) for t in texts])
            ascii_cols.append(False)
    widths = [
        max(len(c), max(map(len, col)) if plain else max(map(width, col)))
        for c, col, plain in zip(columns, by_column, ascii_cols, strict=True)
    ]
    lines = ["  ".join(_pad(c.upper(), w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    if all(ascii_cols):
        template = "  ".join(f"{{:<{w}}}" for w in widths)
        lines += [template.format(*r).rstrip() for r in zip(*by_column, strict=True)]
    else:
        lines += [
            "  ".join(_pad(v, w) for v, w in zip(r, widths, strict=True)).rstrip() for r in zip(*by_column, strict=True)
        ]
    return "\n".join(lines)


def emit(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> None:
    click.echo(render(rows, fmt, columns))


def emit_record(record: dict[str, Any], fmt: str = "table") -> None:
    """One object: `key: value` lines, or JSON/CSV like a one-row listing."""
    if fmt != "table":
        click.echo(
            render([record], fmt) if fmt == "csv" else json.dumps(record, indent=2, ensure_ascii=False, default=str)
        )
        return
    size = max(len(k) for k in record)
    for key, value in record.items():
        click.echo(f"{key.ljust(size)}  {_table_cell(value)}")
