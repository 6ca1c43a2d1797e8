"""Caller lists: blocked callers (refused by the route) and do-not-track callers (routed, nothing stored)."""

from __future__ import annotations

import re

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from config import Settings
from schema.models import Account, CallerListEntry
from tracking import phone
from tracking.accounts import get_account
from tracking.errors import Conflict, InvalidInput, NotFound

KINDS = ("blocked", "do-not-track")
#: caller IDs that are not phone numbers but that carriers and Asterisk deliver for withheld callers
WITHHELD = ("anonymous", "restricted", "unknown", "unavailable", "private", "withheld")
_SHORT_CODE = re.compile(r"[0-9*#]{2,15}")


def caller_key(raw: str, settings: Settings) -> str:
    """How a caller is stored on a list: E.164 when it is a phone number, else the caller ID as given."""
    text = (raw or "").strip()
    e164 = phone.try_normalize(text, settings.numbers.default_region)
    if e164:
        return e164
    if text.lower() in WITHHELD:
        return text.lower()
    if _SHORT_CODE.fullmatch(text):
        return text  # a short code or an internal number
    raise InvalidInput(
        f"invalid caller {raw!r}: give a phone number (read in region {settings.numbers.default_region} without a "
        f"country code), a short code, or one of {', '.join(WITHHELD)}"
    )


def add_entry(
    session: Session, settings: Settings, number: str, kind: str, account: str | None = None, reason: str | None = None
) -> CallerListEntry:
    if kind not in KINDS:
        raise InvalidInput(f"unknown list {kind!r} (use {' or '.join(KINDS)})")
    key = caller_key(number, settings)
    account_id = get_account(session, account).id if account else None
    existing = session.scalar(
        select(CallerListEntry).where(
            CallerListEntry.number == key, CallerListEntry.kind == kind, _account_is(account_id)
        )
    )
    if existing is not None:
        raise Conflict(f"{key} is already on the {kind} list{' of ' + account if account else ''}")
    if reason is not None and any(ord(ch) < 32 for ch in reason):
        raise InvalidInput("the reason must not contain control characters")
    entry = CallerListEntry(account_id=account_id, number=key, kind=kind, reason=reason or None)
    session.add(entry)
    session.flush()
    return entry


def _account_is(account_id: int | None) -> ColumnElement[bool]:
    if account_id is None:
        return CallerListEntry.account_id.is_(None)
    return CallerListEntry.account_id == account_id


def remove_entry(
    session: Session, settings: Settings, number: str, kind: str | None = None, account: str | None = None
) -> int:
    key = caller_key(number, settings)
    account_id = get_account(session, account).id if account else None
    query = select(CallerListEntry).where(CallerListEntry.number == key, _account_is(account_id))
    if kind:
        query = query.where(CallerListEntry.kind == kind)
    entries = list(session.scalars(query))
    if not entries:
        raise NotFound(f"{key} is on no {kind or 'caller'} list{' of ' + account if account else ''}")
    for entry in entries:
        session.delete(entry)
    session.flush()
    return len(entries)


def list_entries(session: Session, account: str | None = None, kind: str | None = None) -> list[dict[str, object]]:
    query = (
        select(CallerListEntry, Account.name)
        .outerjoin(Account, Account.id == CallerListEntry.account_id)
        .order_by(CallerListEntry.kind, CallerListEntry.number)
    )
    if account:
        query = query.where(CallerListEntry.account_id == get_account(session, account).id)
    if kind:
        query = query.where(CallerListEntry.kind == kind)
    return [
        {
            "number": entry.number,
            "list": entry.kind,
            "account": name or "(all accounts)",
            "reason": entry.reason,
            "added_at": entry.created_at.isoformat(timespec="seconds"),
        }
        for entry, name in session.execute(query)
    ]
