"""Reports: which sources (and which tracking numbers) made the phone ring.

What a row counts, so spam and calls in progress do not distort it:

- ``calls`` leaves out blocked callers (``blocked``, counted apart);
- ``missed`` (nobody answered in time) and ``abandoned`` (the caller gave up) are two columns;
- ``answer_rate`` is answered over the calls that ended: a live call is neither
  answered nor missed yet (``live``, counted apart);
- ``first_time`` counts first-time callers of calls that reached an account;
- ``after_hours`` counts the calls that came in while the number's business hours were closed;
- ``spam`` counts the calls flagged as likely spam (``tracking/spam.py``), kept out of every other
  column: a spam call is not a call, not answered, never a lead;
- ``qualified`` counts the qualified leads (``tracking/qualification.py``: a person's word in the
  dashboard first, else the lead rules'), ``lead_rate`` is qualified over calls, ``value`` sums
  the qualified calls' values (the person's, else the rules');
- ``top_keywords`` (sources only) are the words said most often in the source's transcripts;
- ``texts`` (sources only) counts the texts received from senders not blocked, ``first_time_texts``
  those whose sender had never called or texted the account before (texts carry no calls' columns).

Every source (and every active tracking number) of the accounts reported on has a
row, zeros when it had no calls.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import Session

from schema.models import Account, Call, CallOutcome, CallQualification, SmsMessage, Source, TrackingNumber, Transcript
from tracking import qualification
from tracking.accounts import get_account
from tracking.calls import BLOCKED

#: the numbers of a report row, in column order
MEASURES = [
    "calls",
    "answered",
    "missed",
    "abandoned",
    "busy",
    "failed",
    "live",
    "blocked",
    "after_hours",
    "first_time",
    "answer_rate",
    "avg_talk_seconds",
    "talk_minutes",
    "spam",
    "qualified",
    "lead_rate",
    "value",
]


def _measures() -> list[Any]:
    disp = Call.disposition
    not_spam = func.coalesce(CallOutcome.spam, False).is_(False)
    counted = (disp.is_(None) | (disp != BLOCKED)) & not_spam

    def count(condition: Any) -> Any:
        return func.sum(case((condition, 1), else_=0))

    qualified = counted & qualification.qualified_sql()
    return [
        count(counted).label("calls"),
        count(not_spam & (disp == "answered")).label("answered"),
        count(not_spam & (disp == "missed")).label("missed"),
        count(not_spam & (disp == "abandoned")).label("abandoned"),
        count(not_spam & (disp == "busy")).label("busy"),
        count(not_spam & (disp == "failed")).label("failed"),
        count(not_spam & disp.is_(None)).label("live"),
        count(not_spam & (disp == BLOCKED)).label("blocked"),
        count(counted & Call.after_hours.is_(True)).label("after_hours"),
        count(counted & Call.first_time.is_(True) & Call.account_id.is_not(None)).label("first_time"),
        func.sum(case((not_spam & (disp == "answered"), func.coalesce(Call.talk_time, 0)), else_=0)).label("talk"),
        count(func.coalesce(CallOutcome.spam, False).is_(True)).label("spam"),
        count(qualified).label("qualified"),
        func.sum(case((qualified, func.coalesce(qualification.value_sql(), 0)), else_=0)).label("lead_value"),
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


def _row(keys: dict[str, Any], m: Any | None) -> dict[str, Any]:
    def value(name: str) -> int:
        return int(getattr(m, name) or 0) if m is not None else 0

    calls, answered, live = value("calls"), value("answered"), value("live")
    talk = float(m.talk or 0.0) if m is not None else 0.0
    ended = calls - live
    return {
        **keys,
        **{name: value(name) for name in MEASURES[:10]},
        "answer_rate": round(100.0 * answered / ended, 1) if ended else None,
        "avg_talk_seconds": round(talk / answered, 1) if answered else None,
        "talk_minutes": round(talk / 60.0, 1),
        "spam": value("spam"),
        "qualified": value("qualified"),
        "lead_rate": round(100.0 * value("qualified") / calls, 1) if calls else None,
        "value": round(float(m.lead_value or 0.0), 2) if m is not None else 0.0,
    }


def _accounts(session: Session, account: str | None) -> Select[Any]:
    query = select(Account.id)
    if account:
        query = query.where(Account.id == get_account(session, account).id)
    return query


def by_source(
    session: Session, *, account: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """One row per account and source (zeros for a source without calls); calls without a source as '(none)'."""
    query = (
        select(Account.name.label("account"), Source.name.label("source"), *_measures())
        .select_from(Call)
        .outerjoin(Account, Account.id == Call.account_id)
        .outerjoin(Source, Source.id == Call.source_id)
        .outerjoin(CallOutcome, CallOutcome.call_id == Call.id)
        .outerjoin(CallQualification, CallQualification.call_id == Call.id)
        .group_by(Account.name, Source.name)
    )
    rows = {
        (m.account or "(unknown)", m.source or "(none)"): _row(
            {"account": m.account or "(unknown)", "source": m.source or "(none)"}, m
        )
        for m in session.execute(_filtered(session, query, account, since, until))
    }
    every = select(Account.name, Source.name).join(Source, Source.account_id == Account.id)
    for acc_name, src_name in session.execute(every.where(Account.id.in_(_accounts(session, account)))):
        rows.setdefault((acc_name, src_name), _row({"account": acc_name, "source": src_name}, None))
    for key, (texts, first) in texts_by_source(session, account=account, since=since, until=until).items():
        row = rows.setdefault(key, _row({"account": key[0], "source": key[1]}, None))
        row["texts"], row["first_time_texts"] = texts, first
    # website form leads beside the calls (tracking/leads.py)
    from tracking.leads import form_leads_by_source

    forms = form_leads_by_source(session, get_account(session, account).id if account else None, since, until)
    for key in forms:
        rows.setdefault(key, _row({"account": key[0], "source": key[1]}, None))
    for key, row in rows.items():
        row["form_leads"] = forms.get(key, 0)
    keywords = top_keywords(session, account=account, since=since, until=until)
    for key, row in rows.items():
        row.setdefault("texts", 0)
        row.setdefault("first_time_texts", 0)
        row["top_keywords"] = ", ".join(f"{word} {n}" for word, n in keywords.get(key, []))
    return sorted(rows.values(), key=lambda r: (r["account"], -r["calls"], -r["blocked"], r["source"]))


def received_texts() -> Any:
    """SQL: the text counts in a report: received, its sender not blocked (the dashboard's too)."""
    return (SmsMessage.direction == "in") & (SmsMessage.status.is_(None) | (SmsMessage.status != "blocked"))


def texts_by_source(
    session: Session, *, account: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> dict[tuple[str, str], tuple[int, int]]:
    """(account, source) -> (texts received, from first-time senders); blocked senders left out."""
    counted = received_texts()
    query = (
        select(
            Account.name,
            Source.name,
            func.count(SmsMessage.id),
            func.sum(case((SmsMessage.first_time.is_(True), 1), else_=0)),
        )
        .select_from(SmsMessage)
        .outerjoin(Account, Account.id == SmsMessage.account_id)
        .outerjoin(Source, Source.id == SmsMessage.source_id)
        .where(counted)
        .group_by(Account.name, Source.name)
    )
    if account:
        query = query.where(SmsMessage.account_id == get_account(session, account).id)
    if since is not None:
        query = query.where(SmsMessage.received_at >= since)
    if until is not None:
        query = query.where(SmsMessage.received_at < until)
    return {
        (acc or "(unknown)", src or "(none)"): (int(n or 0), int(first or 0))
        for acc, src, n, first in session.execute(query)
    }


def by_number(
    session: Session, *, account: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """One row per tracking number dialled (unknown numbers too, as Asterisk gave them; zeros for an
    active number without calls)."""
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
        .outerjoin(CallOutcome, CallOutcome.call_id == Call.id)
        .outerjoin(CallQualification, CallQualification.call_id == Call.id)
        .group_by(Account.name, Call.tracking_number, TrackingNumber.label)
    )
    rows = {
        (m.account or "(unknown)", m.number or "(unknown)"): _row(
            {"account": m.account or "(unknown)", "number": m.number or "(unknown)", "label": m.label}, m
        )
        for m in session.execute(_filtered(session, query, account, since, until))
    }
    active = (
        select(Account.name, TrackingNumber.number, TrackingNumber.label)
        .join(TrackingNumber, TrackingNumber.account_id == Account.id)
        .where(TrackingNumber.status == "active", Account.id.in_(_accounts(session, account)))
    )
    for acc_name, number, label in session.execute(active):
        rows.setdefault((acc_name, number), _row({"account": acc_name, "number": number, "label": label}, None))
    return sorted(rows.values(), key=lambda r: (r["account"], -r["calls"], -r["blocked"], r["number"]))


#: words too common to tell anything about a call
STOPWORDS = frozenset(
    """a about after again all am an and any are as at be because been but by can could did do does
    doing don't for from get got had has have having he her here hi hello him his how i i'd i'll i'm
    if in into is it it's its just know like me my no not now of off oh ok okay on one or our out
    please right so some than thank thanks that that's the their them then there they this to too uh
    um up us very was we well were what when where which who will with would yeah yes you your
    you're goodbye bye calling call""".split()
)


def top_keywords(
    session: Session,
    *,
    account: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    per_source: int = 5,
) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """(account, source) -> the words said most often in its calls' transcripts (spam left out), with counts."""
    import re
    from collections import Counter

    query: Any = (
        select(Account.name, Source.name, Transcript.text)
        .select_from(Transcript)
        .join(Call, Call.id == Transcript.call_id)
        .outerjoin(Account, Account.id == Call.account_id)
        .outerjoin(Source, Source.id == Call.source_id)
        .outerjoin(CallOutcome, CallOutcome.call_id == Call.id)
        .where(Transcript.state == "done", func.coalesce(CallOutcome.spam, False).is_(False))
    )
    counters: dict[tuple[str, str], Counter[str]] = {}
    for acc, src, text in session.execute(_filtered(session, query, account, since, until)):
        words = [w for w in re.findall(r"[a-z][a-z']+", (text or "").lower()) if w not in STOPWORDS and len(w) > 2]
        counters.setdefault((acc or "(unknown)", src or "(none)"), Counter()).update(words)
    return {key: c.most_common(per_source) for key, c in counters.items()}
