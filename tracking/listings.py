"""What the CLI lists, read with SQLAlchemy Core alone (no ORM, no model classes).

A small command (`accounts list`, `numbers show`) costs about what starting Python,
importing SQLAlchemy and running one query cost; the ORM and the declaration of every
model would add most of that again.  The read-only listings therefore name the few
columns they read here (``sqlalchemy.table``), and a test keeps them in step with
schema/models.py.  Writing stays with the ORM models.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, Integer, String, column, func, select, table

from schema.types import UTCDateTime
from tracking.errors import NotFound
from tracking.hours import format_hours

accounts = table(
    "accounts",
    column("id", Integer),
    column("name", String),
    column("timezone", String),
    column("public_key", String),
    column("created_at", UTCDateTime()),
)
sources = table("sources", column("id", Integer), column("account_id", Integer), column("name", String))
pools = table("number_pools", column("id", Integer), column("name", String))
numbers = table(
    "tracking_numbers",
    column("id", Integer),
    column("number", String),
    column("account_id", Integer),
    column("source_id", Integer),
    column("pool_id", Integer),
    column("forward_to", String),
    column("ring_timeout", Integer),
    column("record", Boolean),
    column("whisper", String),
    column("label", String),
    column("schedule", JSON),
    column("after_hours_forward_to", String),
    column("status", String),
    column("created_at", UTCDateTime()),
    column("released_at", UTCDateTime()),
)
TABLES = (accounts, sources, pools, numbers)

_E164 = re.compile(r"\+[1-9]\d{6,14}")


def account_rows(conn: Connection) -> list[dict[str, Any]]:
    """`accounts list`: every account, by name."""
    a = accounts.c
    query = select(a.name, a.timezone, a.public_key, a.created_at).order_by(a.name)
    return [
        {"name": name, "timezone": tz, "public_key": key, "created_at": created.isoformat(timespec="seconds")}
        for name, tz, key, created in conn.execute(query)
    ]


def account_id(conn: Connection, name: str) -> int:
    """The account's id by its name (exactly, else ignoring case), as tracking.accounts.get_account finds it."""
    found = conn.scalar(select(accounts.c.id).where(accounts.c.name == name))
    if found is None:
        found = conn.scalar(select(accounts.c.id).where(func.lower(accounts.c.name) == (name or "").strip().lower()))
    if found is None:
        raise NotFound(f"unknown account {name!r} (see `calltrack accounts list`)")
    return int(found)


def _filters(conn: Connection, account: str | None, source: str | None, status: str | None) -> list[Any]:
    where: list[Any] = []
    wanted = func.lower(sources.c.name) == (source or "").strip().lower()
    if account:
        aid = account_id(conn, account)
        where.append(numbers.c.account_id == aid)
        if source:
            sid = conn.scalar(select(sources.c.id).where(sources.c.account_id == aid, wanted))
            if sid is None:
                raise NotFound(f"unknown source {source!r} in account {account!r} (see `calltrack sources list`)")
            where.append(numbers.c.source_id == sid)
    elif source:
        ids = list(conn.scalars(select(sources.c.id).where(wanted)))
        if not ids:
            raise NotFound(f"unknown source {source!r} in any account (see `calltrack sources list`)")
        where.append(numbers.c.source_id.in_(ids))
    if status:
        where.append(numbers.c.status == status)
    return where


def number_rows(
    conn: Connection,
    *,
    account: str | None = None,
    source: str | None = None,
    status: str | None = None,
    number: str | None = None,
    region: str = "US",
    display: bool = True,
) -> list[dict[str, Any]]:
    """Numbers as `numbers list` and `numbers show` give them, by number.

    ``display`` (the number as written in *region*) is computed only when asked for:
    JSON has it, tables and CSV do not, and it needs phonenumbers.
    """
    n = numbers.c
    query = (
        select(
            n.number,
            accounts.c.name,
            sources.c.name,
            pools.c.name,
            n.forward_to,
            n.ring_timeout,
            n.record,
            n.whisper,
            n.label,
            n.schedule,
            n.after_hours_forward_to,
            n.status,
            n.created_at,
            n.released_at,
        )
        .join(accounts, accounts.c.id == n.account_id)
        .outerjoin(sources, sources.c.id == n.source_id)
        .outerjoin(pools, pools.c.id == n.pool_id)
        .where(*_filters(conn, account, source, status))
        .order_by(n.number)
    )
    if number is not None:
        query = query.where(n.number == number)
    from tracking.phone import display as written  # phonenumbers itself loads only when a number is shown

    out = []
    for (
        e164,
        acct,
        src,
        pool,
        fwd,
        timeout,
        record,
        whisper,
        label,
        sched,
        after,
        state,
        created,
        released,
    ) in conn.execute(query):
        out.append(
            {
                "number": e164,
                "display": written(e164, region) if display else None,
                "account": acct,
                "source": src,
                "pool": pool,
                "forward_to": fwd,
                "timeout": timeout,
                "record": bool(record),
                "whisper": whisper,
                "label": label,
                "hours": format_hours(sched) if sched else "always",
                "after_hours": after,
                "status": state,
                "created_at": created.isoformat(timespec="seconds"),
                "released_at": released.isoformat(timespec="seconds") if released else None,
            }
        )
    return out


def find_number(conn: Connection, text: str, region: str) -> dict[str, Any]:
    """One number as `numbers show` gives it; a number typed in E.164 is looked up as it is."""
    from tracking.phone import normalize

    typed = text.strip()
    e164 = typed if _E164.fullmatch(typed) else normalize(text, region)
    rows = number_rows(conn, number=e164, region=region)
    if not rows and e164 == typed:
        e164 = normalize(text, region)  # a malformed number gets its precise error here
    if not rows:
        raise NotFound(f"unknown tracking number {e164} (see `calltrack numbers list`)")
    return rows[0]
