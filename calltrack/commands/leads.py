"""`calltrack leads`: calls and website form leads in one list."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from calltrack.context import AppContext, pass_app
from calltrack.options import TimeType, check_period
from calltrack.output import emit, format_option


@click.group("leads")
def group() -> None:
    """Calls and website form submissions, side by side, with the marketing behind each."""


@group.command("list")
@click.option("--account", help="Only this account's leads.")
@click.option("--since", type=TimeType(), help="Leads at or after this time (2026-11-01, 7d, 12h).")
@click.option("--until", type=TimeType(), help="Leads before this time.")
@click.option("--kind", type=click.Choice(["call", "form"]), help="Only calls, or only form leads.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True)
@format_option
@pass_app
def list_(
    app: AppContext,
    account: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    kind: str | None,
    limit: int,
    fmt: str,
) -> None:
    """Leads newest first: calls (not blocked, not spam) and form leads (JSON and CSV: a form's fields too)."""
    from tracking.leads import COLUMNS, list_leads

    check_period(since, until)
    with app.session() as session:
        rows = list_leads(session, account=account, since=since, until=until, kind=kind, limit=limit)
    if fmt == "csv":
        rows = [_csv_row(r) for r in rows]
    emit(rows, fmt, COLUMNS if fmt == "table" else [*COLUMNS, "fields"])


def _csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A form lead's fields in one cell (the CSV writer keeps every cell from starting a formula)."""
    if row["kind"] != "form":
        return {**row, "fields": ""}
    return {**row, "fields": "; ".join(f"{k}: {v}" for k, v in (row.get("fields") or {}).items())}
