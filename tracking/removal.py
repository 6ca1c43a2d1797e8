"""Removing an account or a source: what goes with it is counted and said before anything goes.

An account takes everything it owns with it: sources, numbers, pools, sites, rules,
visitor sessions, calls with their timelines, raw AMI events and recordings (rows and
archive files), texts, caller-list entries and dashboard users of that account.  A
source's numbers must move to another source first (``move_to``), which also takes its
calls, pools, rules and visitor sessions; without one, its calls keep no source.
Either way a removal that loses history needs the caller's confirmation (``--yes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from schema.models import (
    Account,
    AuditEntry,
    Call,
    CallerListEntry,
    NumberPool,
    PoolLease,
    Recording,
    Site,
    SmsMessage,
    Source,
    SourceRule,
    TrackingNumber,
    User,
    VisitorSession,
)
from tracking.accounts import clean_name, get_account, get_source
from tracking.errors import Conflict, InvalidInput
from tracking.privacy import Erased, delete_calls, remove_files


def _count(session: Session, model: type, *where: object) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass
class AccountRemoval:
    """What removing one account takes with it."""

    account: Account
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def loses_history(self) -> bool:
        return any(self.counts.get(k, 0) for k in ("number", "call", "recording", "visitor session", "text"))

    def describe(self) -> str:
        parts = [_plural(n, word) for word, n in self.counts.items() if n]
        what = ", ".join(parts) if parts else "nothing else"
        return f"account {self.account.name!r} holds {what}"


def plan_account_removal(session: Session, name: str) -> AccountRemoval:
    account = get_account(session, name)
    aid = account.id
    counts = {
        "source": _count(session, Source, Source.account_id == aid),
        "number": _count(session, TrackingNumber, TrackingNumber.account_id == aid),
        "pool": _count(session, NumberPool, NumberPool.account_id == aid),
        "site": _count(session, Site, Site.account_id == aid),
        "call": _count(session, Call, Call.account_id == aid),
        "recording": _count(session, Recording, Recording.account_id == aid),
        "visitor session": _count(session, VisitorSession, VisitorSession.account_id == aid),
        "text": _count(session, SmsMessage, SmsMessage.account_id == aid),
        "dashboard user": _count(session, User, User.account_id == aid),
    }
    return AccountRemoval(account, counts)


def remove_account(session: Session, removal: AccountRemoval, actor: str) -> Erased:
    """Delete the account and all it holds (recording files too), in the caller's transaction."""
    aid = removal.account.id
    erased = Erased()
    calls = list(session.scalars(select(Call).where(Call.account_id == aid)))
    delete_calls(session, calls, erased)
    # Recordings not tied to a call of the account (their call was erased before).
    left = list(session.execute(select(Recording.path, Recording.source_path).where(Recording.account_id == aid)))
    remove_files((p for row in left for p in row), erased)
    erased.recordings += len(left)
    session.execute(delete(Recording).where(Recording.account_id == aid))
    pools = select(NumberPool.id).where(NumberPool.account_id == aid)
    session.execute(delete(PoolLease).where(PoolLease.pool_id.in_(pools)))
    erased.sessions += len(list(session.scalars(select(VisitorSession.id).where(VisitorSession.account_id == aid))))
    session.execute(delete(VisitorSession).where(VisitorSession.account_id == aid))
    erased.sms += len(list(session.scalars(select(SmsMessage.id).where(SmsMessage.account_id == aid))))
    session.execute(delete(SmsMessage).where(SmsMessage.account_id == aid))
    # Numbers before sources and pools: they refer to both (ON DELETE RESTRICT).
    session.execute(delete(TrackingNumber).where(TrackingNumber.account_id == aid))
    session.execute(delete(SourceRule).where(SourceRule.account_id == aid))
    session.execute(delete(NumberPool).where(NumberPool.account_id == aid))
    session.execute(delete(Site).where(Site.account_id == aid))
    session.execute(delete(CallerListEntry).where(CallerListEntry.account_id == aid))
    session.execute(delete(User).where(User.account_id == aid))
    session.execute(delete(Source).where(Source.account_id == aid))
    session.add(
        AuditEntry(
            actor=actor,
            action="accounts.remove",
            target=f"account {removal.account.id}",
            detail={"name": removal.account.name, **removal.counts},
        )
    )
    session.execute(delete(Account).where(Account.id == aid))
    session.expunge(removal.account)
    session.flush()
    return erased


def rename_account(session: Session, old: str, new: str) -> Account:
    account = get_account(session, old)
    name = clean_name(new, "account")
    other = session.scalar(select(Account).where(func.lower(Account.name) == name.lower()))
    if other is not None and other.id != account.id:
        raise Conflict(f"account {name!r} already exists")
    account.name = name
    session.flush()
    return account


@dataclass
class SourceRemoval:
    """What removing one source changes."""

    source: Source
    numbers: list[str]
    calls: int
    pools: int
    rules: int
    sessions: int
    move_to: Source | None = None

    @property
    def loses_history(self) -> bool:
        return self.move_to is None and (self.calls > 0 or self.sessions > 0)

    def describe(self) -> str:
        name = f"source {self.source.name!r} of account {self.source.account.name!r}"
        if self.move_to is not None:
            moved = [
                _plural(len(self.numbers), "number"),
                _plural(self.calls, "call"),
                _plural(self.pools, "pool default"),
                _plural(self.rules, "website rule"),
                _plural(self.sessions, "visitor session"),
            ]
            return f"{name}: {', '.join(moved)} move to {self.move_to.name!r}"
        return (
            f"{name}: its {_plural(self.calls, 'call')} and {_plural(self.sessions, 'visitor session')} keep no "
            f"source (reports count them under none), {_plural(self.rules, 'website rule')} go, "
            f"{_plural(self.pools, 'pool')} lose their default source"
        )


def plan_source_removal(session: Session, account_name: str, name: str, move_to: str | None = None) -> SourceRemoval:
    account = get_account(session, account_name)
    source = get_source(session, account, name)
    target = get_source(session, account, move_to) if move_to else None
    if target is not None and target.id == source.id:
        raise InvalidInput("--move-to names the source being removed")
    sid = source.id
    numbers = list(session.scalars(select(TrackingNumber.number).where(TrackingNumber.source_id == sid)))
    removal = SourceRemoval(
        source=source,
        numbers=numbers,
        calls=_count(session, Call, Call.source_id == sid),
        pools=_count(session, NumberPool, NumberPool.source_id == sid),
        rules=_count(session, SourceRule, SourceRule.source_id == sid),
        sessions=_count(session, VisitorSession, VisitorSession.source_id == sid),
        move_to=target,
    )
    if numbers and target is None:
        shown = ", ".join(numbers[:5]) + (f" and {len(numbers) - 5} more" if len(numbers) > 5 else "")
        raise Conflict(
            f"source {source.name!r} has {_plural(len(numbers), 'tracking number')} ({shown}), released ones "
            "included: give --move-to SOURCE to move them (and its calls) to another source, or move them first "
            "with `calltrack numbers update NUMBER --source S`"
        )
    return removal


def remove_source(session: Session, removal: SourceRemoval, actor: str) -> None:
    sid = removal.source.id
    if removal.move_to is not None:
        tid = removal.move_to.id
        for model in (TrackingNumber, Call, NumberPool, SourceRule, VisitorSession, SmsMessage):
            session.execute(update(model).where(model.source_id == sid).values(source_id=tid))
    else:
        session.execute(delete(SourceRule).where(SourceRule.source_id == sid))
        for model in (Call, NumberPool, VisitorSession, SmsMessage):
            session.execute(update(model).where(model.source_id == sid).values(source_id=None))
    session.add(
        AuditEntry(
            actor=actor,
            action="sources.remove",
            target=f"source {sid}",
            detail={
                "name": removal.source.name,
                "account": removal.source.account.name,
                "moved_to": removal.move_to.name if removal.move_to else None,
                "calls": removal.calls,
            },
        )
    )
    session.execute(delete(Source).where(Source.id == sid))
    session.expunge(removal.source)
    session.flush()
