"""Each page's data: one function of (viewer, filters), permission-checked here, rendered three ways.

Every query is limited to the accounts the viewer sees (:func:`scope`); a call, recording
or account outside them is :class:`Denied`, the same answer as one that does not exist.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, exists, func, or_, select
from sqlalchemy.orm import Session

from config import Settings
from schema.models import (
    Account,
    AuditEntry,
    Call,
    CallEvent,
    CallLeg,
    CallOutcome,
    CallQualification,
    CallTag,
    Recording,
    Source,
    VisitorSession,
)
from tracking import call_updates
from tracking.phone import display, try_normalize
from tracking.users import Viewer, allowed
from web.dashboard.core import BadInput, Denied
from web.dashboard.filters import PER_PAGE, CallFilters

CALL_COLUMNS = [
    "id",
    "started_at",
    "local_time",
    "account",
    "caller_number",
    "caller_name",
    "caller_location",
    "source",
    "campaign",
    "tracking_number",
    "duration",
    "talk_time",
    "disposition",
    "first_time",
    "after_hours",
    "recording",
]
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "ogg": "audio/ogg", "flac": "audio/flac", "wav": "audio/wav"}


def scope(session: Session, who: Viewer, account_id: int | None, action: str = "view") -> list[Account]:
    """The accounts a page covers: the one asked for (when the viewer may) or every one they see."""
    if account_id is not None:
        account = session.get(Account, account_id)
        if account is None or not allowed(who, action, account.id):
            raise Denied()
        return [account]
    query = select(Account).order_by(Account.name)
    if who.account_ids is not None:
        query = query.where(Account.id.in_(sorted(who.account_ids) or [-1]))
    return [a for a in session.scalars(query) if allowed(who, action, a.id)]


def account_condition(who: Viewer, accounts: list[Account], asked: int | None) -> Any:
    """The WHERE on calls.account_id for these accounts (an administrator's "all" includes unknown numbers)."""
    if who.is_admin and asked is None:
        return None
    return Call.account_id.in_([a.id for a in accounts] or [-1])


def timezone_of(accounts: list[Account]) -> str:
    zones = {a.timezone for a in accounts}
    return zones.pop() if len(zones) == 1 else "UTC"


def local(value: dt.datetime | None, timezone: str) -> str:
    if value is None:
        return ""
    return value.astimezone(zoneinfo.ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S")


def _has_recording() -> Any:
    return exists().where(Recording.call_id == Call.id, Recording.state == "archived")


def calls_page(
    session: Session,
    settings: Settings,
    who: Viewer,
    filters: CallFilters,
    since: dt.datetime | None,
    until: dt.datetime | None,
    *,
    limit: int = PER_PAGE,
) -> dict[str, Any]:
    """One page of calls, newest first, with whether there is a next one."""
    accounts = scope(session, who, filters.account)
    scoped = account_condition(who, accounts, filters.account) is not None
    region = settings.numbers.default_region
    params: dict[str, Any] = {
        "accounts": [a.id for a in accounts] or [-1],
        "since": since,
        "until": until,
        "source": filters.source,
        "number": (try_normalize(filters.number, region) or filters.number) if filters.number else None,
        "disposition": filters.disposition,
        "offset": (filters.page - 1) * limit,
        "limit": limit + 1,
    }
    caller_mode = None
    if filters.caller:
        e164 = try_normalize(filters.caller, region)
        params["caller"] = e164
        params["digits"] = "%" + "".join(ch for ch in filters.caller if ch.isdigit()) + "%"
        caller_mode = "e164" if e164 else "digits"
    shape = (
        scoped,
        since is not None,
        until is not None,
        filters.blocked,
        filters.source is not None,
        bool(filters.number),
        bool(filters.disposition),
        filters.first_time,
        filters.after_hours,
        filters.recording,
        caller_mode,
    )
    query = _calls_statement(shape)
    rows = []
    for r in session.execute(query, params):  # values it has no place for are ignored
        tz = r.timezone or "UTC"
        rows.append(
            {
                "id": r.id,
                "started_at": r.started_at,
                "local_time": local(r.started_at, tz),
                "account": r.account,
                "caller_number": r.caller_number,
                "caller_display": _display(r.caller_number, settings),
                "caller_name": r.caller_name,
                "caller_location": r.caller_location,
                "source": r.source,
                "campaign": r.campaign,
                "tracking_number": r.tracking_number,
                "duration": _round(r.duration),
                "talk_time": _round(r.talk_time),
                "disposition": r.disposition,
                "first_time": r.first_time,
                "after_hours": r.after_hours,
                "recording": bool(r.recording),
            }
        )
    more = len(rows) > limit
    sources = session.execute(
        select(Source.id, Source.name, Account.name)
        .join(Account, Account.id == Source.account_id)
        .where(Source.account_id.in_([a.id for a in accounts] or [-1]))
        .order_by(Account.name, Source.name)
    ).all()
    return {
        "calls": rows[:limit],
        "page": filters.page,
        "more": more,
        "accounts": [
            {"id": a.id, "name": a.name}
            for a in (scope(session, who, None) if filters.account is not None else accounts)
        ],
        "sources": [{"id": s[0], "name": s[1], "account": s[2]} for s in sources],
    }


_CALLS: dict[tuple[Any, ...], Any] = {}


def _calls_statement(shape: tuple[Any, ...]) -> Any:
    """The calls list's statement for one combination of filters, built once (building costs more than running)."""
    found = _CALLS.get(shape)
    if found is not None:
        return found
    (scoped, has_since, has_until, blocked, has_source, has_number, has_disposition, first_time, after_hours,
     recording, caller_mode) = shape  # fmt: skip
    campaign = func.coalesce(VisitorSession.utm_campaign, Source.campaign)
    query = (
        select(
            Call.id,
            Call.started_at,
            Account.name.label("account"),
            Account.timezone,
            Call.caller_number,
            Call.caller_name,
            Call.caller_location,
            Source.name.label("source"),
            campaign.label("campaign"),
            Call.tracking_number,
            Call.duration,
            Call.talk_time,
            Call.disposition,
            Call.first_time,
            Call.after_hours,
            _has_recording().label("recording"),
        )
        .select_from(Call)
        .outerjoin(Account, Account.id == Call.account_id)
        .outerjoin(Source, Source.id == Call.source_id)
        .outerjoin(VisitorSession, VisitorSession.id == Call.visitor_session_id)
    )
    if scoped:
        query = query.where(Call.account_id.in_(bindparam("accounts", expanding=True)))
    if has_since:
        query = query.where(Call.started_at >= bindparam("since"))
    if has_until:
        query = query.where(Call.started_at < bindparam("until"))
    if blocked:
        query = query.where(Call.disposition == "blocked")
    else:
        query = query.where(or_(Call.disposition.is_(None), Call.disposition != "blocked"))
    if has_source:
        query = query.where(Call.source_id == bindparam("source"))
    if has_number:
        query = query.where(Call.tracking_number == bindparam("number"))
    if has_disposition:
        query = query.where(Call.disposition == bindparam("disposition"))
    for column, wanted in ((Call.first_time, first_time), (Call.after_hours, after_hours)):
        if wanted is not None:
            query = query.where(column.is_(True) if wanted else or_(column.is_(False), column.is_(None)))
    if recording is not None:
        query = query.where(_has_recording() if recording else ~_has_recording())
    if caller_mode == "e164":
        query = query.where(
            or_(Call.caller_number == bindparam("caller"), Call.caller_number.like(bindparam("digits")))
        )
    elif caller_mode == "digits":
        query = query.where(Call.caller_number.like(bindparam("digits")))
    query = query.order_by(Call.started_at.desc(), Call.id.desc()).offset(bindparam("offset")).limit(bindparam("limit"))
    if len(_CALLS) > 4096:
        _CALLS.clear()
    _CALLS[shape] = query
    return query


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _display(number: str | None, settings: Settings) -> str:
    if not number:
        return ""
    if number.startswith("+"):
        return _laid_out(number, settings.numbers.default_region)
    return number


@functools.lru_cache(maxsize=20_000)
def _laid_out(number: str, region: str) -> str:
    """A number as people in *region* write it (cached: formatting runs phonenumbers' patterns)."""
    try:
        return display(number, region)
    except Exception:  # a number Asterisk gave that phonenumbers cannot lay out
        return number


def visible_call(session: Session, who: Viewer, call_id: int, action: str = "view") -> Call:
    call = session.get(Call, call_id)
    if call is None or not allowed(who, action, call.account_id):
        raise Denied()
    if call.account_id is None and not who.is_admin:
        raise Denied()
    return call


def _recording(session: Session, call_id: int) -> Recording | None:
    return session.scalars(
        select(Recording)
        .where(Recording.call_id == call_id, Recording.state == "archived", Recording.path.is_not(None))
        .order_by(Recording.id.desc())
        .limit(1)
    ).first()


def _transcript(session: Session, call_id: int) -> list[dict[str, Any]]:
    """The call's transcript (already redacted when stored): each segment with its times and speaker."""
    from tracking.transcripts import for_call

    return [
        {"start": round(seg.start, 1), "end": round(seg.end, 1), "speaker": seg.speaker, "text": seg.text}
        for t in for_call(session, call_id)
        if t.state == "done"
        for seg in t.segments
    ]


def call_detail(session: Session, settings: Settings, who: Viewer, call_id: int) -> dict[str, Any]:
    call = visible_call(session, who, call_id)
    account = session.get(Account, call.account_id) if call.account_id else None
    tz = account.timezone if account else "UTC"
    source = session.get(Source, call.source_id) if call.source_id else None
    visit = session.get(VisitorSession, call.visitor_session_id) if call.visitor_session_id else None
    events = session.scalars(select(CallEvent).where(CallEvent.call_id == call.id).order_by(CallEvent.at, CallEvent.id))
    legs = session.scalars(select(CallLeg).where(CallLeg.call_id == call.id).order_by(CallLeg.id))
    recording = _recording(session, call.id)
    qual = session.get(CallQualification, call.id)
    outcome = session.get(CallOutcome, call.id)
    rule_tags = session.scalars(select(CallTag.tag).where(CallTag.call_id == call.id).order_by(CallTag.tag)).all()
    return {
        "call": {
            "id": call.id,
            "account": account.name if account else None,
            "account_id": call.account_id,
            "timezone": tz,
            "caller_number": call.caller_number,
            "caller_display": _display(call.caller_number, settings),
            "caller_name": call.caller_name,
            "caller_location": call.caller_location,
            "caller_country": call.caller_country,
            "caller_line_type": call.caller_line_type,
            "tracking_number": call.tracking_number,
            "source": source.name if source else None,
            "campaign": (visit.utm_campaign if visit else None) or (source.campaign if source else None),
            "started_at": call.started_at,
            "local_time": local(call.started_at, tz),
            "answered_at": call.answered_at,
            "ended_at": call.ended_at,
            "duration": _round(call.duration),
            "ring_time": _round(call.ring_time),
            "talk_time": _round(call.talk_time),
            "disposition": call.disposition,
            "answered_by": call.answered_by,
            "transferred_to": call.transferred_to,
            "first_time": call.first_time,
            "after_hours": call.after_hours,
        },
        "visit": None
        if visit is None
        else {
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
            "pages_seen": visit.pages_seen,
            "started_at": visit.started_at,
            "local_time": local(visit.started_at, tz),
        },
        "timeline": [
            {"at": e.at, "local_time": local(e.at, tz), "kind": e.kind, "detail": e.detail or {}} for e in events
        ],
        "legs": [
            {
                "channel": leg.channel,
                "role": leg.role,
                "exten": leg.exten,
                "answered_at": leg.answered_at,
                "hungup_at": leg.hungup_at,
            }
            for leg in legs
        ],
        "recording": None
        if recording is None
        else {
            "id": recording.id,
            "format": recording.format,
            "duration": _round(recording.duration),
            "bytes": recording.bytes,
        },
        "qualification": {
            "lead": qual.lead if qual else None,
            "value": qual.value if qual else None,
            "tags": [t for t in (qual.tags or "").split(",") if t] if qual else [],
            "note": qual.note if qual else None,
            "updated_by": qual.updated_by if qual else None,
            "updated_at": qual.updated_at if qual else None,
        },
        "rules": {
            "lead": outcome.lead if outcome else None,
            "value": outcome.value if outcome else None,
            "spam": outcome.spam if outcome else False,
            "tags": list(rule_tags),
        },
        "transcript": _transcript(session, call.id),
        "can_qualify": allowed(who, "qualify", call.account_id),
    }


MAX_TAGS = 10
MAX_TAG = 40
MAX_NOTE = 2000


def qualify(session: Session, who: Viewer, call_id: int, form: dict[str, str]) -> None:
    """Store a person's qualification of a call, audited."""
    call = visible_call(session, who, call_id, "qualify")
    lead_raw = form.get("lead", "").strip().lower()
    if lead_raw not in ("", "yes", "no"):
        raise BadInput("lead", "lead must be yes, no or empty")
    lead = None if not lead_raw else lead_raw == "yes"
    value_raw = form.get("value", "").strip()
    value = None
    if value_raw:
        try:
            value = float(value_raw)
        except ValueError:
            raise BadInput("value", f"value must be a number, not {value_raw[:40]!r}") from None
        if not 0 <= value <= 1e9 or value != value:
            raise BadInput("value", "value must be from 0 to 1,000,000,000")
        value = round(value, 2)
    tags = []
    for raw in form.get("tags", "").split(","):
        tag = " ".join(raw.split())
        if not tag:
            continue
        if len(tag) > MAX_TAG or any(ord(ch) < 32 for ch in tag):
            raise BadInput("tags", f"a tag is at most {MAX_TAG} characters, without control characters")
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise BadInput("tags", f"at most {MAX_TAGS} tags")
    note = form.get("note", "").strip() or None
    if note is not None and len(note) > MAX_NOTE:
        raise BadInput("note", f"a note is at most {MAX_NOTE} characters")
    qual = session.get(CallQualification, call.id)
    if qual is None:
        qual = CallQualification(call_id=call.id, updated_by=who.username)
        session.add(qual)
    before = {"lead": qual.lead, "value": qual.value, "tags": qual.tags, "note": qual.note}
    announced_before = call_updates.qualification_state(qual)
    qual.lead, qual.value, qual.tags, qual.note = lead, value, ",".join(tags) or None, note
    qual.updated_by = who.username
    qual.updated_at = dt.datetime.now(dt.UTC)
    after = {"lead": lead, "value": value, "tags": qual.tags, "note": note}
    changes = call_updates.changed(announced_before, call_updates.qualification_state(qual))
    call_updates.announce(session, call, {"qualification": changes})
    session.add(
        AuditEntry(
            actor=who.username,
            action="call.qualify",
            target=f"call {call.id}",
            detail={"before": before, "after": after},
        )
    )


def audit_export(session: Session, who: Viewer, what: str, query: str) -> None:
    """A CSV export in the audit log: who took which table (``export.<what>``) with which filters."""
    session.add(AuditEntry(actor=who.username, action=f"export.{what}", target=query[:200] or None))


def recording_file(
    session: Session, settings: Settings, who: Viewer, recording_id: int, download: bool, *, audit: bool = True
) -> tuple[Path, str, str]:
    """The archive file of a recording the viewer may hear: (path, media type, file name); audited."""
    recording = session.get(Recording, recording_id)
    if recording is None or recording.call_id is None or recording.state != "archived" or not recording.path:
        raise Denied()
    visible_call(session, who, recording.call_id, "listen")
    path = Path(recording.path).resolve()
    archive = settings.archive_dir.resolve()
    if not path.is_relative_to(archive) or not path.is_file():
        raise Denied()
    if audit:
        session.add(
            AuditEntry(
                actor=who.username,
                action="recording.download" if download else "recording.play",
                target=f"recording {recording.id}",
                detail={"call": recording.call_id},
            )
        )
    fmt = (recording.format or path.suffix.lstrip(".")).lower()
    return path, MEDIA_TYPES.get(fmt, "application/octet-stream"), f"call-{recording.call_id}.{fmt}"
