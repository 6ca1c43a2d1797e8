"""Overview and report data: attribution tables, the hour-by-weekday heatmap, missed calls, pool health.

Grouped in SQL (the period's calls read once, summed per table); times are bucketed by the UTC hour in SQL and placed into the account's local
day and hour in Python (so SQLite, which has no time zones, and PostgreSQL agree, DST included).
A report row counts as ``tracking.reports`` does (blocked callers apart, live calls neither
answered nor missed, a call flagged as spam counted in ``spam`` only: not a call, not answered,
never a lead, not on the heatmap).  A qualified lead is a call a person marked a lead, or, when nobody said,
one the lead rules qualified; its value is the person's, else the rules' (``tracking.qualification``,
the definition CLI reports and conversion exports share).
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import String, bindparam, case, cast, exists, func, literal_column, or_, select, union_all
from sqlalchemy import null as sql_null
from sqlalchemy.orm import Session, aliased

from schema.models import Account, Call, CallOutcome, SmsMessage, Source, VisitorSession
from tracking import qualification
from tracking.leases import pool_status
from tracking.reports import received_texts
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
    "spam",
]
#: the source table's extra columns (texts carry no calls' columns), as ``calltrack reports sources``
TEXT_COLUMNS = ["texts", "first_time_texts"]
#: pool utilisation (peak leases over size) above which the page warns
POOL_WARN = 0.75


def columns_of(table: str) -> list[str]:
    """The measures of *table*'s rows (the source table counts texts too)."""
    return [*REPORT_COLUMNS, *TEXT_COLUMNS] if table == "source" else REPORT_COLUMNS


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


def _landing(url: str | None) -> str:
    if not url:
        return "(none)"
    parts = urllib.parse.urlsplit(url)
    return f"{parts.netloc}{parts.path or '/'}" if parts.netloc else url.split("?", 1)[0]


class _Tally:
    """The measures of one report row: sums of grouped rows (several SQL groups can name one row)."""

    __slots__ = ("calls", "answered", "missed", "abandoned", "busy", "failed", "live", "first_time", "talk",
                 "qualified_leads", "lead_value", "spam", "texts", "first_time_texts")  # fmt: skip

    def __init__(self) -> None:
        self.calls = self.answered = self.missed = self.abandoned = self.busy = self.failed = self.live = 0
        self.first_time = self.qualified_leads = self.spam = self.texts = self.first_time_texts = 0
        self.talk = self.lead_value = 0.0

    def add(self, r: Any) -> None:
        """Add one grouped row of :func:`_scan_statement` (its sums over the group's calls)."""
        self.calls += int(r.calls)
        self.answered += int(r.answered)
        self.missed += int(r.missed)
        self.abandoned += int(r.abandoned)
        self.busy += int(r.busy)
        self.failed += int(r.failed)
        self.live += int(r.live)
        self.first_time += int(r.first_time)
        self.talk += float(r.talk or 0.0)
        self.qualified_leads += int(r.leads)
        self.lead_value += float(r.lead_value or 0.0)
        self.spam += int(r.spam)

    def merge(self, other: _Tally) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def row(self, keys: dict[str, Any]) -> dict[str, Any]:
        ended = self.calls - self.live
        return {
            **keys,
            "calls": self.calls,
            "answered": self.answered,
            "missed": self.missed,
            "abandoned": self.abandoned,
            "busy": self.busy,
            "answer_rate": round(100.0 * self.answered / ended, 1) if ended else None,
            "first_time": self.first_time,
            "avg_talk_seconds": round(self.talk / self.answered, 1) if self.answered else None,
            "qualified_leads": self.qualified_leads,
            "lead_value": round(self.lead_value, 2),
            "spam": self.spam,
        }


@dataclass
class Scan:
    """What one pass over a period's calls (blocked callers left out) gives the overview and reports."""

    tables: dict[str, list[dict[str, Any]]]
    heatmap: dict[str, Any]
    daily: dict[str, Any]
    summary: dict[str, Any]


def _page_sql(dialect: str, url: Any) -> Any:
    """SQL: *url* up to its first ``?`` or ``#`` (as ``url.split("?")[0].split("#")[0]``)."""
    if dialect == "postgresql":
        return func.split_part(func.split_part(url, "?", 1), "#", 1)
    # SQLite: instr() of the URL with the mark appended is the mark's place, or one past the end
    return func.substr(url, 1, func.min(func.instr(url.concat("?"), "?"), func.instr(url.concat("#"), "#")) - 1)


def _scan_statement(session: Session, scoped: bool, tables: bool) -> Any:
    """One statement: the period's calls read once (a materialized CTE), then grouped per table in SQL.

    Each result row is (table, key1, key2, key3, sums...): the five attribution tables grouped by
    their keys (the landing page by the URL without query or fragment), and ``hour`` rows (source,
    UTC hour bucket, time zone) for the heatmap and the daily series.  The overview (*tables*
    false) asks for the source rows (its figures are their sum) and the hour rows only.
    """
    dialect = session.get_bind().dialect.name

    def build() -> Any:
        # any ad click id the visit carried (Google's three, Microsoft's)
        click = or_(
            VisitorSession.gclid.is_not(None),
            VisitorSession.gbraid.is_not(None),
            VisitorSession.wbraid.is_not(None),
            VisitorSession.msclkid.is_not(None),
        )
        url = VisitorSession.landing_url
        calls = (
            select(
                _hour_bucket(session).label("bucket"),
                Account.timezone.label("timezone"),
                Source.name.label("source"),
                func.coalesce(VisitorSession.utm_campaign, Source.campaign).label("campaign"),
                _page_sql(dialect, url).label("landing"),
                VisitorSession.utm_term.label("term"),
                case((click, 1), else_=0).label("click"),
                Call.tracking_number.label("number"),
                Call.disposition.label("disposition"),
                case((Call.first_time.is_(True), 1), else_=0).label("first"),
                Call.talk_time.label("talk"),
                # a person's word first, else the lead rules': the definition CLI reports and exports use
                case((qualification.qualified_sql(), 1), else_=0).label("lead"),
                func.coalesce(qualification.value_sql(), 0).label("value"),
                case((CallOutcome.spam.is_(True), 1), else_=0).label("spam"),
            )
            .select_from(Call)
            .outerjoin(Account, Account.id == Call.account_id)
            .outerjoin(Source, Source.id == Call.source_id)
            .outerjoin(VisitorSession, VisitorSession.id == Call.visitor_session_id)
        )
        c = qualification.joined(calls).where(*_where(scoped), _counted()).cte("period_calls")
        c = c.prefix_with("MATERIALIZED")  # read once, grouped six times
        counted = c.c.spam == 0  # a call flagged as spam counts in its own column, kept out of every other

        def n(condition: Any) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        def by(disposition: str) -> Any:
            return n(counted & (c.c.disposition == disposition))

        sums = [
            n(counted).label("calls"),
            by("answered").label("answered"),
            by("missed").label("missed"),
            by("abandoned").label("abandoned"),
            by("busy").label("busy"),
            by("failed").label("failed"),
            n(counted & c.c.disposition.is_(None)).label("live"),
            n(counted & (c.c.first == 1)).label("first_time"),
            func.sum(case((counted & (c.c.disposition == "answered"), func.coalesce(c.c.talk, 0.0)), else_=0.0)).label(
                "talk"
            ),
            n(counted & (c.c.lead == 1)).label("leads"),
            func.sum(case((counted & (c.c.lead == 1), c.c.value), else_=0.0)).label("lead_value"),
            n(c.c.spam == 1).label("spam"),
        ]
        none = sql_null()
        keyed = {
            "source": (c.c.source, none, none),
            "campaign": (c.c.campaign, none, none),
            "landing": (c.c.landing, none, none),
            "keyword": (c.c.term, c.c.click, none),
            "number": (c.c.number, none, none),
        }
        parts = []
        for table, keys in keyed.items():
            if not tables and table != "source":
                continue
            grouped = [k for k in keys if k is not none]
            parts.append(
                select(
                    literal_column(f"'{table}'").label("tbl"),
                    *(
                        cast(k, String).label(f"k{i}") if k is not none else none.label(f"k{i}")
                        for i, k in enumerate(keys)
                    ),
                    *sums,
                ).group_by(*grouped)
            )
        # the heatmap and the daily series count calls only: the other sums would cost a CASE each per call
        hour_sums = [func.count().label("calls"), *(none.label(s.name) for s in sums[1:])]
        parts.append(
            select(literal_column("'hour'").label("tbl"), c.c.source, c.c.bucket, c.c.timezone, *hour_sums)
            .where(counted)
            .group_by(c.c.source, c.c.bucket, c.c.timezone)
        )
        return union_all(*parts)

    return _cached(("scan", dialect, scoped, tables), build)


def scan(
    session: Session, who: Viewer, accounts: list[Account], asked: int | None, when: Period, tables: bool = True
) -> Scan:
    """Every table, the heatmap, the daily series and the figures, from one statement over the period's calls.

    The calls are read once and summed in SQL per table (:func:`_scan_statement`); Python only
    names the groups (several SQL groups can make one row: a missing campaign and "(none)", two
    URLs of one landing page), places the UTC hours in the account's local day and hour, and
    sorts.  ``tables=False`` (the overview) leaves the five attribution tables empty.
    """
    scoped, params = _scope(who, accounts, asked, when)
    groups: dict[str, dict[Any, _Tally]] = {t: defaultdict(_Tally) for t in TABLES}
    grid = [[0] * 24 for _ in range(7)]
    days = when.days
    index = {d: i for i, d in enumerate(days)}
    series: dict[str, list[int]] = defaultdict(lambda: [0] * len(days))
    local: dict[tuple[str, str | None], dt.datetime] = {}
    for r in session.execute(_scan_statement(session, scoped, tables), params):
        table = r.tbl
        if table == "hour":  # one row per source and UTC hour: an hour is placed in local time once
            bucket = (r.k1, r.k2)
            t = local.get(bucket)
            if t is None:
                t = local[bucket] = _to_local(r.k1, r.k2)
            grid[t.weekday()][t.hour] += int(r.calls)
            day = index.get(t.date())
            if day is not None:
                series[r.k0 or "(none)"][day] += int(r.calls)
            continue
        if table == "landing":
            key: Any = _landing(r.k0)
        elif table == "keyword":
            key = (r.k0 or "(none)", "yes" if r.k1 == "1" else "no")  # the CASE 1/0 cast to text
        else:
            key = r.k0 or "(none)"
        groups[table][key].add(r)
    total = _Tally()
    for tally in groups["source"].values():
        total.merge(tally)
    if tables:
        _add_texts(session, scoped, params, groups["source"])
    else:
        groups["source"].clear()
    names = {"source": "source", "campaign": "campaign", "landing": "landing_page", "number": "tracking_number"}
    out: dict[str, list[dict[str, Any]]] = {}
    for table, tallies in groups.items():
        if table == "keyword":
            rows = [t.row({"keyword": k[0], "click_id": k[1]}) for k, t in tallies.items()]
        else:
            rows = [t.row({names[table]: k}) for k, t in tallies.items()]
        if table == "source":
            for row, tally in zip(rows, tallies.values(), strict=True):
                row["texts"], row["first_time_texts"] = tally.texts, tally.first_time_texts
        rows.sort(key=lambda r: (-r["calls"], str(next(iter(r.values())))))
        out[table] = rows
    top = max((max(row) for row in grid), default=0)
    busiest = None
    if top:
        d = next(d for d in range(7) if top in grid[d])
        busiest = {"day": DAYS[d], "hour": grid[d].index(top), "calls": top}
    order = sorted(series, key=lambda s: (-sum(series[s]), s))
    summary = total.row({})
    summary["failed"] = total.failed
    return Scan(
        tables=out,
        heatmap={"days": DAYS, "grid": grid, "max": top, "busiest": busiest},
        daily={"days": [d.isoformat() for d in days], "series": [{"source": n, "calls": series[n]} for n in order]},
        summary=summary,
    )


def _add_texts(session: Session, scoped: bool, params: dict[str, Any], sources: dict[Any, _Tally]) -> None:
    """The period's texts received per source (blocked senders apart), into the source table's tallies."""
    dialect = session.get_bind().dialect.name

    def build() -> Any:
        where = [
            received_texts(),
            SmsMessage.received_at >= bindparam("since"),
            SmsMessage.received_at < bindparam("until"),
        ]
        if scoped:
            where.append(SmsMessage.account_id.in_(bindparam("accounts", expanding=True)))
        first = func.sum(case((SmsMessage.first_time.is_(True), 1), else_=0))
        return (
            select(Source.name, func.count(SmsMessage.id), first)
            .select_from(SmsMessage)
            .outerjoin(Source, Source.id == SmsMessage.source_id)
            .where(*where)
            .group_by(Source.name)
        )

    for name, n, first_time in session.execute(_cached(("texts", dialect, scoped), build), params):
        tally = sources[name or "(none)"]
        tally.texts += int(n or 0)
        tally.first_time_texts += int(first_time or 0)


def _to_local(bucket: str, timezone: str | None) -> dt.datetime:
    """A "YYYY-MM-DD HH" UTC bucket as local time (read by hand: strptime costs more than the query)."""
    utc = dt.datetime(int(bucket[0:4]), int(bucket[5:7]), int(bucket[8:10]), int(bucket[11:13]), tzinfo=dt.UTC)
    return utc.astimezone(zoneinfo.ZoneInfo(timezone or "UTC"))


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
