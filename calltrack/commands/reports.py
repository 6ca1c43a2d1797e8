"""`calltrack reports`: which sources made the phone ring."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import click

from calltrack.context import AppContext, pass_app
from calltrack.options import TimeType, check_period
from calltrack.output import emit, format_option
from tracking.reports import MEASURES


def report_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--until", type=TimeType(), help="Calls started before this time.")(f)
    f = click.option("--since", type=TimeType(), help="Calls started at or after this time (2026-11-01, 7d, 12h).")(f)
    f = click.option("--account", help="Only this account.")(f)
    return format_option(f)


@click.group("reports")
def group() -> None:
    """Which sources and numbers made the phone ring."""


def _report(name: str, columns: list[str], help_text: str) -> None:
    """Register `reports NAME`, which lists tracking.reports.by_NAME's rows."""

    @group.command(name, help=help_text)
    @report_options
    @pass_app
    def command(
        app: AppContext, account: str | None, since: dt.datetime | None, until: dt.datetime | None, fmt: str
    ) -> None:
        from tracking import reports

        check_period(since, until)
        build = {"sources": reports.by_source, "numbers": reports.by_number}[name]
        with app.session() as session:
            rows = build(session, account=account, since=since, until=until)
        measures = [*MEASURES]
        if name == "sources":  # website form leads beside the calls
            measures.insert(1, "form_leads")
        emit(
            rows,
            fmt,
            [*columns, *measures, *(["texts", "first_time_texts", "top_keywords"] if name == "sources" else [])],
        )


_report(
    "sources",
    ["account", "source"],
    "Calls per marketing source: answered, missed, abandoned, blocked, after hours, first-time callers, talk time, "
    "spam, qualified leads, lead rate, value, texts received and from first-time senders, top keywords.",
)
_report("numbers", ["account", "number", "label"], "Calls per tracking number dialled.")
