"""Which source (and which website visit) a call to a tracking number belongs to.

The AGI ``route`` handler and the web service both use this: a call to a source
number gets that source; a call to a pool number gets the visitor session whose
lease covered the call's start, allowing a grace window after the lease ended
(people write a number down and call a little later).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from schema.models import NumberPool, PoolLease, Source, TrackingNumber, VisitorSession


@dataclass(frozen=True)
class Attribution:
    source_id: int | None
    source_name: str | None
    session: VisitorSession | None = None


def lease_at(session: Session, number_id: int, at: dt.datetime, grace: dt.timedelta) -> PoolLease | None:
    """The lease of *number_id* that covered *at*: started before it, ended no more than *grace* before it.

    When leases overlap the window (a lease expired within the grace window and a
    newer one started), the newest lease that started before the call wins.
    """
    return session.scalar(
        select(PoolLease)
        .where(
            PoolLease.number_id == number_id,
            PoolLease.leased_at <= at,
            PoolLease.expires_at >= at - grace,
        )
        .order_by(PoolLease.leased_at.desc(), PoolLease.id.desc())
        .limit(1)
    )


def attribute(session: Session, number: TrackingNumber, at: dt.datetime, grace: dt.timedelta) -> Attribution:
    """The attribution of a call to *number* that started at *at*."""
    if number.source_id is not None:
        name = session.scalar(select(Source.name).where(Source.id == number.source_id))
        return Attribution(number.source_id, name)
    if number.pool_id is None:
        return Attribution(None, None)
    lease = lease_at(session, number.id, at, grace)
    if lease is not None:
        visit = session.get(VisitorSession, lease.session_id)
        if visit is not None and visit.source_id is not None:
            name = session.scalar(select(Source.name).where(Source.id == visit.source_id))
            return Attribution(visit.source_id, name, visit)
        if visit is not None:
            pool_source = _pool_source(session, number.pool_id)
            return Attribution(pool_source[0], pool_source[1], visit)
    source_id, name = _pool_source(session, number.pool_id)
    return Attribution(source_id, name)


def _pool_source(session: Session, pool_id: int) -> tuple[int | None, str | None]:
    row = session.execute(
        select(NumberPool.source_id, Source.name)
        .outerjoin(Source, Source.id == NumberPool.source_id)
        .where(NumberPool.id == pool_id)
    ).first()
    if row is None:
        return (None, None)
    return (row[0], row[1])
