"""Overview and reports (HTML with charts, JSON, CSV per table)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from schema.models import WebSession
from tracking.users import Viewer
from web.dashboard import queries, reports
from web.dashboard.core import PREFIX, BadInput, Dashboard, csv_response, json_response
from web.dashboard.filters import _int, period
from web.dashboard.views_calls import _fmt


def _common(params: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in params.items() if k in ("account", "range", "from", "to") and v}
    return keep


async def overview(board: Dashboard, request: Request) -> Response:
    fmt = _fmt(request)
    if fmt == "csv":
        raise BadInput("format", "the overview has no CSV; the reports page exports every table")
    params = dict(request.query_params)
    asked = _int(params, "account")
    now = board.clock()

    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        accounts = queries.scope(session, who, asked)
        when = period(params, queries.timezone_of(accounts), now, default="30d")
        seen = reports.scan(session, who, accounts, asked, when, tables=False)
        data = {
            "range": when.preset,
            "from": when.first.isoformat(),
            "to": when.last.isoformat(),
            "timezone": when.timezone,
            "account": asked,
            "accounts": [{"id": a.id, "name": a.name} for a in queries.scope(session, who, None)],
            "summary": seen.summary,
            "daily": seen.daily,
            "busiest": seen.heatmap["busiest"],
        }
        return {"data": data, "viewer": who, "csrf": row.csrf}

    result = await board.with_viewer(request, work)
    if fmt == "json":
        return json_response(result["data"])
    data = result["data"]
    chart = {
        "days": data["daily"]["days"],
        "series": data["daily"]["series"],
        "dispositions": [
            [name, data["summary"][name]] for name in ("answered", "missed", "abandoned", "busy", "failed")
        ],
    }
    return board.html(
        "overview.html", title="Overview", data=data, chart=chart, viewer=result["viewer"], csrf=result["csrf"]
    )


async def reports_page(board: Dashboard, request: Request) -> Response:
    fmt = _fmt(request)
    params = dict(request.query_params)
    asked = _int(params, "account")
    table = params.get("table", "source")
    if table not in (*reports.TABLES, "missed", "heatmap", "pools"):
        raise BadInput("table", f"table must be one of {', '.join((*reports.TABLES, 'missed', 'heatmap', 'pools'))}")
    now = board.clock()

    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        accounts = queries.scope(session, who, asked)
        when = period(params, queries.timezone_of(accounts), now, default="30d")
        seen = reports.scan(session, who, accounts, asked, when)
        data = {
            "range": when.preset,
            "from": when.first.isoformat(),
            "to": when.last.isoformat(),
            "timezone": when.timezone,
            "account": asked,
            "accounts": [{"id": a.id, "name": a.name} for a in queries.scope(session, who, None)],
            "tables": seen.tables,
            "heatmap": seen.heatmap,
            "missed": reports.missed_not_called_back(session, who, accounts, asked, when),
            "pools": reports.pools(session, accounts, now),
        }
        if fmt == "csv":
            queries.audit_export(session, who, "report", request.url.query)
        return {"data": data, "viewer": who, "csrf": row.csrf}

    result = await board.with_viewer(request, work)
    data = result["data"]
    if fmt == "json":
        return json_response(data)
    if fmt == "csv":
        return _csv(table, data)
    common = _common(params)
    csv_links = {
        t: f"{PREFIX}/reports.csv?" + urllib.parse.urlencode({**common, "table": t})
        for t in (*reports.TABLES, "missed", "heatmap", "pools")
    }
    chart = {
        "sources": [r["source"] for r in data["tables"]["source"]],
        "calls": [r["calls"] for r in data["tables"]["source"]],
        "answered": [r["answered"] for r in data["tables"]["source"]],
    }
    levels = _levels(data["heatmap"])
    return board.html(
        "reports.html",
        title="Reports",
        data=data,
        chart=chart,
        levels=levels,
        csv_links=csv_links,
        columns=reports.REPORT_COLUMNS,
        source_columns=reports.columns_of("source"),
        viewer=result["viewer"],
        csrf=result["csrf"],
    )


def _levels(heat: dict[str, Any]) -> list[list[int]]:
    top = heat["max"] or 1
    return [[0 if n == 0 else min(5, 1 + (4 * n) // top) for n in row] for row in heat["grid"]]


KEYS = {
    "source": ["source"],
    "campaign": ["campaign"],
    "landing": ["landing_page"],
    "keyword": ["keyword", "click_id"],
    "number": ["tracking_number"],
}


def _csv(table: str, data: dict[str, Any]) -> Response:
    if table in KEYS:
        return csv_response(data["tables"][table], [*KEYS[table], *reports.columns_of(table)], f"report-{table}.csv")
    if table == "missed":
        return csv_response(
            data["missed"],
            ["id", "started_at", "local_time", "caller_number", "caller_name", "disposition"],
            "missed-not-called-back.csv",
        )
    if table == "heatmap":
        rows = [
            {"day": day, **{f"{h:02d}": n for h, n in enumerate(counts)}}
            for day, counts in zip(data["heatmap"]["days"], data["heatmap"]["grid"], strict=True)
        ]
        return csv_response(rows, ["day", *[f"{h:02d}" for h in range(24)]], "calls-by-hour.csv")
    columns = [
        "account",
        "pool",
        "source",
        "size",
        "live",
        "peak",
        "overflow_count",
        "utilisation",
        "suggested_size",
        "warning",
        "advice",
    ]
    return csv_response(data["pools"], columns, "pools.csv")
