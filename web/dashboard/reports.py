"""Overview and report data: attribution tables, the hour-by-weekday heatmap, missed calls, pool health.

Grouped in SQL; times are bucketed by the UTC hour in SQL and placed into the account's local
day and hour in Python (so SQLite, which has no time zones, and PostgreSQL agree, DST included).
A report row counts as ``tracking.reports`` does (blocked callers apart, live calls neither
answered nor missed).  A qualified lead is a call a person marked a lead, or, when nobody said,
one the lead rules qualified; its value is the person's, else the rules'.
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
import zoneinfo
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, func, literal, or_, select
from sqlalchemy.orm import Session, aliased

from schema.models import Account, Call, CallOutcome, CallQualification, Source, VisitorSession
from tracking.leases import pool_status
from tracking.users import Viewer
from web.dashboard.filters import Period
from web.dashboard.queries import account_condition

DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
TABLES = ("source", "campaign", "landing", "keyword", "number")
REPORT_COLUMNS = [
    "calls",
    "answered",
    "missed",
    "abandoned",
    "busy",
    "answer_rate",
    "first_time",
    "avg_talk_seconds",
    "qualified_leads",
    "lead_value",
]
#: pool utilisation (peak leases over size) above which the page warns
POOL_WARN = 0.75


def _hour_bucket(session: Session) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.date_trunc("hour", Call.started_at), "YYYY-MM-DD HH24")
    return func.strftime("%Y-%m-%d %H", Call.started_at)


#: statements built once and run with new bind values: building one costs more than a small query
_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _cached(key: tuple[Any, ...], build: Any) -> Any:
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = build()
    return statement


def _scope(who: Viewer, accounts: list[Account], asked: int | None, when: Period) -> tuple[bool, dict[str, Any]]:
    """(limited to some accounts?, the bind values of :func:`_where`)."""
    params: dict[str, Any] = {"since": when.since, "until": when.until}
    scoped = account_condition(who, accounts, asked) is not None
    if scoped:
        params["accounts"] = [a.id for a in accounts] or [-1]
    return scoped, params


def _where(scoped: bool) -> list[Any]:
    where = [Call.started_at >= bindparam("since"), Call.started_at < bindparam("until")]
    if scoped:
        where.append(Call.account_id.in_(bindparam("accounts", expanding=True)))
    return where


def _counted() -> Any:
    return or_(Call.disposition.is_(None), Call.disposition != "blocked")


def _qualified() -> Any:
    return or_(
        CallQualification.lead.is_(True),
        and_(CallQualification.lead.is_(None), CallOutcome.lead == "qualified"),
    )


def _measures() -> list[Any]:
    disp = Call.disposition
    counted = _counted()

    def count(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    qualified = and_(counted, _qualified())
    return [
        count(counted).label("calls"),
        count(disp == "answered").label("answered"),
        count(disp == "missed").label("missed"),
        count(disp == "abandoned").label("abandoned"),
        count(disp == "busy").label("busy"),
        count(disp.is_(None)).label("live"),
        count(and_(counted, Call.first_time.is_(True))).label("first_time"),
        func.sum(case((disp == "answered", func.coalesce(Call.talk_time, 0)), else_=0)).label("talk"),
        count(qualified).label("qualified_leads"),
        func.sum(case((qualified, func.coalesce(CallQualification.value, CallOutcome.value, 0)), else_=0)).label(
            "lead_value"
        ),
    ]


def _row(keys: dict[str, Any], m: Any) -> dict[str, Any]:
    calls, answered, live = int(m.calls or 0), int(m.answered or 0), int(m.live or 0)
    ended = calls - live
    talk = float(m.talk or 0)
    return {
        **keys,
        "calls": calls,
        "answered": answered,
        "missed": int(m.missed or 0),
        "abandoned": int(m.abandoned or 0),
        "busy": int(m.busy or 0),
        "answer_rate": round(100.0 * answered / ended, 1) if ended else None,
        "first_time": int(m.first_time or 0),
        "avg_talk_seconds": round(talk / answered, 1) if answered else None,
        "qualified_leads": int(m.qualified_leads or 0),
        "lead_value": round(float(m.lead_value or 0), 2),
    }


def _joined(query: Any) -> Any:
    return (
        query.select_from(Call)
        .outerjoin(Source, Source.id == Call.source_id)
        .outerjoin(VisitorSession, VisitorSession.id == Call.visitor_session_id)
        .outerjoin(CallQualification, CallQualification.call_id == Call.id)
        .outerjoin(CallOutcome, CallOutcome.call_id == Call.id)
    )


def _landing(url: str | None) -> str:
    if not url:
        return "(none)"
    parts = urllib.parse.urlsplit(url)
    return f"{parts.netloc}{parts.path or '/'}" if parts.netloc else url.split("?", 1)[0]


def tables(session: Session, who: Viewer, accounts: list[Account], asked: int | None, when: Period) -> dict[str, Any]:
    """Every attribution table of the reports page."""
    scoped, params = _scope(who, accounts, asked, when)
    click = case(
        (
            or_(
                VisitorSession.gclid.is_not(None),
                VisitorSession.gbraid.is_not(None),
                VisitorSession.wbraid.is_not(None),
            ),
            literal("yes"),
        ),
        else_=literal("no"),
    )
    keys: dict[str, list[tuple[str, Any]]] = {
        "source": [("source", func.coalesce(Source.name, "(none)"))],
        "campaign": [("campaign", func.coalesce(VisitorSession.utm_campaign, Source.campaign, "(none)"))],
        "landing": [("landing_page", VisitorSession.landing_url)],
        "keyword": [("keyword", func.coalesce(VisitorSession.utm_term, "(none)")), ("click_id", click)],
        "number": [("tracking_number", func.coalesce(Call.tracking_number, "(none)"))],
    }
    out: dict[str, list[dict[str, Any]]] = {}
    for table, cols in keys.items():

        def build(cols: list[tuple[str, Any]] = cols) -> Any:
            exprs = [e.label(name) for name, e in cols]
            # blocked callers are not leads: no row of their own
            where = [*_where(scoped), _counted()]
            return _joined(select(*exprs, *_measures())).where(*where).group_by(*[e for _, e in cols])

        results = list(session.execute(_cached(("table", table, scoped), build), params))
        if table == "landing":
            rows = [_row({"landing_page": key}, m) for key, m in _merge_landing(results).items()]
        else:
            rows = [_row({name: getattr(m, name) for name, _ in cols}, m) for m in results]
        rows.sort(key=lambda r: (-r["calls"], str(next(iter(r.values())))))
        out[table] = rows
    return out


_SUMMED = (
    "calls",
    "answered",
    "missed",
    "abandoned",
    "busy",
    "live",
    "first_time",
    "talk",
    "qualified_leads",
    "lead_value",
)


def _merge_landing(results: list[Any]) -> dict[str, SimpleNamespace]:
    """Landing pages without their query strings (each click id makes a URL of its own)."""
    merged: dict[str, SimpleNamespace] = {}
    for m in results:
        key = _landing(m.landing_page)
        into = merged.setdefault(key, SimpleNamespace(**dict.fromkeys(_SUMMED, 0)))
        for col in _SUMMED:
            setattr(into, col, getattr(into, col) + float(getattr(m, col) or 0))
    return merged


def _local_hours(
    session: Session, who: Viewer, accounts: list[Account], asked: int | None, when: Period, by_source: bool
) -> list[Any]:
    scoped, params = _scope(who, accounts, asked, when)
    dialect = session.get_bind().dialect.name

    def build() -> Any:
        bucket = _hour_bucket(session).label("bucket")
        extra = [func.coalesce(Source.name, "(none)").label("source")] if by_source else []
        return (
            select(bucket, Account.timezone, *extra, func.count().label("n"))
            .select_from(Call)
            .outerjoin(Account, Account.id == Call.account_id)
            .outerjoin(Source, Source.id == Call.source_id)
            .where(*_where(scoped), _counted())
            .group_by(bucket, Account.timezone, *extra)
        )

    return list(session.execute(_cached(("hours", dialect, by_source, scoped), build), params))


def _to_local(bucket: str, timezone: str | None) -> dt.datetime:
    """A "YYYY-MM-DD HH" UTC bucket as local time (read by hand: strptime costs more than the query)."""
    utc = dt.datetime(int(bucket[0:4]), int(bucket[5:7]), int(bucket[8:10]), int(bucket[11:13]), tzinfo=dt.UTC)
    return utc.astimezone(zoneinfo.ZoneInfo(timezone or "UTC"))


def heatmap(session: Session, who: Viewer, accounts: list[Account], asked: int | None, when: Period) -> dict[str, Any]:
    """Calls by local weekday (rows, Monday first) and hour (columns)."""
    grid = [[0] * 24 for _ in range(7)]
    for r in _local_hours(session, who, accounts, asked, when, False):
        t = _to_local(r.bucket, r.timezone)
        grid[t.weekday()][t.hour] += int(r.n)
    top = max((max(row) for row in grid), default=0)
    busiest = None
    if top:
        day = next(d for d in range(7) if top in grid[d])
        busiest = {"day": DAYS[day], "hour": grid[day].index(top), "calls": top}
    return {"days": DAYS, "grid": grid, "max": top, "busiest": busiest}


def daily_by_source(
    session: Session, who: Viewer, accounts: list[Account], asked: int | None, when: Period
) -> dict[str, Any]:
    """Calls per local day and source, for the stacked chart (one series per source)."""
    days = when.days
    index = {d: i for i, d in enumerate(days)}
    series: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    for r in _local_hours(session, who, accounts, asked, when, True):
        day = _to_local(r.bucket, r.timezone).date()
        if day in index:
            series[r.source][index[day]] += int(r.n)
    names = sorted(series, key=lambda s: (-sum(series[s]), s))
    return {"days": [d.isoformat() for d in days], "series": [{"source": n, "calls": series[n]} for n in names]}


def summary(session: Session, who: Viewer, accounts: list[Account], asked: int | None, when: Period) -> dict[str, Any]:
    scoped, params = _scope(who, accounts, asked, when)

    def build() -> Any:
        failed = func.sum(case((Call.disposition == "failed", 1), else_=0)).label("failed")
        return _joined(select(*_measures(), failed)).where(*_where(scoped))

    m = session.execute(_cached(("summary", scoped), build), params).one()
    row = _row({}, m)
    row["failed"] = int(m.failed or 0)
    return row


def missed_not_called_back(
    session: Session, who: Viewer, accounts: list[Account], asked: int | None, when: Period, limit: int = 200
) -> list[dict[str, Any]]:
    """Callers nobody answered, with no later answered call from the same number to the same account."""
    scoped, params = _scope(who, accounts, asked, when)

    def build() -> Any:
        later = aliased(Call)
        return (
            select(Call.id, Call.started_at, Call.caller_number, Call.caller_name, Call.disposition, Account.timezone)
            .select_from(Call)
            .join(Account, Account.id == Call.account_id)
            .where(
                *_where(scoped),
                Call.disposition.in_(("missed", "abandoned", "busy")),
                Call.caller_number.is_not(None),
                Call.caller_number != "",
                ~exists().where(
                    later.account_id == Call.account_id,
                    later.caller_number == Call.caller_number,
                    later.started_at > Call.started_at,
                    later.disposition == "answered",
                ),
            )
            .order_by(Call.started_at.desc())
            .limit(bindparam("limit"))
        )

    query = _cached(("missed", scoped), build)
    params["limit"] = limit
    from web.dashboard.queries import local

    return [
        {
            "id": r.id,
            "started_at": r.started_at,
            "local_time": local(r.started_at, r.timezone),
            "caller_number": r.caller_number,
            "caller_name": r.caller_name,
            "disposition": r.disposition,
        }
        for r in session.execute(query, params)
    ]


def pools(session: Session, accounts: list[Account], now: dt.datetime) -> list[dict[str, Any]]:
    rows = []
    for account in accounts:
        for r in pool_status(session, account.name, clock=lambda: now):
            size = r["size"]
            utilisation = round(r["peak"] / size, 2) if size else None
            rows.append(
                {**r, "utilisation": utilisation, "warning": utilisation is not None and utilisation > POOL_WARN}
            )
    return rows
