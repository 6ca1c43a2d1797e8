"""Numbers (read-only) and the audit log (administrators)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from schema.models import Account, AuditEntry, Call, NumberPool, Source, TrackingNumber, WebSession
from tracking.users import Viewer, allowed
from web.dashboard.core import BadInput, Dashboard, Denied, csv_response, json_response
from web.dashboard.filters import _int
from web.dashboard.queries import audit_export, local, scope
from web.dashboard.reports import pools
from web.dashboard.views_calls import _fmt

NUMBER_COLUMNS = [
    "number",
    "account",
    "source",
    "pool",
    "label",
    "forward_to",
    "status",
    "record",
    "calls_7d",
    "calls_30d",
]
AUDIT_COLUMNS = ["id", "at", "actor", "action", "target", "detail"]
AUDIT_PAGE = 100


async def numbers(board: Dashboard, request: Request) -> Response:
    fmt = _fmt(request)
    params = dict(request.query_params)
    asked = _int(params, "account")
    now = board.clock()

    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        accounts = scope(session, who, asked)
        ids = [a.id for a in accounts] or [-1]
        week, month = now - dt.timedelta(days=7), now - dt.timedelta(days=30)
        counts = {
            r.tracking_number_id: (int(r.week or 0), int(r.month or 0))
            for r in session.execute(
                select(
                    Call.tracking_number_id,
                    func.sum(case((Call.started_at >= week, 1), else_=0)).label("week"),
                    func.count().label("month"),
                )
                .where(Call.account_id.in_(ids), Call.started_at >= month, Call.tracking_number_id.is_not(None))
                .group_by(Call.tracking_number_id)
            )
        }
        rows = []
        query = (
            select(TrackingNumber, Account.name, Source.name, NumberPool.name)
            .join(Account, Account.id == TrackingNumber.account_id)
            .outerjoin(Source, Source.id == TrackingNumber.source_id)
            .outerjoin(NumberPool, NumberPool.id == TrackingNumber.pool_id)
            .where(TrackingNumber.account_id.in_(ids))
            .order_by(Account.name, TrackingNumber.status, TrackingNumber.number)
        )
        for tn, account, source, pool in session.execute(query):
            week_n, month_n = counts.get(tn.id, (0, 0))
            rows.append(
                {
                    "number": tn.number,
                    "account": account,
                    "source": source,
                    "pool": pool,
                    "label": tn.label,
                    "forward_to": tn.forward_to,
                    "status": tn.status,
                    "record": tn.record,
                    "calls_7d": week_n,
                    "calls_30d": month_n,
                }
            )
        accounts_all = [{"id": a.id, "name": a.name} for a in scope(session, who, None)]
        return {
            "numbers": rows,
            "pools": pools(session, accounts, now),
            "accounts": accounts_all,
            "account": asked,
            "viewer": who,
            "csrf": row.csrf,
        }

    result = await board.with_viewer(request, work)
    if fmt == "json":
        return json_response({"numbers": result["numbers"], "pools": result["pools"]})
    if fmt == "csv":
        return csv_response(result["numbers"], NUMBER_COLUMNS, "numbers.csv")
    return board.html(
        "numbers.html",
        title="Numbers",
        numbers=result["numbers"],
        pools=result["pools"],
        data={"accounts": result["accounts"], "account": asked},
        viewer=result["viewer"],
        csrf=result["csrf"],
    )


async def audit(board: Dashboard, request: Request) -> Response:
    fmt = _fmt(request)
    params = dict(request.query_params)
    page = _int(params, "page", 1, 100_000) or 1
    actor = params.get("actor", "").strip()
    action = params.get("action", "").strip()
    if len(actor) > 100 or len(action) > 64:
        raise BadInput("actor", "filter too long")

    def work(session: Session, who: Viewer, row: WebSession) -> dict[str, Any]:
        if not allowed(who, "audit"):
            raise Denied()
        query = select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc())
        if actor:
            query = query.where(AuditEntry.actor == actor)
        if action:
            query = query.where(
                or_(AuditEntry.action == action, AuditEntry.action.like(action.replace("%", "") + ".%"))
            )
        limit = 10_000 if fmt == "csv" else AUDIT_PAGE
        entries = list(session.scalars(query.offset((page - 1) * AUDIT_PAGE).limit(limit + 1)))
        rows = [
            {
                "id": e.id,
                "at": e.at,
                "local_time": local(e.at, "UTC"),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "detail": e.detail,
            }
            for e in entries[:limit]
        ]
        if fmt == "csv":
            audit_export(session, who, "audit", request.url.query)
        return {"entries": rows, "more": len(entries) > limit, "page": page, "viewer": who, "csrf": row.csrf}

    result = await board.with_viewer(request, work)
    if fmt == "json":
        return json_response({"entries": result["entries"], "page": page, "more": result["more"]})
    if fmt == "csv":
        import json

        rows = [
            {**r, "detail": json.dumps(r["detail"], ensure_ascii=False) if r["detail"] else ""}
            for r in result["entries"]
        ]
        return csv_response(rows, AUDIT_COLUMNS, "audit-log.csv")
    return board.html(
        "audit.html",
        title="Audit log",
        entries=result["entries"],
        more=result["more"],
        page=page,
        actor=actor,
        action=action,
        viewer=result["viewer"],
        csrf=result["csrf"],
    )
