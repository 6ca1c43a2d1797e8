"""Likely spam, from signals anyone can check: each flag says which signals raised it.

- **silence**: a call of at most ``[spam] short_call_seconds`` whose transcript holds no words;
- **blocked**: the caller is on the account's (or every account's) block list;
- **known spam number**: the caller is in ``spam_numbers`` (imported from CSV: ``spam import``);
- **burst**: the same caller rang ``[spam] burst_numbers`` or more different tracking numbers
  within ``[spam] burst_minutes``;
- **rule**: a lead rule's ``spam`` action.

A flag cleared by hand (``spam clear``) stays cleared: the signals do not raise it again.  Spam
calls are kept apart in reports and never counted as leads.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from config import SpamSettings
from schema.models import Call, CallerListEntry, CallOutcome, SpamNumber, Transcript, utcnow
from tracking.errors import InvalidInput

DEFAULTS = SpamSettings()


def signals(session: Session, call: Call, thresholds: SpamSettings | None = None) -> list[str]:
    """The spam signals a call shows, in words (thresholds from ``[spam]``; the defaults when None)."""
    limits = thresholds or DEFAULTS
    found = []
    caller = call.caller_number
    duration = call.duration if call.duration is not None else call.talk_time
    if duration is not None and limits.short_call_seconds > 0 and duration <= limits.short_call_seconds:
        texts = session.execute(
            select(Transcript.text).where(Transcript.call_id == call.id, Transcript.state == "done")
        ).all()
        if texts and not any((t or "").strip() for (t,) in texts):
            found.append(f"silence only in a {duration:.0f} s call")
    if caller:
        for_account = or_(CallerListEntry.account_id.is_(None), CallerListEntry.account_id == call.account_id)
        blocked = session.scalar(
            select(CallerListEntry.id).where(
                CallerListEntry.number == caller, CallerListEntry.kind == "blocked", for_account
            )
        )
        if blocked is not None or call.disposition == "blocked":
            found.append("the caller is on the block list")
        listed = session.execute(
            select(SpamNumber.id, SpamNumber.reason).where(
                SpamNumber.number == caller,
                or_(SpamNumber.account_id.is_(None), SpamNumber.account_id == call.account_id),
            )
        ).first()
        if listed is not None:
            found.append("a known spam number" + (f" ({listed.reason})" if listed.reason else ""))
        if call.started_at is not None:
            window = dt.timedelta(minutes=limits.burst_minutes)
            numbers = session.scalar(
                select(func.count(func.distinct(Call.tracking_number))).where(
                    Call.caller_number == caller,
                    Call.tracking_number.is_not(None),
                    Call.started_at >= call.started_at - window,
                    Call.started_at <= call.started_at + window,
                )
            )
            if numbers and numbers >= limits.burst_numbers:
                found.append(f"the caller rang {numbers} tracking numbers within {limits.burst_minutes:g} minutes")
    return found


def refresh(
    session: Session,
    call: Call,
    row: CallOutcome,
    *,
    rule_reasons: Sequence[str] = (),
    now: dt.datetime | None = None,
    thresholds: SpamSettings | None = None,
) -> None:
    """Set the outcome's spam flag from the signals and the rules (unless a person cleared it)."""
    if row.spam_cleared_at is not None:
        row.spam, row.spam_reason = False, None
        return
    reasons = [*signals(session, call, thresholds), *rule_reasons]
    row.spam = bool(reasons)
    row.spam_reason = "; ".join(reasons)[:500] if reasons else None


def clear(session: Session, call_id: int, now: dt.datetime | None = None) -> bool:
    """A person says the call is not spam; False when it was not flagged."""
    row = session.get(CallOutcome, call_id)
    if row is None or not row.spam:
        return False
    row.spam, row.spam_reason, row.spam_cleared_at = False, None, now or utcnow()
    call = session.get(Call, call_id)
    if call is not None:
        from tracking import call_updates

        call_updates.announce(session, call, {"rules": {"spam": False}})
    return True


def import_csv(session: Session, data: str, normalize: Any, account_id: int | None = None) -> tuple[int, int]:
    """Known spam numbers from CSV (a ``number`` column, optional ``reason``), all rows or none; (added, known)."""
    reader = csv.DictReader(io.StringIO(data))
    if reader.fieldnames is None or "number" not in [f.strip().lower() for f in reader.fieldnames]:
        raise InvalidInput("line 1: the CSV needs a 'number' column (and optionally 'reason')")
    rows: list[tuple[str, str | None]] = []
    for line, raw in enumerate(reader, start=2):
        fields = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
        number = fields.get("number", "")
        if not number:
            raise InvalidInput(f"line {line}: no number")
        try:
            key = normalize(number)
        except InvalidInput as exc:
            raise InvalidInput(f"line {line}: {exc}") from None
        reason = fields.get("reason") or None
        if reason and any(ord(ch) < 32 for ch in reason):
            raise InvalidInput(f"line {line}: the reason must not contain control characters")
        rows.append((key, reason[:500] if reason else None))
    added = known = 0
    seen: set[str] = set()
    for key, reason in rows:
        exists = session.scalar(
            select(SpamNumber.id).where(
                SpamNumber.number == key,
                SpamNumber.account_id.is_(None) if account_id is None else SpamNumber.account_id == account_id,
            )
        )
        if exists is not None or key in seen:
            known += 1
            continue
        seen.add(key)
        session.add(SpamNumber(account_id=account_id, number=key, reason=reason))
        added += 1
    session.flush()
    return added, known
