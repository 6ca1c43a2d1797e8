"""Calls: the list (HTML, JSON, CSV), a call's detail, its qualification form, its recording."""

from __future__ import annotations

import urllib.parse
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from schema.models import WebSession
from tracking.users import Viewer
from web.dashboard import queries
from web.dashboard.core import PREFIX, Dashboard, Denied, csv_response, json_response
from web.dashboard.filters import call_filters, period


def _fmt(request: Request) -> str:
    fmt = request.path_params.get("fmt", "html")
    if fmt not in ("html", "json", "csv"):
        raise Denied()
    return str(fmt)


def _id(request: Request, name: str = "id") -> int:
    raw = str(request.path_params.get(name, ""))
    if not raw.isdigit() or len(raw) > 12:
        raise Denied()
    return int(raw)


async def calls(board: Dashboard, request: Request) -> Response:
    fmt = _fmt(request)
    params = dict(request.query_params)
    filters = call_filters(params)
    now = board.clock()

    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        accounts = queries.scope(session, who, filters.account)
        when = period(params, queries.timezone_of(accounts), now, default="30d")
        limit = 10_000 if fmt == "csv" else queries.PER_PAGE
        data = queries.calls_page(session, board.settings, who, filters, when.since, when.until, limit=limit)
        if fmt == "csv":
            queries.audit_export(session, who, "calls", request.url.query)
        data.update(
            {
                "range": when.preset,
                "from": when.first.isoformat(),
                "to": when.last.isoformat(),
                "timezone": when.timezone,
                "filters": filters.query(),
            }
        )
        return {"data": data, "viewer": who, "csrf": row.csrf}

    result = await board.with_viewer(request, work)
    data = result["data"]
    if fmt == "json":
        return json_response(data)
    if fmt == "csv":
        return csv_response(data["calls"], queries.CALL_COLUMNS, "calls.csv")
    base = {**data["filters"], "range": data["range"]}
    if data["range"] == "custom":
        base.update({"from": data["from"], "to": data["to"]})
    links = {
        "csv": f"{PREFIX}/calls.csv?" + urllib.parse.urlencode({k: v for k, v in base.items() if k != "page"}),
        "next": f"{PREFIX}/calls?" + urllib.parse.urlencode({**base, "page": data["page"] + 1}),
        "prev": f"{PREFIX}/calls?" + urllib.parse.urlencode({**base, "page": data["page"] - 1}),
        "blocked": f"{PREFIX}/calls?" + urllib.parse.urlencode({**base, "blocked": "yes", "page": 1}),
        "leads": f"{PREFIX}/calls?" + urllib.parse.urlencode({k: v for k, v in base.items() if k != "blocked"}),
    }
    return board.html("calls.html", title="Calls", data=data, links=links, f=params, **_ctx(result))


def _ctx(result: dict[str, Any]) -> dict[str, Any]:
    return {"viewer": result["viewer"], "csrf": result["csrf"]}


async def call(board: Dashboard, request: Request) -> Response:
    fmt = _fmt(request)
    if fmt == "csv":
        raise Denied()
    call_id = _id(request)

    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        return {"data": queries.call_detail(session, board.settings, who, call_id), "viewer": who, "csrf": row.csrf}

    result = await board.with_viewer(request, work)
    if fmt == "json":
        return json_response(result["data"])
    saved = request.query_params.get("saved") == "1"
    return board.html("call.html", title=f"Call {call_id}", data=result["data"], saved=saved, **_ctx(result))


async def qualify(board: Dashboard, request: Request) -> Response:
    board.check_origin(request)
    call_id = _id(request)
    form = await board.form(request)

    def work(session: Session, who: Viewer, row: WebSession) -> None:
        board.check_csrf(request, row, form)
        queries.qualify(session, who, call_id, form)

    await board.with_viewer(request, work)
    if request.headers.get("accept", "").startswith("application/json"):
        return json_response({"ok": True})
    return RedirectResponse(f"{PREFIX}/calls/{call_id}?saved=1", status_code=303)


async def recording(board: Dashboard, request: Request) -> Response:
    recording_id = _id(request)
    download = request.query_params.get("download") == "1"
    ranged = request.headers.get("range", "")
    # a player fetches a recording in ranges: a play is the request from its start
    first = not ranged or ranged.replace(" ", "").startswith("bytes=0-")

    def work(session: Session, who: Viewer, row: WebSession) -> tuple[Any, str, str]:
        # a seek inside a play already audited is served without another entry
        return queries.recording_file(session, board.settings, who, recording_id, download, audit=first or download)

    path, media, name = await board.with_viewer(request, work)
    disposition = "attachment" if download else "inline"
    return FileResponse(
        path,
        media_type=media,
        headers={"Cache-Control": "private, no-store"},
        content_disposition_type=disposition,
        filename=name,
    )
