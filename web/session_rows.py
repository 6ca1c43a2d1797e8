"""The visitor-session rows behind the DNI API: the statements, on SQLite straight through its driver.

A page view reads the visitor's latest session, or writes a new one; a heartbeat
finds its session by key and marks it seen.  On SQLite these statements go to the
driver's cursor: through SQLAlchemy each cost 25-60 µs of its statement machinery
around the few µs SQLite spends on it, and they run one after another under the
database's one write lock (web/group_commit.py).  On PostgreSQL they stay
SQLAlchemy statements: there they run on worker threads, beside the round trip.

Times are written and compared in :func:`schema.types.utc_text`'s form on
SQLite, the form SQLAlchemy writes, so rows from both agree.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update

from schema.models import VisitorSession
from schema.types import from_utc_text, utc_text
from tracking.dbapi import DriverConnections
from tracking.leases import SESSION_COLUMNS


class Previous(NamedTuple):
    """A visitor's latest session."""

    id: int
    key: str
    visitor_id: str
    source_id: int | None
    last_seen_at: dt.datetime


class Found(NamedTuple):
    """A session found by its key."""

    id: int
    key: str
    visitor_id: str
    source_id: int | None


#: the column values of a new session, in the order of _SQ_INSERT
COLUMNS = SESSION_COLUMNS

_SQ_PREVIOUS = """SELECT id, key, visitor_id, source_id, last_seen_at FROM visitor_sessions
WHERE account_id = :account_id AND visitor_id = :visitor_id
ORDER BY last_seen_at DESC, id DESC
LIMIT 1"""
_SQ_INSERT = f"INSERT INTO visitor_sessions ({', '.join(COLUMNS)}) VALUES ({', '.join(':' + c for c in COLUMNS)})"  # noqa: S608
_SQ_SEEN_AGAIN = "UPDATE visitor_sessions SET pages_seen = pages_seen + 1, last_seen_at = :now WHERE id = :visit_id"
_SQ_BY_KEY = "SELECT id, key, visitor_id, source_id FROM visitor_sessions WHERE key = :key AND account_id = :account_id"
_SQ_SEEN = "UPDATE visitor_sessions SET last_seen_at = :now WHERE id = :visit_id"

_sessions = cast(Table, VisitorSession.__table__)
_PREVIOUS = (
    select(_sessions.c.id, _sessions.c.key, _sessions.c.visitor_id, _sessions.c.source_id, _sessions.c.last_seen_at)
    .where(_sessions.c.account_id == bindparam("account_id"), _sessions.c.visitor_id == bindparam("visitor_id"))
    .order_by(_sessions.c.last_seen_at.desc(), _sessions.c.id.desc())
    .limit(1)
)
_BY_KEY = select(_sessions.c.id, _sessions.c.key, _sessions.c.visitor_id, _sessions.c.source_id).where(
    _sessions.c.key == bindparam("key"), _sessions.c.account_id == bindparam("account_id")
)
_INSERT = insert(_sessions)
_SEEN_AGAIN = (
    update(_sessions)
    .where(_sessions.c.id == bindparam("visit_id"))
    .values(pages_seen=_sessions.c.pages_seen + 1, last_seen_at=bindparam("now"))
)
_SEEN = update(_sessions).where(_sessions.c.id == bindparam("visit_id")).values(last_seen_at=bindparam("now"))


def _sqlite(conn: Connection) -> Any:
    """SQLite's own connection under *conn* (its transaction is *conn*'s), or None on another database."""
    return conn.connection.driver_connection if conn.dialect.name == "sqlite" else None


def previous(conn: Connection, account_id: int, visitor_id: str) -> Previous | None:
    """The visitor's latest session, if any."""
    params = {"account_id": account_id, "visitor_id": visitor_id}
    raw = _sqlite(conn)
    if raw is None:
        row = conn.execute(_PREVIOUS, params).first()
        return None if row is None else Previous(*row)
    found = raw.execute(_SQ_PREVIOUS, params).fetchone()
    if found is None:
        return None
    return Previous(found[0], found[1], found[2], found[3], from_utc_text(found[4]))


def previous_by_driver(db: DriverConnections, account_id: int, visitor_id: str) -> Previous | None:
    """:func:`previous` on this thread's driver connection (PostgreSQL's new sessions, web/dni.py)."""
    found = db.execute(_SQ_PREVIOUS, {"account_id": account_id, "visitor_id": visitor_id}).fetchone()
    if found is None:
        return None
    return Previous(found[0], found[1], found[2], found[3], found[4].replace(tzinfo=dt.UTC))


def insert_session(conn: Connection, values: dict[str, Any]) -> int:
    """Write a new session (*values*: its COLUMNS); its id."""
    raw = _sqlite(conn)
    if raw is None:
        return int(conn.execute(_INSERT, values).inserted_primary_key[0])  # type: ignore[index]
    params = dict(values)
    params["started_at"] = utc_text(values["started_at"])
    params["last_seen_at"] = utc_text(values["last_seen_at"])
    return int(raw.execute(_SQ_INSERT, params).lastrowid)


def seen_again(conn: Connection, visit_id: int, now: dt.datetime) -> None:
    """One more page of the session, seen *now*."""
    raw = _sqlite(conn)
    if raw is None:
        conn.execute(_SEEN_AGAIN, {"visit_id": visit_id, "now": now})
    else:
        raw.execute(_SQ_SEEN_AGAIN, {"visit_id": visit_id, "now": utc_text(now)})


def by_key(conn: Connection, key: str, account_id: int) -> Found | None:
    """The account's session with *key*, if any."""
    params = {"key": key, "account_id": account_id}
    raw = _sqlite(conn)
    row = conn.execute(_BY_KEY, params).first() if raw is None else raw.execute(_SQ_BY_KEY, params).fetchone()
    return None if row is None else Found(*row)


def seen(conn: Connection, visit_id: int, now: dt.datetime) -> None:
    """The session was seen *now* (a heartbeat)."""
    raw = _sqlite(conn)
    if raw is None:
        conn.execute(_SEEN, {"visit_id": visit_id, "now": now})
    else:
        raw.execute(_SQ_SEEN, {"visit_id": visit_id, "now": utc_text(now)})
