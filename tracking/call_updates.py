"""``call.updated``: what changed on a call after it was written, announced only when something did.

Three writers change a call afterwards: a person qualifying it (the dashboard's form), the lead
rules and spam signals (``tracking/lead_rules.py``: after the call ends, when a transcript arrives,
``automations apply``; ``spam clear``) and the transcriber (a transcript finished).  Each takes a
snapshot of the part it changes before and after, and :func:`announce` writes one outbox row, in
the writer's transaction, naming only the fields whose value changed, with their new values::

    {"qualification": {"lead": true, "value": 250.5}}
    {"rules": {"lead": "qualified", "tags": ["booked"]}, "transcript": {...}}

Nothing changed, nothing is written: re-running the rules over calls whose outcome stays the same
sends no event, nor does saving the qualification form again unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from schema.models import Call, CallOutcome, CallQualification, CallTag, Transcript
from tracking import outbox

#: the parts of ``changes`` (README: Webhooks, call.updated; webhooks/schemas/events.schema.json)
PARTS = ("qualification", "rules", "transcript")


def qualification_state(qual: CallQualification | None) -> dict[str, Any]:
    """A person's word on the call: lead (yes/no/unsaid), value, tags, note."""
    if qual is None:
        return {"lead": None, "value": None, "tags": [], "note": None}
    return {
        "lead": qual.lead,
        "value": qual.value,
        "tags": [t for t in (qual.tags or "").split(",") if t],
        "note": qual.note,
    }


def rules_state(session: Session, call_id: int, row: CallOutcome | None) -> dict[str, Any]:
    """What lead rules and spam signals made of the call: lead, score, value, spam, its tags (sorted)."""
    tags = sorted(session.scalars(select(CallTag.tag).where(CallTag.call_id == call_id)))
    if row is None:
        return {"lead": None, "score": 0, "value": None, "spam": False, "tags": tags}
    return {"lead": row.lead, "score": row.score or 0, "value": row.value, "spam": bool(row.spam), "tags": tags}


def transcript_state(transcript: Transcript) -> dict[str, Any]:
    """A finished transcript (already redacted): its id, recording, language and text."""
    return {
        "id": transcript.id,
        "recording_id": transcript.recording_id,
        "language": transcript.language,
        "text": transcript.text or "",
    }


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of *after* whose value differs from *before*, with their new values."""
    return {key: value for key, value in after.items() if before.get(key) != value}


def announce(session: Session, call: Call, changes: Mapping[str, Mapping[str, Any]]) -> bool:
    """One ``call.updated`` for *call* with the non-empty parts of *changes*; False when nothing changed
    (or nobody is told: no account, a do-not-track caller, no endpoint of the account takes it)."""
    parts = {part: dict(fields) for part, fields in changes.items() if fields}
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown part of a call.updated: {sorted(unknown)}")
    if not parts or call.account_id is None or call.do_not_track:
        return False
    return outbox.announce(session, outbox.CALL_UPDATED, call.account_id, call_id=call.id, detail={"changes": parts})
