"""`calltrack calls`: calls and their timelines."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import click

from calltrack.context import AppContext, pass_app
from calltrack.options import TimeType, check_period
from calltrack.output import emit, emit_record, format_option

if TYPE_CHECKING:
    from schema.models import Call, VisitorSession

#: the JSON fields of `calls list` (documented in README.md)
FIELDS = [
    "id",
    "system",
    "linkedid",
    "caller_number",
    "caller_name",
    "caller_location",
    "first_time",
    "tracking_number",
    "account",
    "source",
    "started_at",
    "answered_at",
    "ended_at",
    "duration",
    "ring_time",
    "talk_time",
    "times_estimated",
    "times_source",
    "answered_by",
    "transferred_to",
    "hangup_cause",
    "disposition",
    "after_hours",
    "recording",
    "visit",
]
#: the website visit behind a pool-number call (`visit` in JSON, `visit_*` columns in CSV)
VISIT_FIELDS = [
    "landing_url",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "gclid",
    "gbraid",
    "wbraid",
    "msclkid",
    "pages_seen",
    "started_at",
    "last_seen_at",
]
CSV_FIELDS = [f for f in FIELDS if f != "visit"] + [f"visit_{f}" for f in VISIT_FIELDS]
TABLE_COLUMNS = [
    "id",
    "started_at",
    "caller_number",
    "caller_name",
    "tracking_number",
    "source",
    "disposition",
    "duration",
    "talk_time",
    "answered_by",
]
STATUSES = ["answered", "missed", "busy", "abandoned", "failed", "blocked", "live"]


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def visit_record(visit: VisitorSession | None) -> dict[str, Any] | None:
    """What the website visit told about the caller's origin (None: the call came without one)."""
    if visit is None:
        return None
    return {
        "landing_url": visit.landing_url,
        "referrer": visit.referrer,
        "utm_source": visit.utm_source,
        "utm_medium": visit.utm_medium,
        "utm_campaign": visit.utm_campaign,
        "utm_term": visit.utm_term,
        "utm_content": visit.utm_content,
        "gclid": visit.gclid,
        "gbraid": visit.gbraid,
        "wbraid": visit.wbraid,
        "msclkid": visit.msclkid,
        "pages_seen": visit.pages_seen,
        "started_at": _iso(visit.started_at),
        "last_seen_at": _iso(visit.last_seen_at),
    }


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """*record* with its visit as ``visit_*`` columns (CSV and tables have no nested values)."""
    out = {k: v for k, v in record.items() if k != "visit"}
    visit = record.get("visit") or {}
    out.update({f"visit_{f}": visit.get(f) for f in VISIT_FIELDS})
    return out


def call_record(
    call: Call, account: str | None, source: str | None, visit: VisitorSession | None = None
) -> dict[str, Any]:
    return {
        "id": call.id,
        "system": call.system,
        "linkedid": call.linkedid,
        "caller_number": call.caller_number,
        "caller_name": call.caller_name,
        "caller_location": call.caller_location,
        "first_time": call.first_time,
        "tracking_number": call.tracking_number,
        "account": account,
        "source": source,
        "started_at": _iso(call.started_at),
        "answered_at": _iso(call.answered_at),
        "ended_at": _iso(call.ended_at),
        "duration": call.duration,
        "ring_time": call.ring_time,
        "talk_time": call.talk_time,
        # the call ended while calltrack was not looking: its end is an estimate, or Asterisk's CDR
        "times_estimated": call.times_source == "estimated",
        "times_source": call.times_source or ("events" if call.ended_at is not None else None),
        "answered_by": call.answered_by,
        "transferred_to": call.transferred_to,
        "hangup_cause": call.hangup_cause,
        "disposition": call.disposition or "",
        "after_hours": call.after_hours,
        "recording": call.recording_file,
        "visit": visit_record(visit),
    }


@click.group("calls")
def group() -> None:
    """Calls and their timelines."""


@group.command("list")
@click.option("--since", type=TimeType(), help="Calls started at or after this time (2026-11-29, 12h, 7d).")
@click.option("--until", type=TimeType(), help="Calls started before this time.")
@click.option("--account", help="Only this account's calls.")
@click.option("--source", help="Only calls attributed to this source.")
@click.option("--status", type=click.Choice(STATUSES), help="Only calls with this disposition (live: not ended).")
@click.option(
    "--after-hours/--in-hours",
    "after_hours",
    default=None,
    help="Only calls that came while the number's business hours were closed (or open).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="At most this many calls, newest first.",
)
@format_option
@pass_app
def list_(
    app: AppContext,
    since: dt.datetime | None,
    until: dt.datetime | None,
    account: str | None,
    source: str | None,
    status: str | None,
    after_hours: bool | None,
    limit: int,
    fmt: str,
) -> None:
    """List calls, newest first."""
    from sqlalchemy import select

    from schema.models import Account, Call, Source, VisitorSession
    from tracking.errors import NotFound

    check_period(since, until)
    with app.session() as session:
        query = (
            select(Call, Account.name, Source.name, VisitorSession)
            .outerjoin(Account, Account.id == Call.account_id)
            .outerjoin(Source, Source.id == Call.source_id)
            .outerjoin(VisitorSession, VisitorSession.id == Call.visitor_session_id)
        )
        acc: Account | None = None
        if since is not None:
            query = query.where(Call.started_at >= since)
        if until is not None:
            query = query.where(Call.started_at < until)
        if account is not None:
            acc = session.scalar(select(Account).where(Account.name == account))
            if acc is None:
                raise NotFound(f"no account named {account!r}")
            query = query.where(Call.account_id == acc.id)
        if source is not None:
            sources = select(Source.id).where(Source.name == source)
            if acc is not None:
                sources = sources.where(Source.account_id == acc.id)
            if session.scalar(sources.limit(1)) is None:
                raise NotFound(f"no source named {source!r}" + (f" in account {account!r}" if account else ""))
            query = query.where(Call.source_id.in_(sources))
        if status == "live":
            query = query.where(Call.disposition.is_(None))
        elif status is not None:
            query = query.where(Call.disposition == status)
        if after_hours is not None:
            # in hours: the route found the number open (calls it did not judge have no hours)
            query = query.where(Call.after_hours.is_(after_hours))
        query = query.order_by(Call.started_at.desc().nulls_last(), Call.id.desc()).limit(limit)
        rows = [call_record(*row) for row in session.execute(query)]
    if fmt == "json":
        emit(rows, fmt, FIELDS)
    else:
        emit([_flat(r) for r in rows], fmt, TABLE_COLUMNS if fmt == "table" else CSV_FIELDS)


@group.command("show")
@click.argument("call_id")
@format_option
@pass_app
def show(app: AppContext, call_id: str, fmt: str) -> None:
    """One call with its legs and timeline (ID: the call's id, or its linkedid)."""
    import json

    from sqlalchemy import select

    from schema.models import Account, Call, CallEvent, CallLeg, Source, VisitorSession
    from tracking.errors import NotFound

    with app.session() as session:
        query = select(Call)
        query = query.where(Call.id == int(call_id)) if call_id.isdigit() else query.where(Call.linkedid == call_id)
        calls = session.scalars(query).all()
        if not calls:
            raise NotFound(f"no call {call_id!r}")
        if len(calls) > 1:
            raise click.ClickException(f"linkedid {call_id!r} is known on several systems; give the call's id")
        call = calls[0]
        account = session.scalar(select(Account.name).where(Account.id == call.account_id)) if call.account_id else None
        source = session.scalar(select(Source.name).where(Source.id == call.source_id)) if call.source_id else None
        visit = session.get(VisitorSession, call.visitor_session_id) if call.visitor_session_id else None
        record = call_record(call, account, source, visit)
        record["caller_country"] = call.caller_country
        record["caller_line_type"] = call.caller_line_type
        record["route_status"] = call.route_status
        record.update(_outcome(session, call.id))
        legs = session.scalars(select(CallLeg).where(CallLeg.call_id == call.id).order_by(CallLeg.id)).all()
        events = session.scalars(
            select(CallEvent).where(CallEvent.call_id == call.id).order_by(CallEvent.at, CallEvent.id)
        ).all()
        leg_rows = [
            {
                "channel": leg.channel,
                "role": leg.role,
                "exten": leg.exten,
                "caller": leg.caller_number,
                "created_at": _iso(leg.created_at),
                "answered_at": _iso(leg.answered_at),
                "hungup_at": _iso(leg.hungup_at),
                "cause": leg.hangup_cause,
            }
            for leg in legs
        ]
        timeline = [{"at": _iso(e.at), "kind": e.kind, "detail": e.detail or {}} for e in events]
        transcript = _transcript(session, call.id)
    if fmt == "json":
        body = {**record, "legs": leg_rows, "timeline": timeline, "transcript": transcript}
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
        return
    if fmt == "csv":
        emit_record(_flat(record), fmt)
        return
    flat = {k: v for k, v in record.items() if k != "visit"}
    if visit is not None:
        # only what the visit told: a call without a website visit shows no empty visit lines
        flat.update({f"visit_{k}": v for k, v in (record["visit"] or {}).items() if v not in (None, "")})
    emit_record(flat, fmt)
    click.echo("")
    click.echo("legs:")
    emit(leg_rows, "table")
    click.echo("")
    click.echo("timeline:")
    start = call.started_at
    lines = []
    for e in events:
        offset = f"+{(e.at - start).total_seconds():7.2f}s" if start else ""
        detail = ", ".join(f"{k}={v}" for k, v in (e.detail or {}).items() if v not in (None, "", [], {}))
        lines.append({"at": _iso(e.at), "offset": offset, "what": e.kind, "detail": detail})
    emit(lines, "table")
    if transcript:
        from calltrack.commands.transcripts import transcript_lines

        click.echo("")
        click.echo("transcript:")
        for line in transcript_lines(transcript):
            click.echo(line)


def _outcome(session: Any, call_id: int) -> dict[str, Any]:
    """What lead rules and spam signals made of the call (tracking/lead_rules.py, tracking/spam.py)."""
    from sqlalchemy import select

    from schema.models import CallOutcome, CallTag

    row = session.get(CallOutcome, call_id)
    tags = list(session.scalars(select(CallTag.tag).where(CallTag.call_id == call_id).order_by(CallTag.tag)))
    return {
        "lead": row.lead if row else None,
        "score": row.score if row else 0,
        "value": row.value if row else None,
        "tags": ", ".join(tags),
        "spam": bool(row and row.spam),
        "spam_reason": row.spam_reason if row else None,
    }


def _transcript(session: Any, call_id: int) -> list[dict[str, Any]]:
    """The call's transcript segments (start, end, speaker, text); empty while it has none."""
    from calltrack.commands.transcripts import segment_rows
    from tracking.transcripts import for_call

    return [row for t in for_call(session, call_id) if t.state == "done" for row in segment_rows(t)]


@group.command("rebuild")
@click.option("--since", type=TimeType(), help="Only calls with events at or after this time (whole calls).")
@click.option("--system", help="Only this Asterisk system.")
@pass_app
def rebuild(app: AppContext, since: dt.datetime | None, system: str | None) -> None:
    """Regenerate calls from the stored raw AMI events (same result as when they were recorded)."""
    from sqlalchemy import select

    from ami_listener.sink import rebuild as rebuild_calls
    from schema.models import AmiEvent
    from tracking.phone import try_normalize

    settings = app.settings
    region = settings.numbers.default_region
    total = 0
    with app.session() as session:
        systems = [system] if system else session.scalars(select(AmiEvent.system).distinct()).all()
        for name in systems:
            total += rebuild_calls(
                session,
                name,
                since=since,
                region=region,
                geocode=settings.privacy.geocode,
                normalize=lambda raw: try_normalize(raw, region),
                attribution_grace=dt.timedelta(seconds=settings.tracking.attribution_grace_seconds),
            )
    click.echo(f"rebuilt {total} call{'s' if total != 1 else ''} from stored AMI events")
