"""The session and heartbeat logic behind the DNI API (no HTTP here).

A page view becomes a visitor session: its source comes from the account's
source rules (first-touch or last-touch across the visitor's earlier
sessions); a pool source leases a number to the session, a plain source shows
its own number.  A visitor seen again within ``web.session_minutes`` continues
the session and keeps the number.  With Do-Not-Track or Global Privacy Control
on, nothing is stored: the answer is the source's own number.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.models import Account, NumberPool, Site, Source, TrackingNumber, utcnow
from tracking import leases, phone
from tracking.dbapi import DriverConnections
from tracking.source_rules import Rule, Visit, classify, has_campaign_signal, load_rules, read_visit
from web import session_rows as rows

logger = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]
_T = TypeVar("_T")
#: PostgreSQL: how long a pool found full is taken to be still at its peak (its size) before it is counted again
PEAK_RECHECK_SECONDS = 10.0


@dataclass(frozen=True)
class AccountInfo:
    """What the API needs to know of an account, cached for a few seconds."""

    id: int
    origins: frozenset[str]
    rules: tuple[Rule, ...]
    source_names: dict[int, str]
    #: source id -> its own number (the lowest active one), E.164
    source_numbers: dict[int, str]
    #: source id -> (pool id, overflow number)
    pools: dict[int, tuple[int, str | None]]
    #: origin -> (the business numbers its pages show, E.164; its region or None)
    sites: dict[str, tuple[tuple[str, ...], str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class PageView:
    account: str
    visitor: str | None
    url: str
    referrer: str
    privacy: bool = False
    user_agent: str | None = None
    ip: str | None = None


@dataclass(frozen=True)
class Answer:
    number: str | None
    display: str | None
    session: str | None
    visitor: str | None
    expires_at: dt.datetime | None
    source: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "number": self.number,
            "display": self.display,
            "session": self.session,
            "visitor": self.visitor,
            "expires_at": self.expires_at.isoformat().replace("+00:00", "Z") if self.expires_at else None,
            "source": self.source,
        }


@dataclass(frozen=True)
class NewSession:
    """A page view that starts a new session (PostgreSQL), to be written with the others of its batch."""

    info: AccountInfo
    #: the session's column values
    visit: dict[str, Any]
    source_id: int | None
    #: the pool the session leases from, if its source has one
    pool_id: int | None


class SessionEnded(Exception):
    """The session is unknown, or its lease has ended (the number may be someone else's now)."""


def load_account(session: Session, public_key: str) -> AccountInfo | None:
    account_id = session.scalar(select(Account.id).where(Account.public_key == public_key))
    if account_id is None:
        return None
    sites = {
        origin: (tuple(n for n in numbers.split(",") if n), region)
        for origin, numbers, region in session.execute(
            select(Site.origin, Site.replace_numbers, Site.region).where(Site.account_id == account_id)
        ).all()
    }
    origins = frozenset(sites)
    names = dict(session.execute(select(Source.id, Source.name).where(Source.account_id == account_id)).all())
    numbers: dict[int, str] = {}
    for source_id, number in session.execute(
        select(TrackingNumber.source_id, TrackingNumber.number)
        .where(
            TrackingNumber.account_id == account_id,
            TrackingNumber.source_id.is_not(None),
            TrackingNumber.status == "active",
        )
        .order_by(TrackingNumber.id.desc())
    ).all():
        if source_id is not None:
            numbers[source_id] = number  # ordered newest first, so the oldest wins
    pools: dict[int, tuple[int, str | None]] = {}
    for pool_id, source_id, overflow in session.execute(
        select(NumberPool.id, NumberPool.source_id, NumberPool.overflow_number)
        .where(NumberPool.account_id == account_id, NumberPool.source_id.is_not(None))
        .order_by(NumberPool.id.desc())
    ).all():
        if source_id is not None:
            pools[source_id] = (pool_id, overflow)
    return AccountInfo(account_id, origins, tuple(load_rules(session, account_id)), names, numbers, pools, sites)


class AccountCache:
    """Accounts by public key, and every site origin, re-read after *ttl* seconds."""

    def __init__(self, factory: sessionmaker[Session], ttl: float = 10.0) -> None:
        self.factory = factory
        self.ttl = ttl
        self._lock = threading.Lock()
        self._accounts: dict[str, tuple[float, AccountInfo | None]] = {}
        self._origins: tuple[float, frozenset[str]] = (-1e18, frozenset())

    def cached(self, public_key: str) -> tuple[bool, AccountInfo | None]:
        """(True, info) when the cache holds a fresh answer (info None: no such account), else (False, None)."""
        hit = self._accounts.get(public_key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return True, hit[1]
        return False, None

    def get(self, public_key: str) -> AccountInfo | None:
        now = time.monotonic()
        hit = self._accounts.get(public_key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        with self.factory() as session:
            info = load_account(session, public_key)
        with self._lock:
            if len(self._accounts) > 10_000:
                self._accounts.clear()
            self._accounts[public_key] = (now, info)
        return info

    def any_site(self, origin: str) -> bool:
        """Whether *origin* is a site of some account (answers CORS preflights, which carry no account)."""
        now = time.monotonic()
        stamp, origins = self._origins
        if now - stamp >= self.ttl:
            with self.factory() as session:
                origins = frozenset(session.scalars(select(Site.origin)))
            self._origins = (now, origins)
        return origin in origins


@functools.lru_cache(maxsize=4096)
def _display(number: str, region: str) -> str:
    return phone.display(number, region)


def new_token() -> str:
    """A new session key or visitor id: the time in milliseconds (12 hex digits, so keys sort in the
    order they were made) and 128 random bits.  New rows then land at the end of the key and visitor
    indexes instead of on a random page of each: a batch of new sessions rewrites a few index pages,
    not one per session (SQLite writes every changed page to its log at each commit)."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_urlsafe(16)}"


@dataclass
class Dni:
    """Sessions and heartbeats against one database."""

    settings: Settings
    engine: Engine
    clock: Clock = utcnow
    #: SQLite has one writer at a time; queueing our own writers here avoids its busy-wait back-off
    write_lock: threading.Lock | None = field(default=None)
    connect_timeout: float = 5.0
    #: PostgreSQL: the driver-level connections (one per thread, each opened on its first use)
    driver: DriverConnections | None = field(default=None, init=False)
    #: PostgreSQL: pools found full, and until when (monotonic) their peak is known to be their size
    _full_pools: dict[int, float] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.engine.dialect.name == "postgresql":
            url = self.engine.url.render_as_string(hide_password=False)
            self.driver = DriverConnections(url, connect_timeout=self.connect_timeout)

    def _display(self, number: str | None) -> str | None:
        return _display(number, self.settings.numbers.default_region) if number else None

    def _source_number(self, info: AccountInfo, source_id: int | None) -> str | None:
        """A number that stands for the source without a visitor: its own, else its pool's overflow number."""
        if source_id is None:
            return None
        if source_id in info.source_numbers:
            return info.source_numbers[source_id]
        pool = info.pools.get(source_id)
        return pool[1] if pool else None

    def _overflow_number(self, info: AccountInfo, source_id: int) -> str | None:
        """What a full pool shows: its overflow number, else the source's own number."""
        pool = info.pools.get(source_id)
        return (pool[1] if pool else None) or info.source_numbers.get(source_id)

    def private_answer(self, info: AccountInfo, view: PageView) -> Answer:
        """Do-Not-Track / GPC: the source-level number; nothing is stored."""
        rule = classify(info.rules, read_visit(view.url, view.referrer))
        source_id = rule.source_id if rule else None
        number = self._source_number(info, source_id)
        return Answer(number, self._display(number), None, None, None, info.source_names.get(source_id or -1))

    def start(self, info: AccountInfo, view: PageView) -> Answer:
        if self.engine.dialect.name == "postgresql":  # a batch of one (web/session_batch.py batches many)
            planned = self.plan_start(info, view)
            return planned if isinstance(planned, Answer) else self.write_new_sessions([planned])[0]
        if view.privacy:
            return self.private_answer(info, view)
        visit = read_visit(view.url, view.referrer)
        rule = classify(info.rules, visit)
        if self.write_lock is not None:
            with self.write_lock:
                return _once_more_if_disconnected(self._start, info, view, visit, rule)
        return _once_more_if_disconnected(self._start, info, view, visit, rule)

    def _start(self, info: AccountInfo, view: PageView, visit: Visit, rule: Rule | None) -> Answer:
        with self.engine.connect() as conn:
            leases.begin_write(conn)
            return self._commit(conn, self._start_in(conn, info, view, visit, rule))

    def start_in(self, conn: Connection, info: AccountInfo, view: PageView) -> Answer:
        """:meth:`start` inside a write transaction the caller began and commits (web/group_commit.py)."""
        if view.privacy:
            return self.private_answer(info, view)
        visit = read_visit(view.url, view.referrer)
        return self._start_in(conn, info, view, visit, classify(info.rules, visit))

    def _start_in(self, conn: Connection, info: AccountInfo, view: PageView, visit: Visit, rule: Rule | None) -> Answer:
        now = self.clock()
        previous = self._previous(conn, info, view, now)
        source_id, continues = self._choose(previous, now, visit, rule)
        if continues:
            assert previous is not None
            rows.seen_again(conn, previous.id, now)
            visit_row = _VisitRow(previous.id, previous.key, previous.visitor_id, source_id)
            counted = False
            if source_id in info.pools:
                lease = leases.extend(conn, previous.id, self.clock)
                if lease is not None and not lease.ended:
                    return self._answer(info, visit_row, lease.number, lease.expires_at)
                # no lease: the pool was full when the session began, and that visit was counted then
                counted = lease is None
            return self._number_for(conn, info, visit_row, count_overflow=not counted)
        params = self._new_visit(info, view, visit, source_id, now)
        visit_id = rows.insert_session(conn, params)
        row = _VisitRow(visit_id, params["key"], params["visitor_id"], source_id)
        return self._number_for(conn, info, row)

    def plan_start(self, info: AccountInfo, view: PageView) -> Answer | NewSession:
        """PostgreSQL: a page view's answer when it continues the visitor's session (or is private),
        else the new session to write (:meth:`write_new_sessions`, with the others of its batch).

        Reads the database only when the visitor brought an id (its latest session): call it on a
        thread then.  A continuing session runs its transaction here.
        """
        if view.privacy:
            return self.private_answer(info, view)
        visit = read_visit(view.url, view.referrer)
        rule = classify(info.rules, visit)
        planned = self._plan(info, view, visit, rule)
        if planned is not None:
            return planned

        def go_on() -> Answer:
            with self.engine.connect() as conn:
                return self._commit(conn, self._start_in(conn, info, view, visit, rule))

        return _once_more_if_disconnected(go_on)

    def _plan(self, info: AccountInfo, view: PageView, visit: Visit, rule: Rule | None) -> NewSession | None:
        now = self.clock()
        previous = None
        if view.visitor:
            visitor = view.visitor
            previous = self._on_driver(lambda db: rows.previous_by_driver(db, info.id, visitor))
        source_id, continues = self._choose(self._recent(previous, now), now, visit, rule)
        if continues:
            return None
        pool = info.pools.get(source_id) if source_id is not None else None
        return NewSession(
            info, self._new_visit(info, view, visit, source_id, now), source_id, pool[0] if pool else None
        )

    def write_new_sessions(self, batch: list[NewSession]) -> list[Answer]:
        """PostgreSQL: write the new sessions of *batch*, all of one pool (or of none), and their answers.

        One statement (tracking.leases.start_sessions): all are written, or none.  Numbers go in
        the batch's order.  On this thread's driver connection (tracking/dbapi.py), once more on a
        new one when the server had dropped it.
        """
        pool_id = batch[0].pool_id
        if any(new.pool_id != pool_id for new in batch):
            raise ValueError("a batch of new sessions leases from one pool")
        visits = [new.visit for new in batch]
        # a full pool's peak is its size: counted at its first overflow, then again after a while (numbers
        # added meanwhile), not at every batch of visitors it turns away (each would read the whole pool)
        count_peak = pool_id is None or self._full_pools.get(pool_id, 0.0) <= time.monotonic()
        write = functools.partial(
            leases.start_sessions, visits=visits, pool_id=pool_id, now=self.clock(), count_peak=count_peak
        )
        written = self._on_driver(write)
        if count_peak and pool_id is not None and any(lease is not None and lease.overflow for _, lease in written):
            self._full_pools[pool_id] = time.monotonic() + PEAK_RECHECK_SECONDS
        answers = []
        for new, (visit_id, lease) in zip(batch, written, strict=True):
            row = _VisitRow(visit_id, new.visit["key"], new.visit["visitor_id"], new.source_id)
            if lease is None:
                answers.append(self._answer(new.info, row, self._source_number(new.info, new.source_id), None))
            elif lease.overflow:
                assert new.source_id is not None
                answers.append(self._answer(new.info, row, self._overflow_number(new.info, new.source_id), None))
            else:
                answers.append(self._answer(new.info, row, lease.number, lease.expires_at))
        return answers

    def _on_driver(self, func: Callable[[DriverConnections], _T]) -> _T:
        """*func* on the driver connections; once more on a new connection when the server had dropped this one.

        psycopg's errors are raised as SQLAlchemy's (an OperationalError, a database away, is a 503).
        """
        db = self._driver()
        try:
            return func(db)
        except psycopg.Error as exc:
            conn = db.current()
            if conn is None or not conn.broken:  # the statement failed, or no connection could be opened
                raise DBAPIError.instance(None, None, exc, psycopg.Error) from exc
            db.discard()
            logger.warning("database connection lost; the request runs again on a new one: %s", exc)
        try:
            return func(db)
        except psycopg.Error as again:
            conn = db.current()
            if conn is not None and conn.broken:
                db.discard()
            raise DBAPIError.instance(None, None, again, psycopg.Error) from again

    def _driver(self) -> DriverConnections:
        """PostgreSQL: the driver-level connections of the new sessions and the heartbeats."""
        if self.driver is None:
            raise RuntimeError("the driver-level connections are PostgreSQL's")
        return self.driver

    def close(self) -> None:
        """Close the driver-level connections (the engine's are the engine's)."""
        if self.driver is not None:
            self.driver.close()

    def _previous(self, conn: Connection, info: AccountInfo, view: PageView, now: dt.datetime) -> rows.Previous | None:
        """The visitor's latest session, unless it is older than the cookie's lifetime."""
        if not view.visitor:
            return None
        return self._recent(rows.previous(conn, info.id, view.visitor), now)

    def _recent(self, previous: rows.Previous | None, now: dt.datetime) -> rows.Previous | None:
        """*previous*, unless it is older than the cookie's lifetime."""
        if previous is not None and previous.last_seen_at < now - dt.timedelta(days=self.settings.web.cookie_days):
            return None
        return previous

    def _choose(
        self, previous: rows.Previous | None, now: dt.datetime, visit: Visit, rule: Rule | None
    ) -> tuple[int | None, bool]:
        """(the visit's source id, whether it continues the visitor's *previous* session)."""
        settings = self.settings.web
        source_id = rule.source_id if rule else None
        if previous is not None and previous.source_id is not None:
            if settings.attribution == "first-touch" or not has_campaign_signal(visit):
                source_id = previous.source_id
        continues = (
            previous is not None
            and previous.last_seen_at >= now - dt.timedelta(minutes=settings.session_minutes)
            and previous.source_id == source_id
        )
        return source_id, continues

    @staticmethod
    def _new_visit(
        info: AccountInfo, view: PageView, visit: Visit, source_id: int | None, now: dt.datetime
    ) -> dict[str, Any]:
        """The column values of a new visitor session."""
        return {
            "key": new_token(),
            "account_id": info.id,
            "visitor_id": view.visitor or new_token(),
            "source_id": source_id,
            "landing_url": view.url,
            "referrer": view.referrer or None,
            **{name: _param(visit, name) for name in leases.VISIT_PARAMS},
            "pages_seen": 1,
            "user_agent": view.user_agent[:500] if view.user_agent else None,
            "ip": view.ip,
            "started_at": now,
            "last_seen_at": now,
        }

    @staticmethod
    def _commit(conn: Connection, answer: Answer) -> Answer:
        conn.commit()
        return answer

    def _number_for(
        self, conn: Connection, info: AccountInfo, row: _VisitRow, *, count_overflow: bool = True
    ) -> Answer:
        source_id = row.source_id
        if source_id is not None and source_id in info.pools:
            pool_id, _ = info.pools[source_id]
            lease = leases.lease_number(conn, pool_id, row.id, self.clock, count_overflow=count_overflow)
            if not lease.overflow:
                return self._answer(info, row, lease.number, lease.expires_at)
            return self._answer(info, row, self._overflow_number(info, source_id), None)
        return self._answer(info, row, self._source_number(info, source_id), None)

    def _answer(self, info: AccountInfo, row: _VisitRow, number: str | None, expires: dt.datetime | None) -> Answer:
        source = info.source_names.get(row.source_id) if row.source_id is not None else None
        return Answer(number, self._display(number), row.key, row.visitor_id, expires, source)

    def heartbeat(self, info: AccountInfo, session_key: str) -> Answer:
        """Keep the session's number: its lease now ends a hold time from now.

        Raises SessionEnded for an unknown session, or one whose lease has ended.
        """
        if self.write_lock is not None:
            with self.write_lock:
                return _once_more_if_disconnected(self._heartbeat, info, session_key)
        return _once_more_if_disconnected(self._heartbeat, info, session_key)

    def _heartbeat(self, info: AccountInfo, session_key: str) -> Answer:
        if self.engine.dialect.name == "postgresql":
            outcome = self.beat_batch([(info, session_key)])[0]
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        return self._heartbeat_transaction(info, session_key)

    def beat_batch(self, beats: list[tuple[AccountInfo, str]]) -> list[Answer | BaseException]:
        """PostgreSQL: the heartbeats of *beats* ((account, session key) each) together, their outcomes in order.

        One transaction on the driver connection (tracking.leases.pg_heartbeats).  An outcome is
        the answer, or the SessionEnded to raise (an unknown session, or its lease has ended).
        """
        requests = [(info.id, key, frozenset(info.pools)) for info, key in beats]
        beat = functools.partial(leases.pg_heartbeats, beats=requests, clock=self.clock)
        outcomes: list[Answer | BaseException] = []
        for (info, _), kept in zip(beats, self._on_driver(beat), strict=True):
            if kept is None:
                outcomes.append(SessionEnded("unknown session"))
                continue
            row = _VisitRow(kept.visit_id, kept.key, kept.visitor_id, kept.source_id)
            if kept.source_id is not None and kept.source_id in info.pools:
                if kept.lease is None:  # the pool was full when the session began: it keeps the number it was shown
                    outcomes.append(self._answer(info, row, self._overflow_number(info, kept.source_id), None))
                elif kept.lease.ended:
                    outcomes.append(SessionEnded("the session's number lease has ended"))
                else:
                    outcomes.append(self._answer(info, row, kept.lease.number, kept.lease.expires_at))
            else:
                outcomes.append(self._answer(info, row, self._source_number(info, kept.source_id), None))
        return outcomes

    def _heartbeat_transaction(self, info: AccountInfo, session_key: str) -> Answer:
        with self.engine.connect() as conn:
            leases.begin_write(conn)
            return self._commit(conn, self.heartbeat_in(conn, info, session_key))

    def heartbeat_in(self, conn: Connection, info: AccountInfo, session_key: str) -> Answer:
        """:meth:`heartbeat` inside a write transaction the caller began and commits (web/group_commit.py).

        SessionEnded is raised before anything is written.
        """
        found = rows.by_key(conn, session_key, info.id)
        if found is None:
            raise SessionEnded("unknown session")
        row = _VisitRow(found.id, found.key, found.visitor_id, found.source_id)
        number: str | None
        expires = None
        if row.source_id in info.pools:
            lease = leases.extend(conn, row.id, self.clock)
            if lease is None:  # the pool was full when the session began: it keeps the number it was shown
                number = self._overflow_number(info, row.source_id)
            elif lease.ended:
                raise SessionEnded("the session's number lease has ended")
            else:
                number, expires = lease.number, lease.expires_at
        else:
            number = self._source_number(info, row.source_id)
        rows.seen(conn, row.id, self.clock())
        return self._answer(info, row, number, expires)


def _once_more_if_disconnected(func: Callable[..., Answer], *args: object) -> Answer:
    """Run *func*; once more when its pooled connection turned out dead (the engine checks none on checkout).

    The pool has discarded the dead connection by then, so the second run gets a fresh one.
    Nothing was committed: the transaction died with its connection.
    """
    try:
        return func(*args)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        logger.warning("database connection lost; the request runs again on a new one: %s", exc.orig)
        return func(*args)


@dataclass(frozen=True)
class _VisitRow:
    id: int
    key: str
    visitor_id: str
    source_id: int | None


def _param(visit: Visit, key: str) -> str | None:
    value = visit.params.get(key)
    return value[:200] if value else None
