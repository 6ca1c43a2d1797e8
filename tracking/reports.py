"""Reports: which sources (and which tracking numbers) made the phone ring."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from schema.models import Account, Call, Source, TrackingNumber
from tracking.accounts import get_account


def _measures() -> list[Any]:
    disp = Call.disposition
    return [
        func.count(Call.id).label("calls"),
        func.sum(case((disp == "answered", 1), else_=0)).label("answered"),
        func.sum(case((disp.in_(("missed", "abandoned")), 1), else_=0)).label("missed"),
        func.sum(case((disp == "busy", 1), else_=0)).label("busy"),
        func.sum(case((disp == "failed", 1), else_=0)).label("failed"),
        func.sum(case((Call.first_time.is_(True), 1), else_=0)).label("first_time"),
        func.sum(case((disp.is_(None), 1), else_=0)).label("live"),
        func.sum(func.coalesce(Call.talk_time, 0)).label("talk"),
    ]


def _filtered(
    session: Session, query: Select[Any], account: str | None, since: dt.datetime | None, until: dt.datetime | None
) -> Select[Any]:
    if account:
        query = query.where(Call.account_id == get_account(session, account).id)
    if since is not None:
        query = query.where(Call.started_at >= since)
    if until is not None:
        query = query.where(Call.started_at < until)
    return query


def _row(keys: dict[str, Any], m: Any) -> dict[str, Any]:
    calls = int(m.calls or 0)
    answered = int(m.answered or 0)
    talk = float(m.talk or 0.0)
    return {
        **keys,
        "calls": calls,
        "answered": answered,
        "missed": int(m.missed or 0),
        "busy": int(m.busy or 0),
        "failed": int(m.failed or 0),
        "live": int(m.live or 0),
        "first_time": int(m.first_time or 0),
        "answer_rate": round(100.0 * answered / calls, 1) if calls else None,
        "avg_talk_seconds": round(talk / answered, 1) if answered else None,
        "talk_minutes": round(talk / 60.0, 1),
    }


def by_source(
    session: Session, *, account: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """One row per account and source; calls no source was found for are grouped as '(none)'."""
    query = (
        select(Account.name.label("account"), Source.name.label("source"), *_measures())
        .select_from(Call)
        .outerjoin(Account, Account.id == Call.account_id)
        .outerjoin(Source, Source.id == Call.source_id)
        .group_by(Account.name, Source.name)
    )
    rows = [
        _row({"account": m.account or "(unknown)", "source": m.source or "(none)"}, m)
        for m in session.execute(_filtered(session, query, account, since, until))
    ]
    return sorted(rows, key=lambda r: (r["account"], -r["calls"], r["source"]))


def by_number(
    session: Session, *, account: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """One row per tracking number dialled (unknown numbers too, as Asterisk gave them)."""
    query = (
        select(
            Account.name.label("account"),
            Call.tracking_number.label("number"),
            TrackingNumber.label.label("label"),
            *_measures(),
        )
        .select_from(Call)
        .outerjoin(Account, Account.id == Call.account_id)
        .outerjoin(TrackingNumber, TrackingNumber.id == Call.tracking_number_id)
        .group_by(Account.name, Call.tracking_number, TrackingNumber.label)
    )
    rows = [
        _row({"account": m.account or "(unknown)", "number": m.number or "(unknown)", "label": m.label}, m)
        for m in session.execute(_filtered(session, query, account, since, until))
    ]
    return sorted(rows, key=lambda r: (r["account"], -r["calls"], r["number"]))
