"""PostgreSQL: the new visitor sessions waiting at one moment share one statement (web/session_batch.py).

Every request gets its own answer after the statement has committed, numbers go in order of
arrival and are never leased twice, and a request the database refuses costs the others a
retry, never their answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.db import make_engine
from schema.models import PoolLease, VisitorSession
from tests.integration.dni_helpers import OVERFLOW, POOL, SITE, sent_statements, shop
from tracking.accounts import add_source
from tracking.leases import find_double_leases
from tracking.pools import add_numbers, create_pool, overflow_counts
from tracking.source_rules import add_rule
from web.dni import AccountCache, AccountInfo, Answer, Dni, NewSession, PageView
from web.session_batch import NewSessions

VISITS = 20
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def pg_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has its own group commit (web/group_commit.py)")
    return database_url


@pytest.fixture
def site(pg_url: str, session_factory: sessionmaker[Session], settings: Settings) -> AccountInfo:
    return shop(session_factory, settings)


@pytest.fixture
def dni(pg_url: str, settings: Settings) -> Iterator[Dni]:
    engine = make_engine(pg_url, pre_ping=False)
    dni = Dni(settings, engine, lambda: NOW)
    yield dni
    dni.close()
    engine.dispose()


def new_session(dni: Dni, info: AccountInfo, i: int) -> NewSession:
    planned = dni.plan_start(info, PageView("Shop", None, f"{SITE}/?n={i}", ""))
    assert isinstance(planned, NewSession)
    return planned


def test_a_full_pool_is_counted_once_not_for_every_visitor_it_turns_away(
    site: AccountInfo,
    dni: Dni,
    session_factory: sessionmaker[Session],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full pool's peak is its size: counted (which reads every number of the pool) when it first
    turns a visitor away, not again for each batch it turns away after that; a batch that leases
    numbers added meanwhile, and turns one away, raises the peak to the new size at once."""
    from schema.models import NumberPool
    from tracking import leases

    def peak() -> int:
        with session_factory() as s:
            return s.scalars(select(NumberPool.peak_leases)).one()

    counted: list[bool] = []
    start_sessions = leases.start_sessions

    def spy(*args: Any, **kwargs: Any) -> Any:
        counted.append(kwargs["count_peak"])
        return start_sessions(*args, **kwargs)

    monkeypatch.setattr(leases, "start_sessions", spy)
    first = dni.write_new_sessions([new_session(dni, site, i) for i in range(len(POOL) + 2)])
    assert [a.number for a in first] == [*POOL, OVERFLOW, OVERFLOW]
    assert (counted, peak()) == ([True], len(POOL))
    turned_away = dni.write_new_sessions([new_session(dni, site, 10 + i) for i in range(3)])
    assert [a.number for a in turned_away] == [OVERFLOW] * 3
    assert (counted, peak()) == ([True, False], len(POOL))

    more = [f"+1404555{n:04d}" for n in range(180, 183)]
    with session_factory.begin() as s:
        add_numbers(s, settings, "p", "Shop", more, "PJSIP/1")
    answers = dni.write_new_sessions([new_session(dni, site, 20 + i) for i in range(4)])
    assert [a.number for a in answers] == [*more, OVERFLOW]
    assert (counted, peak()) == ([True, False, False], len(POOL) + len(more))
    with session_factory() as s:
        assert sum(overflow_counts(s).values()) == 2 + 3 + 1  # every visitor turned away is counted


async def test_new_sessions_arriving_together_are_one_statement_and_never_share_a_number(
    site: AccountInfo, dni: Dni, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        batch = NewSessions(dni, executor)
        await batch.run(new_session(dni, site, -1))  # the thread's connection is open
        sent = sent_statements(monkeypatch)
        answers = await asyncio.gather(*(batch.run(new_session(dni, site, i)) for i in range(VISITS)))
    assert len(sent) == 1, "the waiting sessions were written by one statement"
    assert (batch.batches, batch.jobs) == (2, VISITS + 1)
    leased = [a.number for a in answers if a.number != OVERFLOW]
    assert leased == POOL[1:], "the free numbers go in order of arrival, least recently used first"
    assert all(a.number == OVERFLOW and a.expires_at is None for a in answers[len(POOL) - 1 :])
    assert all(a.session and a.visitor for a in answers) and len({a.session for a in answers}) == VISITS
    with session_factory() as s:  # committed before the answers were given
        assert s.scalar(select(func.count()).select_from(VisitorSession)) == VISITS + 1
        assert s.scalar(select(func.count()).select_from(PoolLease)) == len(POOL)
        assert find_double_leases(s) == []
        assert sum(overflow_counts(s).values()) == VISITS + 1 - len(POOL)
        urls = dict(s.execute(select(VisitorSession.key, VisitorSession.landing_url)).all())
    assert [urls[a.session or ""] for a in answers] == [f"{SITE}/?n={i}" for i in range(VISITS)]


async def test_a_session_the_database_refuses_costs_the_others_of_its_batch_nothing(
    site: AccountInfo, dni: Dni, session_factory: sessionmaker[Session], engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION refuse_n3() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" IF NEW.landing_url = '{SITE}/?n=3' THEN RAISE EXCEPTION 'this session is refused'; END IF;"
                " RETURN NEW; END $$"
            )
        )
        conn.execute(
            text("CREATE TRIGGER refuse_n3 BEFORE INSERT ON visitor_sessions FOR EACH ROW EXECUTE FUNCTION refuse_n3()")
        )
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            batch = NewSessions(dni, executor)
            outcomes = await asyncio.gather(
                *(batch.run(new_session(dni, site, i)) for i in range(8)), return_exceptions=True
            )
        refused = outcomes[3]
        assert isinstance(refused, DBAPIError) and "this session is refused" in str(refused.orig)
        answers = [o for i, o in enumerate(outcomes) if i != 3]
        assert all(isinstance(a, Answer) for a in answers)
        # the batch's statement wrote nothing; then each ran alone, in order of arrival
        assert [a.number for a in answers if isinstance(a, Answer)] == [*POOL, OVERFLOW, OVERFLOW]
        with session_factory() as s:
            assert s.scalar(select(func.count()).select_from(VisitorSession)) == 7
            assert find_double_leases(s) == []
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_n3 ON visitor_sessions"))
            conn.execute(text("DROP FUNCTION refuse_n3()"))


async def test_a_database_away_fails_the_batch_as_unavailable(site: AccountInfo, settings: Settings) -> None:
    engine = make_engine("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1, pre_ping=False)
    dni = Dni(settings, engine, lambda: NOW)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            batch = NewSessions(dni, executor)
            planned = [
                NewSession(site, new_visit, None, None)
                for new_visit in (dni._new_visit(site, PageView("Shop", None, f"{SITE}/", ""), _visit(), None, NOW),)
            ]
            outcomes = await asyncio.gather(*(batch.run(p) for p in planned * 3), return_exceptions=True)
        assert all(isinstance(o, OperationalError) for o in outcomes), outcomes
    finally:
        dni.close()
        engine.dispose()


def _visit() -> Any:
    from tracking.source_rules import read_visit

    return read_visit(f"{SITE}/", "")


async def test_heartbeats_arriving_together_are_one_transaction_each_with_its_own_outcome(
    site: AccountInfo,
    pg_url: str,
    settings: Settings,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kept, shown the overflow number (no lease), unknown and ended, in one batch: each heartbeat
    gets its own answer, and the batch costs three statements whatever its size."""
    from web.dni import SessionEnded
    from web.session_batch import Heartbeats

    clock = [NOW]
    engine = make_engine(pg_url, pre_ping=False)
    dni = Dni(settings, engine, lambda: clock[0])
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            sessions = NewSessions(dni, executor)
            started = await asyncio.gather(*(sessions.run(new_session(dni, site, i)) for i in range(len(POOL) + 2)))
            leased, unleased = started[: len(POOL)], started[len(POOL) :]
            assert all(a.number in POOL for a in leased) and all(a.number == OVERFLOW for a in unleased)
            beats = Heartbeats(dni, executor)
            clock[0] = NOW + dt.timedelta(minutes=20)  # the second visitor's page beats: kept until minute 50
            kept = await beats.run((site, leased[1].session or ""))
            assert kept.number == leased[1].number and kept.expires_at == NOW + dt.timedelta(minutes=50)
            # the other leases end (30-minute hold); the first one's number goes to a new visitor
            clock[0] = NOW + dt.timedelta(minutes=31)
            taker = await sessions.run(new_session(dni, site, 99))
            assert taker.number == leased[0].number
            clock[0] = NOW + dt.timedelta(minutes=31, seconds=1)
            sent = sent_statements(monkeypatch)
            keys = [a.session or "" for a in [*leased, *unleased]] + ["no-such-session"]
            outcomes = await asyncio.gather(*(beats.run((site, key)) for key in keys), return_exceptions=True)
    finally:
        dni.close()
        engine.dispose()
    assert len(sent) == 3, sent  # the locked leases, the sessions without one, the writes
    assert isinstance(outcomes[0], SessionEnded), "its number is someone else's now"
    second = outcomes[1]
    assert isinstance(second, Answer) and second.number == leased[1].number
    assert second.expires_at == NOW + dt.timedelta(minutes=61, seconds=1), "kept a hold from now"
    assert all(isinstance(o, SessionEnded) for o in outcomes[2 : len(POOL)]), "their holds had ended"
    for answer in outcomes[len(POOL) : len(POOL) + 2]:
        assert isinstance(answer, Answer) and answer.number == OVERFLOW and answer.expires_at is None
    assert isinstance(outcomes[-1], SessionEnded)
    with session_factory() as s:
        seen = dict(s.execute(select(VisitorSession.key, VisitorSession.last_seen_at)).all())
        assert find_double_leases(s) == []
    assert seen[unleased[0].session] == NOW + dt.timedelta(minutes=31, seconds=1), "marked seen"
    assert seen[leased[0].session] == NOW, "an ended session is not"
    assert seen[leased[1].session] == NOW + dt.timedelta(minutes=31, seconds=1)


async def test_a_batch_of_two_pools_and_a_source_without_one_answers_each_from_its_own(
    site: AccountInfo, dni: Dni, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """One statement per pool, and one for the sessions of sources without a pool: each visitor
    is shown a number of its own source, in order of arrival within its pool."""
    from tracking.numbers import NumberFields, add_number

    other_pool = ["+14045550180", "+14045550181"]
    with session_factory.begin() as s:
        add_source(s, "Shop", "Email")
        add_number(s, settings, NumberFields("+14045550190", account="Shop", source="Email", forward_to="PJSIP/1"))
        add_rule(s, "Shop", "param", "utm_source=email", "Email", priority=10)
        add_source(s, "Shop", "Social")
        create_pool(s, settings, "q", "Shop", 30, source="Social", overflow="+14045550198")
        add_numbers(s, settings, "q", "Shop", other_pool, "PJSIP/1")
        add_rule(s, "Shop", "param", "utm_source=social", "Social", priority=10)
    info = AccountCache(session_factory).get(site_key(session_factory))
    assert info is not None
    urls = [f"{SITE}/?utm_source={kind}&n={i}" for i in range(3) for kind in ("ads", "email", "social")]
    planned = []
    for url in urls:
        new = dni.plan_start(info, PageView("Shop", None, url, ""))
        assert isinstance(new, NewSession)
        planned.append(new)
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        batch = NewSessions(dni, executor)
        answers = await asyncio.gather(*(batch.run(p) for p in planned))
    assert batch.batches == 1
    by_kind: dict[str, list[str | None]] = {"ads": [], "email": [], "social": []}
    for url, answer in zip(urls, answers, strict=True):
        by_kind[url.split("utm_source=")[1].split("&")[0]].append(answer.number)
    assert by_kind["ads"] == POOL[:3]
    assert by_kind["email"] == ["+14045550190"] * 3
    assert by_kind["social"] == [*other_pool, "+14045550198"]  # the third finds its pool full
    assert [a.source for a in answers[:3]] == ["Ads", "Email", "Social"]
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(VisitorSession)) == len(urls)
        assert s.scalar(select(func.count()).select_from(PoolLease)) == 5
        assert find_double_leases(s) == []


def site_key(session_factory: sessionmaker[Session]) -> str:
    from schema.models import Account

    with session_factory() as s:
        key = s.scalar(select(Account.public_key).where(Account.name == "Shop"))
    assert key is not None
    return key
