"""Third-party caller lookups: the provider interface, the cache, and who may be looked up.

A provider answers one question, "what do you know about this number?" (a caller name
and a line type, the way hosted call-tracking services enrich caller ID).  Answers are
cached per provider and number until ``expires_at`` and then deleted: nothing a provider
said is kept past the time-to-live.  Lookups are never made during the route; the
lookup service asks about the callers of recent calls.  A caller on a do-not-track list,
or on a call marked do-not-track, is never looked up.  No sockets here: the HTTPS
provider lives in ``lookups/``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from schema.models import Call, CallerListEntry, CallerLookup, utcnow

__all__ = ["LookupResult", "Provider", "cached", "do_not_track", "due", "lookup", "purge_expired", "store", "utcnow"]

#: the numbers that can be looked up: E.164, up to 15 digits
_MAX_DIGITS = 15


@dataclass(frozen=True)
class LookupResult:
    number: str
    #: "found", "not-found" or "error"
    status: str
    name: str | None = None
    line_type: str | None = None
    carrier: str | None = None
    error: str | None = None


class Provider(Protocol):
    """Something that can be asked about a number; it raises nothing (errors are a result)."""

    #: the provider's name in the cache (its host)
    name: str

    def lookup(self, number: str) -> LookupResult: ...


def is_lookup_number(number: str | None) -> bool:
    if not number:
        return False
    return number.startswith("+") and number[1:].isdigit() and len(number) <= _MAX_DIGITS + 1


def cached(session: Session, provider: str, number: str, now: dt.datetime | None = None) -> CallerLookup | None:
    """The provider's unexpired answer about *number*, or None."""
    now = now or utcnow()
    return session.scalar(
        select(CallerLookup).where(
            CallerLookup.provider == provider, CallerLookup.number == number, CallerLookup.expires_at > now
        )
    )


def store(
    session: Session,
    provider: str,
    result: LookupResult,
    *,
    ttl: dt.timedelta,
    retry: dt.timedelta,
    now: dt.datetime | None = None,
) -> CallerLookup:
    """Keep *result* (an error only for *retry*, an answer for *ttl*), replacing an older one."""
    now = now or utcnow()
    row = session.scalar(
        select(CallerLookup).where(CallerLookup.provider == provider, CallerLookup.number == result.number)
    )
    if row is None:
        row = CallerLookup(provider=provider, number=result.number)
        session.add(row)
    row.status = result.status
    row.name, row.line_type, row.carrier = result.name, result.line_type, result.carrier
    row.error = (result.error or "")[:500] or None
    row.fetched_at = now
    row.expires_at = now + (retry if result.status == "error" else ttl)
    session.flush()
    return row


def purge_expired(session: Session, now: dt.datetime | None = None) -> int:
    """Delete every answer past its time-to-live; how many went."""
    result = session.execute(delete(CallerLookup).where(CallerLookup.expires_at <= (now or utcnow())))
    return int(getattr(result, "rowcount", 0) or 0)


def do_not_track(session: Session, number: str) -> bool:
    """True when *number* is on a do-not-track list (of any account: a lookup is not per account)."""
    return (
        session.scalar(
            select(CallerListEntry.id)
            .where(CallerListEntry.kind == "do-not-track", CallerListEntry.number == number)
            .limit(1)
        )
        is not None
    )


def due(
    session: Session, provider: str, *, since: dt.datetime, limit: int = 50, now: dt.datetime | None = None
) -> list[str]:
    """Caller numbers of calls started since *since* that have no unexpired answer and may be looked up."""
    now = now or utcnow()
    answered = select(CallerLookup.number).where(CallerLookup.provider == provider, CallerLookup.expires_at > now)
    dnt = select(CallerListEntry.number).where(CallerListEntry.kind == "do-not-track")
    query = (
        select(Call.caller_number)
        .where(
            Call.started_at >= since,
            Call.caller_number.is_not(None),
            Call.caller_number.like("+%"),
            or_(Call.do_not_track.is_(None), Call.do_not_track.is_(False)),
            Call.caller_number.not_in(answered),
            Call.caller_number.not_in(dnt),
        )
        .distinct()
        .limit(limit * 2)
    )
    numbers = [n for n in session.scalars(query) if n is not None and is_lookup_number(n)]
    return numbers[:limit]


def lookup(
    session: Session,
    provider: Provider,
    number: str,
    *,
    ttl: dt.timedelta,
    retry: dt.timedelta,
    refresh: bool = False,
    now: dt.datetime | None = None,
) -> CallerLookup | None:
    """The cached answer, or a fresh one asked of *provider*; None for a do-not-track caller."""
    if do_not_track(session, number):
        return None
    if not refresh:
        row = cached(session, provider.name, number, now)
        if row is not None:
            return row
    return store(session, provider.name, provider.lookup(number), ttl=ttl, retry=retry, now=now)
