"""Leases of pool numbers to website visitor sessions.

A pool number is free when no lease of it is live and its hold time has passed
(``tracking_numbers.last_leased_at``, the end of its latest lease, is in the
past); the least recently used free number goes first.  A heartbeat moves the
lease's end to now + the pool's hold time.  When every number is taken the pool
answers its overflow number and counts the event, so ``calltrack pools status``
can say the pool is too small.

Never two live leases on one number.  The number's own row is the lock, so
visitors of one pool do not wait for each other:

- PostgreSQL: one statement picks the least recently used free number with
  ``FOR UPDATE SKIP LOCKED`` (a number another transaction is leasing right now
  is skipped, not waited for), moves its ``last_leased_at`` to the lease's end,
  inserts the lease and returns the number.  A heartbeat locks its number's row
  (``FOR UPDATE``) before it reads the clock, and extends only the number's
  latest lease (:func:`pg_heartbeats`, a batch at a time: the sessions found by their keys with the
  lock, then one statement of writes).  The pool row is written only when the peak grows; a full
  pool's overflow is counted in a slot row of ``pool_overflow_counts`` picked by
  the database connection (:func:`tracking.pools.overflow_counts` adds them up),
  so visitors of a full pool do not queue for one row either.  A new visitor's session is written with its lease in that same
  statement (:func:`start_sessions`, for every new session of a batch), run on its own in
  autocommit: one round trip and one commit, and no lock is held beyond it.
- SQLite: an immediate transaction (``BEGIN IMMEDIATE``, one writer at a time)
  started by :func:`begin_write`.

:func:`find_double_leases` checks the result.

What a call is attributed to is read back by :mod:`tracking.attribution`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from sqlalchemy import Connection, Integer, String, Table, and_, bindparam, func, select, text, update
from sqlalchemy.orm import Session, aliased

from schema.models import (
    LEASE_END_ORDER,
    Account,
    NumberPool,
    PoolLease,
    Source,
    TrackingNumber,
    VisitorSession,
    utcnow,
)
from schema.types import UTCDateTime, from_utc_text, utc_text
from tracking.accounts import get_account
from tracking.dbapi import DriverConnections
from tracking.pools import overflow_counts, pool_sizes

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class Lease:
    """What a session is shown: a leased pool number, or the overflow number (``overflow``)."""

    number: str | None
    number_id: int | None
    lease_id: int | None
    expires_at: dt.datetime | None
    overflow: bool = False
    #: from extend(): the session's lease exists but has ended
    ended: bool = False


def begin_write(conn: Connection) -> None:
    """Start the transaction as a writer.

    On SQLite this is ``BEGIN IMMEDIATE``: the write lock is taken now, so two
    processes cannot both read a number as free and then both lease it.  It must
    come before anything else in the transaction.  On PostgreSQL it does nothing;
    the number's row lock is taken by :func:`lease_number` and :func:`extend`.
    """
    if conn.dialect.name != "sqlite":
        return
    driver = conn.connection.driver_connection
    if driver is not None and getattr(driver, "in_transaction", False):
        raise RuntimeError("begin_write() must start the transaction (a SQLite transaction is already open)")
    conn.exec_driver_sql("BEGIN IMMEDIATE")


_pools = cast(Table, NumberPool.__table__)
_numbers = cast(Table, TrackingNumber.__table__)
_leases = cast(Table, PoolLease.__table__)

# Both databases, every lease statement: a pool's free numbers (``n``: active, the end of the latest
# lease passed), in the order they are leased, and the count of its live leases (``c``).  The lease
# end is schema.models.LEASE_END_ORDER, the expression of the index ix_tracking_numbers_pool_free
# (each database uses the index only for that very expression): the free number is the index's
# first entry, the live leases one range of it, however large the pool.
_FREE_IN_LEASE_ORDER = (
    "n.pool_id = :pool_id AND n.status = 'active' AND "
    + LEASE_END_ORDER.replace("last_leased_at", "n.last_leased_at")
    + " <= :now ORDER BY "
    + LEASE_END_ORDER.replace("last_leased_at", "n.last_leased_at")
    + ", n.id"
)
_LIVE_IN_POOL = (
    "SELECT count(*) FROM tracking_numbers c WHERE c.pool_id = :pool_id AND c.status = 'active' AND "  # noqa: S608
    + LEASE_END_ORDER.replace("last_leased_at", "c.last_leased_at")
    + " > :now"
)

# SQLite: the lease statements go straight to the driver's cursor.  Through SQLAlchemy each cost
# 25-60 µs of its statement machinery (parameters matched to the compiled statement, every value's
# type processed, a result object built) around the 3-14 µs SQLite spends on it, and a page view
# runs three to six of them under the one write lock.  Times are written as SQLAlchemy's SQLite
# DateTime writes them (schema.types.utc_text), so they compare with the rows it wrote.
# Free: the end of its latest lease (last_leased_at, kept under the write lock) has passed; the pool's
# hold and peak come with it.
_SQ_FREE = (
    "SELECT n.id, n.number, p.hold_minutes, p.peak_leases "
    "FROM tracking_numbers n JOIN number_pools p ON p.id = n.pool_id WHERE " + _FREE_IN_LEASE_ORDER + " LIMIT 1"
)
_SQ_COUNT_OVERFLOW = "UPDATE number_pools SET overflow_count = overflow_count + 1 WHERE id = :pool_id"
_SQ_INSERT_LEASE = """INSERT INTO pool_leases (pool_id, number_id, session_id, leased_at, expires_at)
VALUES (:pool_id, :number_id, :session_id, :now, :until)"""
_SQ_SET_NUMBER_END = "UPDATE tracking_numbers SET last_leased_at = :until, updated_at = :updated WHERE id = :number_id"
_SQ_SET_PEAK = "UPDATE number_pools SET peak_leases = :peak WHERE id = :pool_id"
# the session's latest lease, its number's latest lease end and its pool's hold
_SQ_SESSION_LEASE = """SELECT l.id, l.number_id, l.expires_at, n.number, n.last_leased_at, p.hold_minutes
FROM pool_leases l
JOIN tracking_numbers n ON n.id = l.number_id
JOIN number_pools p ON p.id = l.pool_id
WHERE l.session_id = :visit_id
ORDER BY l.leased_at DESC, l.id DESC
LIMIT 1"""
_SQ_SET_LEASE_END = "UPDATE pool_leases SET expires_at = :until WHERE id = :lease_id"

# PostgreSQL, a continuing visit's lease (_pg_extend): the lease's end and the number's
_SET_NUMBER_END = (
    update(_numbers).where(_numbers.c.id == bindparam("number_id")).values(last_leased_at=bindparam("until"))
)
_SET_LEASE_END = update(_leases).where(_leases.c.id == bindparam("lease_id")).values(expires_at=bindparam("until"))


# PostgreSQL, shared by the lease statements below: the pool's least recently used free number, locked
# with SKIP LOCKED (a number another transaction is leasing is passed over, not waited for), taken
# until the pool's hold ends (CTEs ``free`` and ``took``; the statement's ``pool`` CTE gives hold_minutes).
_PG_TAKE_FREE = (
    "free AS (SELECT n.id FROM tracking_numbers n WHERE "  # noqa: S608 (this module's constants only)
    + _FREE_IN_LEASE_ORDER
    + """
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), took AS (
    UPDATE tracking_numbers n SET last_leased_at = :now + make_interval(mins => pool.hold_minutes)
    FROM free, pool WHERE n.id = free.id
    RETURNING n.id, n.number, n.last_leased_at
)"""
)

# PostgreSQL: the whole lease in one round trip.  The free number is locked with SKIP LOCKED, so a
# number that another transaction is leasing is passed over instead of waited for; READ COMMITTED
# re-checks the WHERE clause on a row that changed since the statement's snapshot, so a number
# leased and committed meanwhile is never taken twice.  ``live`` counts the pool's other live
# leases (as committed) plus this one, for the pool's peak.
_PG_LEASE = (
    text(
        """
WITH pool AS (
    SELECT id, hold_minutes, peak_leases FROM number_pools WHERE id = :pool_id
), """  # noqa: S608 (this module's constants only)
        + _PG_TAKE_FREE
        + """, lease AS (
    INSERT INTO pool_leases (pool_id, number_id, session_id, leased_at, expires_at)
    SELECT :pool_id, took.id, :visit_id, :now, took.last_leased_at FROM took
    RETURNING id
)
SELECT took.id AS number_id, took.number, took.last_leased_at AS expires_at, lease.id AS lease_id,
       pool.peak_leases,
       ("""
        + _LIVE_IN_POOL
        + """) + 1 AS live
FROM took, lease, pool
"""
    )
    .bindparams(bindparam("now", type_=UTCDateTime()))
    .columns(
        number_id=Integer(),
        number=String(),
        expires_at=UTCDateTime(),
        lease_id=Integer(),
        peak_leases=Integer(),
        live=Integer(),
    )
)
# A full pool: counted in this connection's slot, and its peak is its size: the free scan found no
# number, so every active one was live or being leased by another transaction (which this
# statement's snapshot does not see: counting the live leases fell short of the pool).  The pool
# row is written only when that is more than the peak.
_PG_OVERFLOW = text(
    """
WITH live AS (
    SELECT count(*) AS n FROM tracking_numbers c WHERE c.pool_id = :pool_id AND c.status = 'active'
), peak AS (
    UPDATE number_pools p SET peak_leases = live.n FROM live WHERE p.id = :pool_id AND p.peak_leases < live.n
    RETURNING p.id
)
INSERT INTO pool_overflow_counts AS o (pool_id, slot, count)
SELECT p.id, pg_backend_pid() % 16, 1 FROM number_pools p WHERE p.id = :pool_id
ON CONFLICT (pool_id, slot) DO UPDATE SET count = o.count + 1
"""
)
# Only when the peak grows, so the pool row stays unlocked in the usual case.
_PG_RAISE_PEAK = text("UPDATE number_pools SET peak_leases = :peak WHERE id = :pool_id AND peak_leases < :peak")
# The session's latest lease, its number's row locked (before the clock is read), and the number's
# latest lease end: a lease is extended only while it is its number's latest.
_PG_SESSION_LEASE = text(
    """
SELECT l.id, l.pool_id, l.number_id, l.expires_at, n.number, n.last_leased_at, p.hold_minutes
FROM pool_leases l
JOIN tracking_numbers n ON n.id = l.number_id
JOIN number_pools p ON p.id = l.pool_id
WHERE l.session_id = :visit_id
ORDER BY l.leased_at DESC, l.id DESC
LIMIT 1
FOR UPDATE OF n
"""
).columns(
    id=Integer(),
    pool_id=Integer(),
    number_id=Integer(),
    expires_at=UTCDateTime(),
    number=String(),
    last_leased_at=UTCDateTime(),
    hold_minutes=Integer(),
)


# PostgreSQL: new visitor sessions and their leases in one statement, run on its own (autocommit), so
# a batch of sessions costs one round trip and one commit, and holds no lock across round trips.
# The sessions come as one JSON parameter (``requests``, numbered by ``ord`` from 1).  The pool's
# least recently used free numbers, as many as there are sessions, are locked with SKIP LOCKED (a
# number another transaction is leasing is passed over, not waited for; READ COMMITTED re-checks a
# row that changed since the snapshot, so a number leased and committed meanwhile is never taken
# twice), taken until the pool's hold ends and paired with the sessions in order of arrival; the
# sessions beyond the free numbers get none and are counted as overflows in this connection's slot
# of pool_overflow_counts, so full-pool visitors on different connections write different rows
# instead of queueing for the pool row's lock.  The pool row is written only when the peak grows.
# Every CTE sees the statement's snapshot: ``live`` counts the pool's live leases as committed plus
# the ones taken here, or, when a session of the batch got no number, the pool's active numbers (a
# count from the snapshot alone missed leases committed meanwhile: the peak fell short of the pool).
#: the page view's campaign parameters a visitor session keeps, each in its own column
VISIT_PARAMS = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "gclid",
    "gbraid",
    "wbraid",
    "msclkid",
)
#: a new visitor session's column values, as the DNI API writes them
SESSION_COLUMNS = (
    "key",
    "account_id",
    "visitor_id",
    "source_id",
    "landing_url",
    "referrer",
    *VISIT_PARAMS,
    "pages_seen",
    "user_agent",
    "ip",
    "started_at",
    "last_seen_at",
)
_PG_VISIT_TYPES = {"account_id": "int", "source_id": "int", "pages_seen": "int"}
# (S608: this module's constants only, here and below)
_PG_REQUESTS = (
    "requests AS (SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS r(ord int, "  # noqa: S608
    + ", ".join(f"{c} {'timestamp' if c.endswith('_at') else _PG_VISIT_TYPES.get(c, 'text')}" for c in SESSION_COLUMNS)
    + ")), visit AS (INSERT INTO visitor_sessions ("
    + ", ".join(SESSION_COLUMNS)
    + ") SELECT "
    + ", ".join(SESSION_COLUMNS)
    + " FROM requests ORDER BY ord RETURNING id, key)"
)
_PG_START = (
    "WITH "  # noqa: S608
    + _PG_REQUESTS
    + """, pool AS (
    SELECT id, hold_minutes FROM number_pools WHERE id = :pool_id
), free AS (
    SELECT n.id, n.last_leased_at FROM tracking_numbers n WHERE """
    + _FREE_IN_LEASE_ORDER
    + """
    LIMIT :wanted
    FOR UPDATE SKIP LOCKED
), ranked AS (
    SELECT id, row_number() OVER (ORDER BY last_leased_at ASC NULLS FIRST, id) AS rn FROM free
), took AS (
    UPDATE tracking_numbers n SET last_leased_at = :now + make_interval(mins => pool.hold_minutes)
    FROM ranked, pool WHERE n.id = ranked.id
    RETURNING n.id, n.number, n.last_leased_at, ranked.rn
), paired AS (
    SELECT r.ord, visit.id AS visit_id, took.id AS number_id, took.number, took.last_leased_at AS expires_at
    FROM requests r JOIN visit ON visit.key = r.key LEFT JOIN took ON took.rn = r.ord
), lease AS (
    INSERT INTO pool_leases (pool_id, number_id, session_id, leased_at, expires_at)
    SELECT :pool_id, number_id, visit_id, :now, expires_at FROM paired WHERE number_id IS NOT NULL
    RETURNING id, session_id
), counts AS (
    SELECT (SELECT count(*) FROM requests) - (SELECT count(*) FROM took) AS overflows
), live AS (
    -- a session left without a number means that every active number of the pool was live or being
    -- leased at this moment (the free scan skips only rows other statements are leasing), so the
    -- pool's size is its peak (count_peak false: the caller counted it so a moment ago, and a batch
    -- that leased no number cannot have raised it); else the leases committed before this statement,
    -- and its own
    SELECT CASE WHEN counts.overflows > 0 AND NOT :count_peak AND NOT EXISTS (SELECT 1 FROM took) THEN 0
                WHEN counts.overflows > 0
                THEN (SELECT count(*) FROM tracking_numbers c WHERE c.pool_id = :pool_id AND c.status = 'active')
                ELSE ("""
    + _LIVE_IN_POOL
    + """) + (SELECT count(*) FROM took)
           END AS n,
           counts.overflows
    FROM counts
), peak AS (
    UPDATE number_pools p SET peak_leases = live.n FROM live WHERE p.id = :pool_id AND p.peak_leases < live.n
    RETURNING p.id
), overflow AS (
    INSERT INTO pool_overflow_counts AS o (pool_id, slot, count)
    SELECT pool.id, pg_backend_pid() % 16, live.overflows FROM pool, live WHERE live.overflows > 0
    ON CONFLICT (pool_id, slot) DO UPDATE SET count = o.count + EXCLUDED.count
    RETURNING o.pool_id
)
SELECT paired.ord, paired.visit_id, paired.number_id, paired.number, paired.expires_at, lease.id
FROM paired LEFT JOIN lease ON lease.session_id = paired.visit_id
ORDER BY paired.ord
"""
)
# Sessions of a source without a pool: the rows alone.
_PG_START_UNPOOLED = (
    "WITH "  # noqa: S608
    + _PG_REQUESTS
    + " SELECT r.ord, visit.id FROM requests r JOIN visit ON visit.key = r.key ORDER BY r.ord"
)


def start_sessions(
    db: DriverConnections,
    visits: list[dict[str, Any]],
    pool_id: int | None,
    now: dt.datetime,
    *,
    count_peak: bool = True,
) -> list[tuple[int, Lease | None]]:
    """PostgreSQL: insert visitor sessions *visits* (their column values) and lease each a number of *pool_id*.

    One statement on this thread's driver connection, in autocommit: the whole
    transaction in one round trip and one commit for every session of the batch,
    without SQLAlchemy (its checkout, isolation level and statement machinery cost
    twice the driver's own work here).  The numbers go in order: the first
    session gets the least recently used free number.  Per session, in order:
    its id and its Lease (None without a pool; ``overflow`` set, and counted, when
    the pool had no number left for it).  A pool that had none left raises its peak
    to its size, which reads every number of the pool; *count_peak* false skips that
    for a batch that leased no number (the caller counted the pool full a moment ago:
    web.dni.Dni, PEAK_RECHECK_SECONDS).
    """
    rows = orjson.dumps(
        [
            {"ord": i, **{c: utc_text(v[c]) if c.endswith("_at") else v[c] for c in SESSION_COLUMNS}}
            for i, v in enumerate(visits, 1)
        ]
    ).decode()
    if pool_id is None:
        return [(int(visit_id), None) for _, visit_id in db.execute(_PG_START_UNPOOLED, {"rows": rows}).fetchall()]
    params = {"rows": rows, "pool_id": pool_id, "now": db.ts(now), "wanted": len(visits), "count_peak": count_peak}
    out: list[tuple[int, Lease | None]] = []
    for _, visit_id, number_id, number, expires_at, lease_id in db.execute(_PG_START, params).fetchall():
        if number_id is None:
            out.append((int(visit_id), Lease(None, None, None, None, overflow=True)))
        else:
            out.append((int(visit_id), Lease(number, number_id, lease_id, expires_at.replace(tzinfo=dt.UTC))))
    if out and out[-1][1] is not None and out[-1][1].overflow:
        logger.debug("pool %s exhausted: overflow number shown", pool_id)
    return out


# Heartbeats on PostgreSQL, a batch at a time, in one transaction of two statements: each session
# found by its key with its latest lease, the numbers' rows locked (in the order of their ids, so
# that two batches never wait for each other in a circle) before the clock is read; then the leases'
# ends, the numbers' ends and the sessions' last visits written together.
_PG_BEAT_REQUESTS = """
WITH requests AS (
    SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS r(ord int, key text, account_id int)
)
"""
_PG_LOCK_BEATS = (
    _PG_BEAT_REQUESTS  # noqa: S608 (this module's constants only)
    + """SELECT r.ord, v.id, v.key, v.visitor_id, v.source_id,
       l.id, l.number_id, l.expires_at, n.number, n.last_leased_at, p.hold_minutes
FROM requests r
JOIN visitor_sessions v ON v.key = r.key AND v.account_id = r.account_id
CROSS JOIN LATERAL (
    SELECT id, number_id, pool_id, expires_at FROM pool_leases
    WHERE session_id = v.id ORDER BY leased_at DESC, id DESC LIMIT 1
) l
JOIN tracking_numbers n ON n.id = l.number_id
JOIN number_pools p ON p.id = l.pool_id
ORDER BY n.id
FOR UPDATE OF n
"""
)
# The sessions of a batch that have no lease, by key (the statement above finds only those with one).
_PG_BEAT_SESSIONS = (
    _PG_BEAT_REQUESTS
    + """SELECT r.ord, v.id, v.key, v.visitor_id, v.source_id
FROM requests r JOIN visitor_sessions v ON v.key = r.key AND v.account_id = r.account_id
"""
)
_PG_EXTEND_BEATS = """
WITH w AS (
    SELECT * FROM json_to_recordset(CAST(:rows AS json))
        AS r(lease_id int, number_id int, visit_id int, until timestamp)
), lease AS (
    UPDATE pool_leases l SET expires_at = w.until FROM w WHERE l.id = w.lease_id RETURNING l.id
), number AS (
    UPDATE tracking_numbers n SET last_leased_at = w.until FROM w WHERE n.id = w.number_id RETURNING n.id
)
UPDATE visitor_sessions v SET last_seen_at = :now FROM w WHERE v.id = w.visit_id
"""


@dataclass(frozen=True)
class KeptSession:
    """What a PostgreSQL heartbeat found: the session (by its key) and its lease, extended unless ended.

    ``lease`` is None when the session has none to keep: it never had one (its pool was full when
    it began), or its source has no pool (any more).
    """

    visit_id: int
    key: str
    visitor_id: str
    source_id: int | None
    lease: Lease | None


def pg_heartbeats(
    db: DriverConnections, beats: list[tuple[int, str, frozenset[int]]], clock: Clock = utcnow
) -> list[KeptSession | None]:
    """PostgreSQL: the heartbeats of *beats*, each (account id, session key, the account's pool sources).

    One transaction on this thread's driver connection for the whole batch: the sessions with
    their latest leases, the numbers' rows locked before the clock is read; the sessions without
    one, by key (only when some were not found); then one statement of writes.  A lease of a pool
    source is extended (:func:`extend`) only while it is its number's latest.  Per heartbeat, in
    order: None for an unknown session, else what was found, its lease with ``ended`` set (and
    nothing written for it) when it has ended.  Every other session found is marked seen.
    """
    requests = [{"ord": i, "key": key, "account_id": account} for i, (account, key, _) in enumerate(beats, 1)]
    out: list[KeptSession | None] = [None] * len(beats)
    with db.connection().transaction():
        rows = orjson.dumps(requests).decode()
        found = db.execute(_PG_LOCK_BEATS, {"rows": rows}).fetchall()  # locks the numbers
        now = clock()
        writes: list[dict[str, Any]] = []
        for ord_, visit_id, key, visitor_id, source_id, lease_id, number_id, ends, e164, number_end, hold in found:
            lease: Lease | None = None
            write: dict[str, Any] = {"lease_id": None, "number_id": None, "visit_id": visit_id, "until": None}
            if source_id in beats[ord_ - 1][2]:
                ends_at = ends.replace(tzinfo=dt.UTC)
                if ends_at <= now or number_end != ends:  # a later lease of the number has ended this one too
                    out[ord_ - 1] = KeptSession(
                        visit_id, key, visitor_id, source_id, Lease(e164, number_id, lease_id, ends_at, ended=True)
                    )
                    continue
                expires = max(ends_at, now + dt.timedelta(minutes=hold))
                if expires > ends_at:
                    write.update(lease_id=lease_id, number_id=number_id, until=utc_text(expires))
                lease = Lease(e164, number_id, lease_id, expires)
            writes.append(write)
            out[ord_ - 1] = KeptSession(visit_id, key, visitor_id, source_id, lease)
        if len(found) < len(beats):
            for ord_, visit_id, key, visitor_id, source_id in db.execute(_PG_BEAT_SESSIONS, {"rows": rows}).fetchall():
                if out[ord_ - 1] is None:
                    writes.append({"lease_id": None, "number_id": None, "visit_id": visit_id, "until": None})
                    out[ord_ - 1] = KeptSession(visit_id, key, visitor_id, source_id, None)
        if writes:
            db.execute(_PG_EXTEND_BEATS, {"rows": orjson.dumps(writes).decode(), "now": db.ts(clock())})
    return out


def lease_number(
    conn: Connection, pool_id: int, visit_id: int, clock: Clock = utcnow, *, count_overflow: bool = True
) -> Lease:
    """Lease the pool's least recently used free number to visitor session *visit_id*.

    Call inside a transaction started with :func:`begin_write`.  When the pool
    is full the overflow is counted (unless *count_overflow* is false: a session
    that was counted already, seen again) and the Lease has ``overflow`` set and
    no number: the caller shows the pool's overflow number.
    """
    if conn.dialect.name == "postgresql":
        return _pg_lease_number(conn, pool_id, visit_id, clock, count_overflow)
    # SQLite: begin_write() holds the database's write lock already, so the clock is read under it
    now = clock()
    at = utc_text(now)
    cur = _driver(conn).cursor()
    free = cur.execute(_SQ_FREE, {"pool_id": pool_id, "now": at}).fetchone()
    if free is None:
        if count_overflow:
            cur.execute(_SQ_COUNT_OVERFLOW, {"pool_id": pool_id})
        logger.debug("pool %s exhausted: overflow number shown", pool_id)
        return Lease(None, None, None, None, overflow=True)
    number_id, e164, hold_minutes, peak = free
    expires = now + dt.timedelta(minutes=hold_minutes)
    until = utc_text(expires)
    cur.execute(
        _SQ_INSERT_LEASE,
        {"pool_id": pool_id, "number_id": number_id, "session_id": visit_id, "now": at, "until": until},
    )
    lease_id = cur.lastrowid
    cur.execute(_SQ_SET_NUMBER_END, {"number_id": number_id, "until": until, "updated": utc_text(utcnow())})
    in_use = cur.execute(_LIVE_IN_POOL, {"pool_id": pool_id, "now": at}).fetchone()[0]
    if in_use > peak:
        cur.execute(_SQ_SET_PEAK, {"pool_id": pool_id, "peak": in_use})
    return Lease(e164, number_id, lease_id, expires)


def _driver(conn: Connection) -> Any:
    """The SQLite driver's own connection under *conn* (its transaction is *conn*'s)."""
    return conn.connection.driver_connection


def _pg_lease_number(conn: Connection, pool_id: int, visit_id: int, clock: Clock, count_overflow: bool) -> Lease:
    now = clock()
    row = conn.execute(_PG_LEASE, {"pool_id": pool_id, "visit_id": visit_id, "now": now}).first()
    if row is None:
        if count_overflow:
            conn.execute(_PG_OVERFLOW, {"pool_id": pool_id})
        logger.debug("pool %s exhausted: overflow number shown", pool_id)
        return Lease(None, None, None, None, overflow=True)
    if row.live > row.peak_leases:
        conn.execute(_PG_RAISE_PEAK, {"pool_id": pool_id, "peak": row.live})
    return Lease(row.number, row.number_id, row.lease_id, row.expires_at)


def extend(conn: Connection, visit_id: int, clock: Clock = utcnow) -> Lease | None:
    """Move the session's live lease to end a hold time from now.

    None when the session never had a lease; a Lease with ``ended`` set when it
    has already ended: an ended lease is not revived, its number may be someone
    else's by now.  Call inside a transaction started with :func:`begin_write`.
    """
    if conn.dialect.name == "postgresql":
        return _pg_extend(conn, visit_id, clock)
    cur = _driver(conn).cursor()  # SQLite: begin_write() holds the write lock already
    latest = cur.execute(_SQ_SESSION_LEASE, {"visit_id": visit_id}).fetchone()
    if latest is None:
        return None
    lease_id, number_id, ends_text, e164, number_end, hold_minutes = latest
    ends = from_utc_text(ends_text)
    now = clock()
    if ends <= now or number_end != ends_text:
        return Lease(e164, number_id, lease_id, ends, ended=True)
    expires = max(ends, now + dt.timedelta(minutes=hold_minutes))
    if expires > ends:
        until = utc_text(expires)
        cur.execute(_SQ_SET_LEASE_END, {"lease_id": lease_id, "until": until})
        cur.execute(_SQ_SET_NUMBER_END, {"number_id": number_id, "until": until, "updated": utc_text(utcnow())})
    return Lease(e164, number_id, lease_id, expires)


def _pg_extend(conn: Connection, visit_id: int, clock: Clock) -> Lease | None:
    latest = conn.execute(_PG_SESSION_LEASE, {"visit_id": visit_id}).first()  # locks the number's row
    if latest is None:
        return None
    now = clock()
    # A later lease of the number (by a process whose clock runs ahead) has ended this one too.
    if latest.expires_at <= now or latest.last_leased_at != latest.expires_at:
        return Lease(latest.number, latest.number_id, latest.id, latest.expires_at, ended=True)
    expires = max(latest.expires_at, now + dt.timedelta(minutes=latest.hold_minutes))
    if expires > latest.expires_at:
        conn.execute(_SET_LEASE_END, {"lease_id": latest.id, "until": expires})
        conn.execute(_SET_NUMBER_END, {"number_id": latest.number_id, "until": expires})
    return Lease(latest.number, latest.number_id, latest.id, expires)


def find_double_leases(session: Session, pool_id: int | None = None) -> list[tuple[int, int, int]]:
    """Pairs of leases of one number whose times overlap, as (number_id, lease_id, other_lease_id)."""
    a, b = aliased(PoolLease), aliased(PoolLease)
    query = select(a.number_id, a.id, b.id).where(
        a.number_id == b.number_id,
        a.id < b.id,
        and_(a.leased_at < b.expires_at, b.leased_at < a.expires_at),
    )
    if pool_id is not None:
        query = query.where(a.pool_id == pool_id)
    return [(n, x, y) for n, x, y in session.execute(query).all()]


# --- pool status ----------------------------------------------------------------------


def peak_demand(spans: list[tuple[dt.datetime, dt.datetime]]) -> int:
    """The largest number of (start, end) spans open at one moment (an end frees its slot first)."""
    points: list[tuple[dt.datetime, int]] = []
    for start, end in spans:
        points.append((start, 1))
        points.append((end, -1))
    points.sort(key=lambda p: (p[0], p[1]))
    best = current = 0
    for _, step in points:
        current += step
        best = max(best, current)
    return best


def pool_status(
    session: Session, account_name: str | None = None, clock: Clock = utcnow, history_days: int = 30
) -> list[dict[str, Any]]:
    """Per pool: size, live leases, peak leases, overflow count and the size that would have sufficed.

    The suggested size is the peak number of visitor sessions of the pool's
    source that needed a number at the same moment (each from its start until
    a hold time after it was last seen) over the last *history_days*, so visits
    that got the overflow number count too.
    """
    now = clock()
    query = select(NumberPool, Account.name, Source.name).join(Account, Account.id == NumberPool.account_id)
    query = query.outerjoin(Source, Source.id == NumberPool.source_id).order_by(Account.name, NumberPool.name)
    if account_name:
        query = query.where(NumberPool.account_id == get_account(session, account_name).id)
    sizes = pool_sizes(session)
    overflows = overflow_counts(session)
    live = dict(
        session.execute(
            select(PoolLease.pool_id, func.count()).where(PoolLease.expires_at > now).group_by(PoolLease.pool_id)
        ).all()
    )
    since = now - dt.timedelta(days=history_days)
    rows = []
    for pool, account, source in session.execute(query).all():
        demand = 0
        if pool.source_id is not None:
            hold = dt.timedelta(minutes=pool.hold_minutes)
            spans = [
                (start, seen + hold)
                for start, seen in session.execute(
                    select(VisitorSession.started_at, VisitorSession.last_seen_at).where(
                        VisitorSession.source_id == pool.source_id, VisitorSession.last_seen_at >= since - hold
                    )
                ).all()
            ]
            demand = peak_demand(spans)
        size = sizes.get(pool.id, 0)
        suggested = max(demand, pool.peak_leases, 1)
        rows.append(
            {
                "account": account,
                "pool": pool.name,
                "source": source,
                "hold_minutes": pool.hold_minutes,
                "size": size,
                "live": live.get(pool.id, 0),
                "peak": pool.peak_leases,
                "overflow_count": overflows.get(pool.id, pool.overflow_count),
                "suggested_size": suggested,
                "advice": _advice(size, suggested),
            }
        )
    return rows


def _advice(size: int, suggested: int) -> str:
    if size == 0:
        return "empty: add numbers"
    if suggested > size:
        return f"pool too small: add {suggested - size}"
    if size > math.ceil(suggested * 1.5) + 2:
        return "larger than needed"
    return "ok"
