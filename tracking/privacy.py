"""Privacy: export and erase everything about one caller, and retention windows.

Erasing a caller removes their calls with legs, timeline, recordings (rows and
archive files) and transcripts, the raw AMI events of those calls (by linkedid, and by the
uniqueid of each of their channels for the events that carry no linkedid, such
as ``Cdr``) and any other raw event that names the number (so `calls rebuild`
cannot bring them back), and their text messages.  Retention removes old calls and texts
the same way.  Each erase and retention run leaves an audit entry that does not
repeat the number.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import CursorResult, String, cast, delete, or_, select, update
from sqlalchemy.orm import Session

from config import Settings
from schema.models import (
    Account,
    AmiEvent,
    AuditEntry,
    Call,
    CallerListEntry,
    CallEvent,
    CallLeg,
    FormLead,
    Recording,
    SmsMessage,
    Transcript,
    TranscriptSegment,
    VisitorSession,
    utcnow,
)
from tracking import phone
from tracking.accounts import get_account
from tracking.errors import InvalidInput

logger = logging.getLogger(__name__)


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class Caller:
    """One caller's number, and the ways it may appear in call rows and raw events."""

    e164: str
    #: the national significant number: inside every spelling (+14045551234, 14045551234, 4045551234)
    national: str
    spellings: list[str]


def caller(number: str, settings: Settings) -> Caller:
    e164 = phone.normalize(number, settings.numbers.default_region)
    import phonenumbers

    parsed = phonenumbers.parse(e164, None)
    national = str(parsed.national_number)
    spellings = sorted({e164, e164.lstrip("+"), national, f"{parsed.country_code}{national}"})
    return Caller(e164, national, spellings)


def _rows(session: Session, statement: Any) -> int:
    """Rows a DELETE or UPDATE touched."""
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return int(result.rowcount or 0)


def _masked(number: str) -> str:
    return f"caller ending {number[-4:]}" if len(number) >= 4 else "caller"


def _calls_of(session: Session, spellings: list[str]) -> list[Call]:
    return list(
        session.scalars(select(Call).where(Call.caller_number.in_(spellings)).order_by(Call.started_at, Call.id))
    )


def export_caller(session: Session, settings: Settings, number: str) -> dict[str, Any]:
    """Everything calltrack holds about the caller, as one JSON-ready object."""
    who = caller(number, settings)
    spellings = who.spellings
    calls = _calls_of(session, spellings)
    ids = [c.id for c in calls]
    legs: dict[int, list[CallLeg]] = {}
    events: dict[int, list[CallEvent]] = {}
    recordings: dict[int, list[Recording]] = {}
    said: dict[int, list[dict[str, Any]]] = {}
    if ids:
        segments = session.execute(
            select(Transcript.call_id, TranscriptSegment)
            .join(TranscriptSegment, TranscriptSegment.transcript_id == Transcript.id)
            .where(Transcript.call_id.in_(ids), Transcript.state == "done")
            .order_by(TranscriptSegment.start, TranscriptSegment.id)
        )
        for call_id, seg in segments:
            said.setdefault(call_id or 0, []).append(
                {"start": seg.start, "end": seg.end, "speaker": seg.speaker, "text": seg.text}
            )
        for leg in session.scalars(select(CallLeg).where(CallLeg.call_id.in_(ids)).order_by(CallLeg.id)):
            legs.setdefault(leg.call_id, []).append(leg)
        for ev in session.scalars(
            select(CallEvent).where(CallEvent.call_id.in_(ids)).order_by(CallEvent.at, CallEvent.id)
        ):
            events.setdefault(ev.call_id, []).append(ev)
        for rec in session.scalars(select(Recording).where(Recording.call_id.in_(ids))):
            recordings.setdefault(rec.call_id or 0, []).append(rec)
    sms = session.scalars(
        select(SmsMessage).where(or_(SmsMessage.from_number.in_(spellings), SmsMessage.to_number.in_(spellings)))
    )
    lists = session.scalars(select(CallerListEntry).where(CallerListEntry.number.in_(spellings)))
    return {
        "number": who.e164,
        "exported_at": utcnow().isoformat(),
        "calls": [
            {
                "id": c.id,
                "system": c.system,
                "linkedid": c.linkedid,
                "caller_number": c.caller_number,
                "caller_name": c.caller_name,
                "caller_location": c.caller_location,
                "tracking_number": c.tracking_number,
                "started_at": _iso(c.started_at),
                "answered_at": _iso(c.answered_at),
                "ended_at": _iso(c.ended_at),
                "duration": c.duration,
                "talk_time": c.talk_time,
                "disposition": c.disposition,
                "answered_by": c.answered_by,
                "legs": [
                    {
                        "channel": leg.channel,
                        "caller_number": leg.caller_number,
                        "caller_name": leg.caller_name,
                        "created_at": _iso(leg.created_at),
                        "hungup_at": _iso(leg.hungup_at),
                    }
                    for leg in legs.get(c.id, [])
                ],
                "timeline": [{"at": _iso(ev.at), "kind": ev.kind, "detail": ev.detail} for ev in events.get(c.id, [])],
                "recordings": [
                    {"id": r.id, "format": r.format, "duration": r.duration, "sha256": r.sha256, "state": r.state}
                    for r in recordings.get(c.id, [])
                ],
                "transcript": said.get(c.id, []),
            }
            for c in calls
        ],
        "sms": [
            {
                "direction": m.direction,
                "from": m.from_number,
                "to": m.to_number,
                "body": m.body,
                "sender_name": m.sender_name,
                "status": m.status,
                "at": _iso(m.received_at),
            }
            for m in sms
        ],
        "caller_lists": [{"list": e.kind, "reason": e.reason, "added_at": _iso(e.created_at)} for e in lists],
        "form_leads": _form_leads(session, who.e164),
    }


def _form_leads(session: Session, e164: str) -> list[dict[str, Any]]:
    from tracking.form_leads import export_form_leads

    return export_form_leads(session, phone=e164)


@dataclass
class Erased:
    calls: int = 0
    raw_events: int = 0
    recordings: int = 0
    files: int = 0
    sms: int = 0
    sessions: int = 0
    transcripts: int = 0
    form_leads: int = 0
    missing_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "raw_events": self.raw_events,
            "recordings": self.recordings,
            "files": self.files,
            "sms": self.sms,
            "sessions": self.sessions,
            "transcripts": self.transcripts,
            "form_leads": self.form_leads,
        }


def remove_files(paths: Iterable[str | None], erased: Erased) -> None:
    for path in paths:
        if not path:
            continue
        try:
            os.unlink(path)
            erased.files += 1
        except FileNotFoundError:
            erased.missing_files.append(path)
        except OSError as exc:
            # The rows still go: a file that cannot be removed now is reported, not kept in the database.
            logger.error("cannot remove recording %s: %s", path, exc.strerror)
            erased.missing_files.append(path)


def delete_calls(session: Session, calls: list[Call], erased: Erased) -> None:
    if not calls:
        return
    ids = [c.id for c in calls]
    system_of = {c.id: c.system for c in calls}
    # Channels of the calls: Cdr and OriginateResponse events carry a channel's Uniqueid and no Linkedid.
    channels: dict[str, set[str]] = {}
    for c in calls:
        if c.uniqueid:
            channels.setdefault(c.system, set()).add(c.uniqueid)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for call_id, uniqueid in session.execute(
            select(CallLeg.call_id, CallLeg.uniqueid).where(CallLeg.call_id.in_(chunk))
        ):
            channels.setdefault(system_of[call_id], set()).add(uniqueid)
        recs = list(session.execute(select(Recording.path, Recording.source_path).where(Recording.call_id.in_(chunk))))
        remove_files((p for row in recs for p in row), erased)
        erased.transcripts += _rows(session, delete(Transcript).where(Transcript.call_id.in_(chunk)))
        erased.recordings += _rows(session, delete(Recording).where(Recording.call_id.in_(chunk)))
        session.execute(delete(CallEvent).where(CallEvent.call_id.in_(chunk)))
        session.execute(delete(CallLeg).where(CallLeg.call_id.in_(chunk)))
        erased.calls += _rows(session, delete(Call).where(Call.id.in_(chunk)))
    by_system: dict[str, list[str]] = {}
    for c in calls:
        by_system.setdefault(c.system, []).append(c.linkedid)
    for system, linkedids in by_system.items():
        for start in range(0, len(linkedids), 500):
            group = linkedids[start : start + 500]
            erased.raw_events += _rows(
                session, delete(AmiEvent).where(AmiEvent.system == system, AmiEvent.linkedid.in_(group))
            )
    for system, uniqueids in channels.items():
        uids = sorted(uniqueids)
        for start in range(0, len(uids), 500):
            group = uids[start : start + 500]
            erased.raw_events += _rows(
                session, delete(AmiEvent).where(AmiEvent.system == system, AmiEvent.uniqueid.in_(group))
            )


def erase_caller(session: Session, settings: Settings, number: str, actor: str) -> Erased:
    """Remove everything about the caller. The caller lists keep the number (a block must keep working)."""
    who = caller(number, settings)
    spellings = who.spellings
    erased = Erased()
    delete_calls(session, _calls_of(session, spellings), erased)
    # Raw events of other calls that still name the number (a transfer leg, a call not yet correlated).
    payload = cast(AmiEvent.payload, String)
    erased.raw_events += _rows(session, delete(AmiEvent).where(payload.contains(who.national)))
    erased.sms += _rows(
        session,
        delete(SmsMessage).where(or_(SmsMessage.from_number.in_(spellings), SmsMessage.to_number.in_(spellings))),
    )
    erased.form_leads += _rows(session, delete(FormLead).where(FormLead.phone == who.e164))
    session.add(AuditEntry(actor=actor, action="privacy.erase", target=_masked(who.e164), detail=erased.as_dict()))
    session.flush()
    return erased


def set_retention(session: Session, account: str, days: int | None, recording_days: int | None) -> Account:
    acct = get_account(session, account)
    for value, what in ((days, "retention"), (recording_days, "recording retention")):
        if value is not None and value < 0:
            raise InvalidInput(f"invalid {what} {value}: a number of days, 0 to keep everything")
    if days is not None:
        acct.retention_days = days
    if recording_days is not None:
        acct.recording_retention_days = recording_days
    session.flush()
    return acct


def apply_retention(session: Session, settings: Settings, actor: str, now: dt.datetime | None = None) -> Erased:
    """Delete what is older than each account's windows (or the settings' defaults); 0 keeps everything."""
    now = now or utcnow()
    erased = Erased()
    for acct in session.scalars(select(Account).order_by(Account.id)):
        days = acct.retention_days if acct.retention_days is not None else settings.privacy.retention_days
        rec_days = (
            acct.recording_retention_days
            if acct.recording_retention_days is not None
            else settings.privacy.recording_retention_days
        )
        if days > 0:
            cutoff = now - dt.timedelta(days=days)
            old = list(session.scalars(select(Call).where(Call.account_id == acct.id, Call.started_at < cutoff)))
            delete_calls(session, old, erased)
            erased.form_leads += _rows(
                session, delete(FormLead).where(FormLead.account_id == acct.id, FormLead.submitted_at < cutoff)
            )
            erased.sessions += _rows(
                session,
                delete(VisitorSession).where(
                    VisitorSession.account_id == acct.id, VisitorSession.last_seen_at < cutoff
                ),
            )
            erased.sms += _rows(
                session, delete(SmsMessage).where(SmsMessage.account_id == acct.id, SmsMessage.received_at < cutoff)
            )
        if rec_days > 0:
            cutoff = now - dt.timedelta(days=rec_days)
            old_recs = list(
                session.execute(
                    select(Recording.id, Recording.path).where(
                        Recording.account_id == acct.id, Recording.state == "archived", Recording.archived_at < cutoff
                    )
                )
            )
            remove_files((path for _, path in old_recs), erased)
            if old_recs:
                # a transcript is what the recording said: it goes with the audio
                erased.transcripts += _rows(
                    session, delete(Transcript).where(Transcript.recording_id.in_([rid for rid, _ in old_recs]))
                )
                session.execute(
                    update(Recording)
                    .where(Recording.id.in_([rid for rid, _ in old_recs]))
                    .values(state="deleted", path=None, last_error="removed by the retention window")
                )
                erased.recordings += len(old_recs)
    if settings.privacy.retention_days > 0:
        cutoff = now - dt.timedelta(days=settings.privacy.retention_days)
        erased.raw_events += _rows(session, delete(AmiEvent).where(AmiEvent.received_at < cutoff))
    session.add(AuditEntry(actor=actor, action="privacy.retention", target=None, detail=erased.as_dict()))
    session.flush()
    return erased


def cli_actor() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


def write_export(data: dict[str, Any], path: Path) -> None:
    import json

    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
