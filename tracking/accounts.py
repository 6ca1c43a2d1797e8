"""Accounts (business customers) and their sources (marketing channels)."""

from __future__ import annotations

import secrets
import zoneinfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from schema.models import Account, Source
from tracking.errors import Conflict, InvalidInput, NotFound


def clean_name(name: str, what: str) -> str:
    text = (name or "").strip()
    if not text:
        raise InvalidInput(f"{what} name must not be empty")
    if len(text) > 200:
        raise InvalidInput(f"{what} name too long ({len(text)} characters, at most 200)")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidInput(f"{what} name {name!r} contains control characters")
    return text


def validate_timezone(tz: str) -> str:
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown timezone {tz!r} (use an IANA name such as America/New_York)") from None
    return tz


def add_account(session: Session, name: str, timezone: str = "UTC") -> Account:
    name = clean_name(name, "account")
    tz = validate_timezone(timezone)
    if session.scalar(select(Account.id).where(func.lower(Account.name) == name.lower())) is not None:
        raise Conflict(f"account {name!r} already exists")
    account = Account(name=name, timezone=tz, public_key=secrets.token_urlsafe(12))
    session.add(account)
    session.flush()
    return account


def get_account(session: Session, name: str) -> Account:
    account = session.scalar(select(Account).where(Account.name == name))
    if account is None:
        account = session.scalar(select(Account).where(func.lower(Account.name) == (name or "").strip().lower()))
    if account is None:
        raise NotFound(f"unknown account {name!r} (see `calltrack accounts list`)")
    return account


def list_accounts(session: Session) -> list[Account]:
    return list(session.scalars(select(Account).order_by(Account.name)))


def add_source(
    session: Session, account_name: str, name: str, medium: str | None = None, campaign: str | None = None
) -> Source:
    account = get_account(session, account_name)
    name = clean_name(name, "source")
    if _find_source(session, account.id, name) is not None:
        raise Conflict(f"source {name!r} already exists in account {account.name!r}")
    source = Source(account_id=account.id, name=name, medium=(medium or None), campaign=(campaign or None))
    session.add(source)
    session.flush()
    return source


def _find_source(session: Session, account_id: int, name: str) -> Source | None:
    return session.scalar(
        select(Source).where(Source.account_id == account_id, func.lower(Source.name) == name.strip().lower())
    )


def get_source(session: Session, account: Account, name: str) -> Source:
    source = _find_source(session, account.id, name)
    if source is None:
        raise NotFound(f"unknown source {name!r} in account {account.name!r} (see `calltrack sources list`)")
    return source


def list_sources(session: Session, account_name: str | None = None) -> list[Source]:
    query = select(Source).join(Account).order_by(Account.name, Source.name)
    if account_name:
        query = query.where(Source.account_id == get_account(session, account_name).id)
    return list(session.scalars(query))


def rename_source(session: Session, account_name: str, old: str, new: str) -> Source:
    account = get_account(session, account_name)
    source = get_source(session, account, old)
    new = clean_name(new, "source")
    other = _find_source(session, account.id, new)
    if other is not None and other.id != source.id:
        raise Conflict(f"source {new!r} already exists in account {account.name!r}")
    source.name = new
    session.flush()
    return source
