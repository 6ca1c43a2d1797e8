"""The JSON bodies of outbox events, as webhook receivers get them.

Every event is an envelope ``{"id", "type", "created_at", "account", "test", "data"}``
described by ``webhooks/schemas/events.schema.json`` (README: "Webhooks"). Bodies are
rendered from the database when the delivery worker first picks an event up (a
fraction of a second after the change, in normal operation) and frozen from then on.
A ``call.started`` body shows the call as the route decided it: the fields only known
later (answer, end, durations, disposition) are null in it, whenever it is rendered.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schema.models import Account, Call, OutboxEvent, Recording, SmsMessage, Source, TrackingNumber, VisitorSession
from tracking import outbox

#: the version of the payload shapes; a change that could break a receiver raises it
VERSION = 1

#: fields of a call that the route cannot know yet (null in call.started)
_LATER = ("answered_at", "ended_at", "duration", "ring_time", "talk_time", "answered_by", "disposition", "hangup_cause")
_VISIT_FIELDS = (
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
)


def iso(value: dt.datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds: ``2026-03-02T15:30:00.123Z``."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def envelope(
    event_id: str,
    type_: str,
    created: dt.datetime,
    account: dict[str, Any],
    data: dict[str, Any],
    *,
    test: bool = False,
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": type_,
        "version": VERSION,
        "created_at": iso(created),
        "account": account,
        "test": test,
        "data": data,
    }


def _visit(v: VisitorSession | None) -> dict[str, Any] | None:
    if v is None:
        return None
    out: dict[str, Any] = {name: getattr(v, name) for name in _VISIT_FIELDS}
    out["started_at"] = iso(v.started_at)
    return out


def _source(s: Source | None) -> dict[str, Any] | None:
    if s is None:
        return None
    return {"id": s.id, "name": s.name, "medium": s.medium, "campaign": s.campaign}


def call_object(c: Call, source: Source | None, visit: VisitorSession | None, label: str | None) -> dict[str, Any]:
    return {
        "id": c.id,
        "system": c.system,
        "linkedid": c.linkedid,
        "tracking_number": c.tracking_number,
        "tracking_number_label": label,
        "caller_number": c.caller_number,
        "caller_name": c.caller_name,
        "caller_location": c.caller_location,
        "caller_country": c.caller_country,
        "first_time": c.first_time,
        "after_hours": c.after_hours,
        "route_status": c.route_status,
        "source": _source(source),
        "visit": _visit(visit),
        "started_at": iso(c.started_at),
        "answered_at": iso(c.answered_at),
        "ended_at": iso(c.ended_at),
        "duration": c.duration,
        "ring_time": c.ring_time,
        "talk_time": c.talk_time,
        "answered_by": c.answered_by,
        "hangup_cause": c.hangup_cause,
        "disposition": c.disposition,
        "recorded": bool(c.recording_file),
    }


def load_calls(session: Session, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The call objects of *ids* (do-not-track calls left out), in four queries whatever their number."""
    out: dict[int, dict[str, Any]] = {}
    ids = sorted(set(ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = session.execute(
            select(Call, Source, VisitorSession, TrackingNumber.label)
            .outerjoin(Source, Source.id == Call.source_id)
            .outerjoin(VisitorSession, VisitorSession.id == Call.visitor_session_id)
            .outerjoin(TrackingNumber, TrackingNumber.id == Call.tracking_number_id)
            .where(Call.id.in_(chunk))
        ).all()
        for call, source, visit, label in rows:
            if call.do_not_track:
                continue
            out[call.id] = call_object(call, source, visit, label)
    return out


def recording_object(r: Recording) -> dict[str, Any]:
    return {
        "id": r.id,
        "call_id": r.call_id,
        "format": r.format,
        "duration": r.duration,
        "bytes": r.bytes,
        "sha256": r.sha256,
        "archived_at": iso(r.archived_at),
    }


def text_object(
    m: SmsMessage, source: Source | None, visit: VisitorSession | None, label: str | None
) -> dict[str, Any]:
    return {
        "id": m.id,
        "system": m.system,
        "tracking_number": m.to_number,
        "tracking_number_label": label,
        "from_number": m.from_number,
        "sender_name": m.sender_name,
        "body": m.body,
        "body_dropped": bool(m.body_dropped),
        "content_length": m.content_length,
        "first_time": m.first_time,
        "keyword": m.keyword,
        "source": _source(source),
        "visit": _visit(visit),
        "received_at": iso(m.received_at),
    }


def load_texts(session: Session, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The text objects of *ids* (do-not-track senders' texts left out)."""
    out: dict[int, dict[str, Any]] = {}
    ids = sorted(set(ids))
    for start in range(0, len(ids), 500):
        rows = session.execute(
            select(SmsMessage, Source, VisitorSession, TrackingNumber.label)
            .outerjoin(Source, Source.id == SmsMessage.source_id)
            .outerjoin(VisitorSession, VisitorSession.id == SmsMessage.visitor_session_id)
            .outerjoin(TrackingNumber, TrackingNumber.id == SmsMessage.tracking_number_id)
            .where(SmsMessage.id.in_(ids[start : start + 500]))
        ).all()
        for text, source, visit, label in rows:
            if not text.do_not_track:
                out[text.id] = text_object(text, source, visit, label)
    return out


def render(session: Session, events: Sequence[OutboxEvent]) -> dict[int, str | None]:
    """The body of each event (by outbox row id); None for one that must not be sent."""
    accounts = {
        a.id: {"id": a.id, "name": a.name}
        for a in session.scalars(select(Account).where(Account.id.in_({e.account_id for e in events})))
    }
    recordings = {
        r.id: r
        for r in session.scalars(
            select(Recording).where(Recording.id.in_([e.recording_id for e in events if e.recording_id]))
        )
    }
    call_ids = [e.call_id for e in events if e.call_id]
    call_ids += [r.call_id for r in recordings.values() if r.call_id]
    calls = load_calls(session, call_ids) if call_ids else {}
    text_ids = [e.sms_id for e in events if e.sms_id]
    texts = load_texts(session, text_ids) if text_ids else {}
    forms = _load_forms(session, [e.form_lead_id for e in events if e.form_lead_id])
    out: dict[int, str | None] = {}
    for event in events:
        account = accounts.get(event.account_id)
        if event.type == outbox.SMS_RECEIVED:
            text = texts.get(event.sms_id or -1)
            data = {"text": text} if text is not None else None
        elif event.type == outbox.FORM_SUBMITTED:
            data = forms.get(event.form_lead_id or -1)
        else:
            data = _data(session, event, calls, recordings)
        if account is None or data is None:
            out[event.id] = None
            continue
        out[event.id] = dumps(envelope(event.event_id, event.type, event.occurred_at, account, data))
    return out


def _load_forms(session: Session, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """``{"form_lead": ...}`` per form lead id."""
    if not ids:
        return {}
    from schema.models import FormLead
    from tracking.form_leads import lead_object

    rows = session.execute(
        select(FormLead, Source, VisitorSession)
        .outerjoin(Source, Source.id == FormLead.source_id)
        .outerjoin(VisitorSession, VisitorSession.id == FormLead.visitor_session_id)
        .where(FormLead.id.in_(list(ids)))
    ).all()
    return {lead.id: {"form_lead": lead_object(lead, source, visit)} for lead, source, visit in rows}


def _data(
    session: Session, event: OutboxEvent, calls: dict[int, dict[str, Any]], recordings: dict[int, Recording]
) -> dict[str, Any] | None:
    if event.type in (outbox.CALL_STARTED, outbox.CALL_COMPLETED, outbox.CALL_UPDATED):
        call = calls.get(event.call_id or -1)
        if call is None:
            return None
        if event.type == outbox.CALL_STARTED:
            call = {**call, **dict.fromkeys(_LATER)}
        data: dict[str, Any] = {"call": call}
        if event.type == outbox.CALL_UPDATED:
            data["changes"] = (event.detail or {}).get("changes", {})
        return data
    if event.type == outbox.RECORDING_READY:
        rec = recordings.get(event.recording_id or -1)
        if rec is None or rec.state != "archived":
            return None
        call = calls.get(rec.call_id or -1)
        if rec.call_id is not None and call is None:  # the call is a do-not-track caller's
            return None
        return {"recording": recording_object(rec), "call": call}
    return None


# --- samples (`calltrack webhooks test`) ------------------------------------------------------


def sample(type_: str, account: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A made-up event of *type_* with every field filled, marked ``"test": true``."""
    start = now - dt.timedelta(minutes=3)
    call = {
        "id": 0,
        "system": "asterisk",
        "linkedid": "1700000000.1",
        "tracking_number": "+14045550100",
        "tracking_number_label": "sample",
        "caller_number": "+14045551234",
        "caller_name": "Sample Caller",
        "caller_location": "Atlanta, GA",
        "caller_country": "US",
        "first_time": True,
        "after_hours": False,
        "route_status": "ok",
        "source": {"id": 0, "name": "Google Ads", "medium": "cpc", "campaign": "sample"},
        "visit": {
            "landing_url": "https://www.example.com/?utm_source=google&gclid=sample",
            "referrer": "https://www.google.com/",
            "utm_source": "google",
            "utm_medium": "cpc",
            "utm_campaign": "sample",
            "utm_term": None,
            "utm_content": None,
            "gclid": "sample",
            "gbraid": None,
            "wbraid": None,
            "msclkid": None,
            "started_at": iso(start - dt.timedelta(minutes=5)),
        },
        "started_at": iso(start),
        "answered_at": iso(start + dt.timedelta(seconds=8)),
        "ended_at": iso(now),
        "duration": 180.0,
        "ring_time": 8.0,
        "talk_time": 172.0,
        "answered_by": "PJSIP/100",
        "hangup_cause": 16,
        "disposition": "answered",
        "recorded": True,
    }
    data: dict[str, Any]
    if type_ == outbox.CALL_STARTED:
        data = {"call": {**call, **dict.fromkeys(_LATER)}}
    elif type_ == outbox.CALL_COMPLETED:
        data = {"call": call}
    elif type_ == outbox.CALL_UPDATED:
        data = {"call": call, "changes": {"qualification": {"lead": True, "value": 250.0, "tags": ["sample"]}}}
    elif type_ == outbox.RECORDING_READY:
        recording = {
            "id": 0,
            "call_id": 0,
            "format": "mp3",
            "duration": 172.0,
            "bytes": 688000,
            "sha256": "0" * 64,
            "archived_at": iso(now),
        }
        data = {"recording": recording, "call": call}
    elif type_ == outbox.SMS_RECEIVED:
        text = {
            "id": 0,
            "system": "asterisk",
            "tracking_number": "+14045550100",
            "tracking_number_label": "sample",
            "from_number": "+14045551234",
            "sender_name": "Sample Sender",
            "body": "Do you fix boilers on Sundays?",
            "body_dropped": False,
            "content_length": 30,
            "first_time": True,
            "keyword": None,
            "source": call["source"],
            "visit": call["visit"],
            "received_at": iso(now),
        }
        data = {"text": text}
    elif type_ == outbox.FORM_SUBMITTED:
        data = {
            "form_lead": {
                "id": 0,
                "form": "contact",
                "page_url": "https://www.example.com/contact?utm_source=google&gclid=sample",
                "fields": {"name": "Sample Visitor", "email": "visitor@example.com", "phone": "(404) 555-1234"},
                "email": "visitor@example.com",
                "phone": "+14045551234",
                "source": call["source"],
                "visit": call["visit"],
                "submitted_at": iso(now),
            }
        }
    else:
        raise ValueError(f"unknown event type {type_!r}")
    return envelope(outbox.new_event_id(), type_, now, account, data, test=True)
