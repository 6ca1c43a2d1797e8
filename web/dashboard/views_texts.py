"""Texts (SMS to and from tracking numbers): the list and one sender's thread, as HTML, JSON and CSV.

The rows come from ``tracking.texts`` (the same rows as ``calltrack sms list`` and ``sms thread``),
limited to the viewer's accounts by :func:`web.dashboard.queries.scope`: a member never sees another
account's texts, whatever ``account`` or ``number`` they ask for.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from schema.models import WebSession
from tracking import texts
from tracking.errors import InvalidInput
from tracking.users import Viewer
from web.dashboard import queries
from web.dashboard.core import PREFIX, BadInput, Dashboard, csv_response, json_response
from web.dashboard.filters import _int, period
from web.dashboard.views_calls import _fmt

#: rows on the page (the CSV has up to EXPORT)
PAGE = 200
EXPORT = 10_000


def texts_data(
    board: Dashboard, session: Session, who: Viewer, params: dict[str, str], fmt: str, thread: bool
) -> dict[str, Any]:
    """The one query of the Texts page (the list, or one number's thread) for *who* and these filters."""
    asked = _int(params, "account")
    accounts = queries.scope(session, who, asked)
    ids = None if queries.account_condition(who, accounts, asked) is None else [a.id for a in accounts]
    number = params.get("number", "").strip()[:40]
    region = board.settings.numbers.default_region
    if number:
        try:
            from tracking.phone import normalize

            number = normalize(number, region)
        except InvalidInput as exc:
            raise BadInput("number", str(exc)) from None
    data: dict[str, Any] = {
        "account": asked,
        "accounts": [{"id": a.id, "name": a.name} for a in queries.scope(session, who, None)],
        "number": number,
    }
    if thread:
        if not number:
            raise BadInput("number", "a thread needs the number (the sender's or the tracking number)")
        rows = texts.thread(session, board.settings, number, account_ids=ids)
    else:
        when = period(params, queries.timezone_of(accounts), board.clock(), default="30d")
        limit = EXPORT if fmt == "csv" else PAGE
        rows = texts.list_texts(
            session, board.settings, number=number or None, since=when.since, until=when.until, account_ids=ids,
            limit=limit,
        )  # fmt: skip
        data.update({"range": when.preset, "from": when.first.isoformat(), "to": when.last.isoformat()})
    # shown in the account's time, as the calls are (UTC across accounts in several zones)
    tz = data["timezone"] = queries.timezone_of(accounts)
    for r in rows:
        at = dt.datetime.fromisoformat(r["at"])
        r["local_time"] = queries.local(at if at.tzinfo else at.replace(tzinfo=dt.UTC), tz)
    data["texts"] = rows
    return data


async def _page(board: Dashboard, request: Request, thread: bool) -> Response:
    fmt = _fmt(request)
    params = dict(request.query_params)

    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        data = texts_data(board, session, who, params, fmt, thread)
        if fmt == "csv":
            queries.audit_export(session, who, "texts", request.url.query)
        return {"data": data, "viewer": who, "csrf": row.csrf}

    result = await board.with_viewer(request, work)
    data = result["data"]
    if fmt == "json":
        return json_response(data)
    if fmt == "csv":
        return csv_response(data["texts"], texts.COLUMNS, "texts-thread.csv" if thread else "texts.csv")
    here = "/texts/thread" if thread else "/texts"
    keep = {k: v for k, v in params.items() if k in ("account", "range", "from", "to", "number") and v}
    acct = {k: v for k, v in keep.items() if k == "account"}
    return board.html(
        "texts.html",
        title="Text thread" if thread else "Texts",
        data=data,
        thread=thread,
        f=params,
        csv=f"{PREFIX}{here}.csv?" + urllib.parse.urlencode(keep),
        # a sender's thread, in the account asked for ("...?account=1&" or "...?")
        thread_base=f"{PREFIX}/texts/thread?" + (urllib.parse.urlencode(acct) + "&" if acct else ""),
        viewer=result["viewer"],
        csrf=result["csrf"],
    )


async def texts_page(board: Dashboard, request: Request) -> Response:
    return await _page(board, request, thread=False)


async def thread_page(board: Dashboard, request: Request) -> Response:
    return await _page(board, request, thread=True)
