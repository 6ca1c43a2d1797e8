"""Calls in progress, and the server-sent event stream that keeps the Live page current.

The AMI listener writes legs, answers and ends as they happen; the stream re-reads the
viewer's live calls every ``poll`` seconds (checking the session each time, so sign-out,
a revoked account or a disabled user stops it) and sends them when they changed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from schema.models import Account, Call, Source, WebSession
from tracking.users import Viewer
from web.dashboard.core import Dashboard, Signin, json_response
from web.dashboard.queries import _display, account_condition, scope

#: a call not ended after this long is not shown as live (the listener lost it; `calls rebuild` closes it)
STALE = dt.timedelta(hours=4)
#: seconds between two reads of the live calls
POLL = 1.0
#: a comment line this often keeps proxies from closing a quiet stream
KEEPALIVE = 15.0


def live_calls(session: Session, board: Dashboard, who: Viewer, now: dt.datetime) -> list[dict[str, Any]]:
    accounts = scope(session, who, None)
    query = (
        select(
            Call.id,
            Call.started_at,
            Call.answered_at,
            Call.caller_number,
            Call.caller_name,
            Call.tracking_number,
            Call.answered_by,
            Account.name.label("account"),
            Source.name.label("source"),
        )
        .select_from(Call)
        .outerjoin(Account, Account.id == Call.account_id)
        .outerjoin(Source, Source.id == Call.source_id)
        .where(Call.ended_at.is_(None), Call.started_at.is_not(None), Call.started_at > now - STALE)
        .order_by(Call.started_at.desc(), Call.id.desc())
        .limit(500)
    )
    condition = account_condition(who, accounts, None)
    if condition is not None:
        query = query.where(condition)
    out = []
    for r in session.execute(query):
        since = r.answered_at or r.started_at
        out.append(
            {
                "id": r.id,
                "state": "talking" if r.answered_at else "ringing",
                "caller_number": r.caller_number,
                "caller_display": _display(r.caller_number, board.settings),
                "caller_name": r.caller_name,
                "tracking_number": r.tracking_number,
                "account": r.account,
                "source": r.source,
                "answered_by": r.answered_by,
                "started_at": r.started_at,
                "seconds": max(0, int((now - since).total_seconds())),
                "total_seconds": max(0, int((now - r.started_at).total_seconds())),
            }
        )
    return out


async def live_page(board: Dashboard, request: Request) -> Response:
    fmt = request.path_params.get("fmt", "html")
    now = board.clock()

    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        return {"calls": live_calls(session, board, who, now), "viewer": who, "csrf": row.csrf}

    result = await board.with_viewer(request, work)
    if fmt == "json":
        return json_response({"calls": result["calls"]})
    return board.html(
        "live.html", title="Live calls", calls=result["calls"], viewer=result["viewer"], csrf=result["csrf"]
    )


def _event(name: str, data: Any) -> bytes:
    body = json.dumps(data, default=lambda v: v.isoformat(), ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {body}\n\n".encode()


async def events(board: Dashboard, request: Request) -> Response:
    poll = float(request.app.state.live_poll)

    def read(session: Session, who: Viewer, row: WebSession) -> list[dict[str, Any]]:
        return live_calls(session, board, who, board.clock())

    first = await board.with_viewer(request, read)  # Signin (401) before the stream starts

    async def stream() -> AsyncIterator[bytes]:
        last_key: str | None = None
        calls = first
        quiet = 0.0
        yield b"retry: 3000\n\n"
        while True:
            # ids, states and who answered: the seconds count up in the browser between changes
            key = json.dumps([(c["id"], c["state"], c["answered_by"], c["caller_name"]) for c in calls])
            if key != last_key:
                yield _event("calls", {"calls": calls, "at": board.clock()})
                last_key, quiet = key, 0.0
            elif quiet >= KEEPALIVE:
                yield b": keepalive\n\n"
                quiet = 0.0
            await asyncio.sleep(poll)
            quiet += poll
            if await request.is_disconnected():
                return
            try:
                calls = await board.with_viewer(request, read)
            except Signin:
                yield _event("signed-out", {})
                return

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
