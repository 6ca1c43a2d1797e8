"""One list of leads: calls and website form submissions side by side, newest first.

A call is a lead unless its caller was blocked or it was flagged as spam; a do-not-track
caller's call is listed without caller data (the call row holds none).  Both kinds carry
their source, campaign and landing page, so an agency sees which marketing brought each.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from schema.models import Account, Call, CallOutcome, FormLead, Source, VisitorSession
from tracking.accounts import get_account
from tracking.calls import BLOCKED
from tracking.errors import InvalidInput

KINDS = ("call", "form")
COLUMNS = ["kind", "id", "at", "account", "source", "campaign", "contact", "name", "detail", "page"]

#: form fields that name the person, in order of preference
_NAME_FIELDS = ("name", "full_name", "fullname", "your-name", "first_name", "firstname")


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _campaign(source: Source | None, visit: VisitorSession | None) -> str | None:
    return (visit.utm_campaign if visit is not None else None) or (source.campaign if source is not None else None)


def _person(fields: dict[str, Any]) -> str | None:
    lowered = {str(k).lower(): v for k, v in fields.items()}
    for key in _NAME_FIELDS:
        if lowered.get(key):
            return str(lowered[key])
    first, last = lowered.get("first_name") or lowered.get("first"), lowered.get("last_name") or lowered.get("last")
    return " ".join(p for p in (first, last) if p) or None


def list_leads(
    session: Session,
    *,
    account: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    kind: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    if kind is not None and kind not in KINDS:
        raise InvalidInput(f"unknown lead kind {kind!r} (use call or form)")
    account_id = get_account(session, account).id if account else None
    rows: list[dict[str, Any]] = []
    if kind in (None, "call"):
        q = (
            select(Call, Account.name, Source, VisitorSession)
            .join(Account, Account.id == Call.account_id)
            .outerjoin(Source, Source.id == Call.source_id)
            .outerjoin(VisitorSession, VisitorSession.id == Call.visitor_session_id)
            .outerjoin(CallOutcome, CallOutcome.call_id == Call.id)
            .where(
                or_(Call.disposition.is_(None), Call.disposition != BLOCKED),
                or_(CallOutcome.spam.is_(None), CallOutcome.spam.is_(False)),
            )
            .order_by(Call.started_at.desc(), Call.id.desc())
            .limit(limit)
        )
        if account_id is not None:
            q = q.where(Call.account_id == account_id)
        if since is not None:
            q = q.where(Call.started_at >= since)
        if until is not None:
            q = q.where(Call.started_at < until)
        for call, account_name, source, visit in session.execute(q):
            detail = call.disposition or "live"
            if call.talk_time:
                detail += f", {call.talk_time:.0f} s"
            rows.append(
                {
                    "kind": "call",
                    "id": call.id,
                    "at": call.started_at,
                    "account": account_name,
                    "source": source.name if source else None,
                    "campaign": _campaign(source, visit),
                    "contact": call.caller_number,
                    "name": call.caller_name,
                    "detail": detail,
                    "page": visit.landing_url if visit else None,
                    "fields": None,
                    "landing_url": visit.landing_url if visit else None,
                }
            )
    if kind in (None, "form"):
        f = (
            select(FormLead, Account.name, Source, VisitorSession)
            .join(Account, Account.id == FormLead.account_id)
            .outerjoin(Source, Source.id == FormLead.source_id)
            .outerjoin(VisitorSession, VisitorSession.id == FormLead.visitor_session_id)
            .order_by(FormLead.submitted_at.desc(), FormLead.id.desc())
            .limit(limit)
        )
        if account_id is not None:
            f = f.where(FormLead.account_id == account_id)
        if since is not None:
            f = f.where(FormLead.submitted_at >= since)
        if until is not None:
            f = f.where(FormLead.submitted_at < until)
        for lead, account_name, source, visit in session.execute(f):
            rows.append(
                {
                    "kind": "form",
                    "id": lead.id,
                    "at": lead.submitted_at,
                    "account": account_name,
                    "source": source.name if source else None,
                    "campaign": _campaign(source, visit),
                    "contact": lead.email or lead.phone,
                    "name": _person(lead.fields or {}),
                    "detail": f"form {lead.form_name}" if lead.form_name else "form",
                    "page": lead.page_url,
                    "fields": dict(lead.fields or {}),
                    "landing_url": visit.landing_url if visit else None,
                }
            )
    rows.sort(key=lambda r: (r["at"] is not None, r["at"] or dt.datetime.min.replace(tzinfo=dt.UTC)), reverse=True)
    for row in rows[:limit]:
        row["at"] = _iso(row["at"])
    return rows[:limit]


def form_leads_by_source(
    session: Session, account_id: int | None, since: dt.datetime | None, until: dt.datetime | None
) -> dict[tuple[str, str], int]:
    """Form leads per (account name, source name or "(none)"), for the source report."""
    from sqlalchemy import func

    q = (
        select(Account.name, Source.name, func.count())
        .select_from(FormLead)
        .join(Account, Account.id == FormLead.account_id)
        .outerjoin(Source, Source.id == FormLead.source_id)
        .group_by(Account.name, Source.name)
    )
    if account_id is not None:
        q = q.where(FormLead.account_id == account_id)
    if since is not None:
        q = q.where(FormLead.submitted_at >= since)
    if until is not None:
        q = q.where(FormLead.submitted_at < until)
    return {(a, s or "(none)"): int(n) for a, s, n in session.execute(q)}
