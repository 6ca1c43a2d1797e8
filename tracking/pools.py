"""Number pools for dynamic number insertion: creation, membership, listing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session, joinedload

from config import Settings
from schema.models import NumberPool, PoolOverflowCount, TrackingNumber
from tracking import phone
from tracking.accounts import get_account, get_source
from tracking.errors import Conflict, InvalidInput
from tracking.numbers import NumberFields, Resolver, existing_numbers

MAX_HOLD_MINUTES = 24 * 60


@dataclass(frozen=True)
class PoolMember:
    """A number put in a pool, and where it was before."""

    number: TrackingNumber
    #: "new", "source" (moved from a source, named in ``previous``), "pool" (from another pool) or "already"
    change: str
    previous: str | None = None


def create_pool(
    session: Session,
    settings: Settings,
    name: str,
    account_name: str,
    hold_minutes: int,
    *,
    source: str | None = None,
    overflow: str | None = None,
) -> NumberPool:
    account = get_account(session, account_name)
    name = (name or "").strip()
    if not name or any(ord(ch) < 32 for ch in name):
        raise InvalidInput("pool name must not be empty or contain control characters")
    if not 1 <= hold_minutes <= MAX_HOLD_MINUTES:
        raise InvalidInput(f"invalid hold time {hold_minutes}: between 1 and {MAX_HOLD_MINUTES} minutes")
    if session.scalar(select(NumberPool.id).where(NumberPool.account_id == account.id, NumberPool.name == name)):
        raise Conflict(f"pool {name!r} already exists in account {account.name!r}")
    pool = NumberPool(
        account_id=account.id,
        name=name,
        hold_minutes=hold_minutes,
        source_id=get_source(session, account, source).id if source else None,
        overflow_number=phone.normalize(overflow, settings.numbers.default_region) if overflow else None,
    )
    session.add(pool)
    session.flush()
    return pool


def add_numbers(
    session: Session,
    settings: Settings,
    pool_name: str,
    account_name: str,
    numbers: list[str],
    forward_to: str | None,
    *,
    timeout: int | None = None,
    record: bool | None = None,
) -> list[PoolMember]:
    """Put *numbers* in the pool: new ones are created, the account's existing ones are moved in.

    Each member says where it came from, so the command can tell which numbers stopped
    belonging to a source (calls to them are then attributed by visitor session).
    """
    if not numbers:
        raise InvalidInput("give at least one number")
    resolver = Resolver(session, settings)
    account = resolver.account(account_name)
    pool = resolver.pool(account, pool_name)
    region = settings.numbers.default_region
    e164s = [phone.normalize(n, region) for n in numbers]
    dupes = {n for n in e164s if e164s.count(n) > 1}
    if dupes:
        raise InvalidInput(f"number given twice: {', '.join(sorted(dupes))}")
    existing = existing_numbers(session, e164s)
    out = []
    for number in e164s:
        tn = existing.get(number)
        if tn is not None:
            if tn.account_id != account.id:
                raise Conflict(f"number {number} belongs to another account")
            if tn.status != "active":
                raise Conflict(
                    f"number {number} is released; reactivate it with `calltrack numbers update --reactivate`"
                )
            if tn.pool_id == pool.id:
                member = PoolMember(tn, "already")
            elif tn.source_id is not None:
                member = PoolMember(tn, "source", tn.source.name if tn.source else None)
            else:
                member = PoolMember(tn, "pool", tn.pool.name if tn.pool else None)
            tn.pool_id, tn.source_id = pool.id, None
        else:
            values = resolver.new_number_values(
                NumberFields(
                    number, account.name, pool=pool.name, forward_to=forward_to, timeout=timeout, record=record
                )
            )
            tn = TrackingNumber(**values)
            session.add(tn)
            member = PoolMember(tn, "new")
        out.append(member)
    session.flush()
    return out


def pool_sizes(session: Session) -> dict[int, int]:
    """Active numbers per pool id."""
    counts = session.execute(
        select(TrackingNumber.pool_id, func.count())
        .where(TrackingNumber.pool_id.is_not(None), TrackingNumber.status == "active")
        .group_by(TrackingNumber.pool_id)
    )
    return {pool_id: count for pool_id, count in counts if pool_id is not None}


def overflow_counts(db: Session | Connection) -> dict[int, int]:
    """Overflows per pool id: ``number_pools.overflow_count`` plus the pool's slots on PostgreSQL (tracking/leases.py)."""
    slots = (
        select(PoolOverflowCount.pool_id, func.sum(PoolOverflowCount.count).label("n"))
        .group_by(PoolOverflowCount.pool_id)
        .subquery()
    )
    rows = db.execute(
        select(NumberPool.id, NumberPool.overflow_count + func.coalesce(slots.c.n, 0)).outerjoin(
            slots, slots.c.pool_id == NumberPool.id
        )
    )
    return {pool_id: int(count) for pool_id, count in rows}


def list_pools(session: Session, account_name: str | None = None) -> list[dict[str, Any]]:
    sizes = pool_sizes(session)
    overflows = overflow_counts(session)
    query = select(NumberPool).options(joinedload(NumberPool.account)).order_by(NumberPool.name)
    if account_name:
        query = query.where(NumberPool.account_id == get_account(session, account_name).id)
    return [
        {
            "name": pool.name,
            "account": pool.account.name,
            "hold_minutes": pool.hold_minutes,
            "size": sizes.get(pool.id, 0),
            "overflow_number": pool.overflow_number,
            "overflow_count": overflows.get(pool.id, pool.overflow_count),
        }
        for pool in session.scalars(query)
    ]
