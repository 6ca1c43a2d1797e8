"""Leases under concurrency, on SQLite and PostgreSQL: many sessions at once against a small pool.

Each worker thread has its own database connection and no in-process lock
(``write_lock=None``), so only the database's locking (BEGIN IMMEDIATE on SQLite,
the number row's lock on PostgreSQL) keeps two sessions off one number.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.db import make_engine
from schema.models import NumberPool, PoolLease, VisitorSession
from tests.integration.dni_helpers import OVERFLOW, POOL, SITE, sent_statements, shop_key
from tracking import leases
from tracking.accounts import add_account, add_source
from tracking.dbapi import pg_sql
from tracking.leases import find_double_leases, pool_status
from tracking.pools import add_numbers, create_pool, overflow_counts
from tracking.sites import add_site
from tracking.source_rules import add_rule
from web.dni import AccountCache, Answer, Dni, PageView, SessionEnded

WORKERS = 12
SESSIONS = 60


class SharedClock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
        self.lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self.lock:
            return self.now


def run_wave(database_url: str, settings: Settings, key: str, clock: SharedClock, count: int) -> list[Answer]:
    """*count* first visits at once, each worker thread on its own engine (as separate processes would be)."""
    local = threading.local()
    engines: list[Engine] = []
    guard = threading.Lock()

    def dni() -> tuple[Dni, AccountCache]:
        if not hasattr(local, "dni"):
            engine = make_engine(database_url)
            with guard:
                engines.append(engine)
            factory = sessionmaker(bind=engine, expire_on_commit=False)
            local.dni = (Dni(settings, engine, clock, write_lock=None), AccountCache(factory, ttl=60))
        return local.dni  # type: ignore[no-any-return]

    barrier = threading.Barrier(WORKERS)

    def visit(i: int) -> Answer:
        d, cache = dni()
        info = cache.get(key)
        assert info is not None
        if i < WORKERS:
            barrier.wait()  # the first requests of every worker start together
        return d.start(info, PageView(key, None, f"{SITE}/?n={i}", ""))

    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            return list(pool.map(visit, range(count)))
    finally:
        for engine in engines:
            engine.dispose()


def counts(factory: sessionmaker[Session]) -> tuple[int, int, int]:
    with factory() as s:
        pool = s.scalars(select(NumberPool)).one()
        leases = s.scalar(select(func.count()).select_from(PoolLease)) or 0
        return leases, overflow_counts(s)[pool.id], pool.peak_leases


FOR_UPDATE = "FOR UPDATE SKIP LOCKED of the free number and FOR UPDATE of a heartbeat's number: two web workers never lease one number (tracking/leases.py)"


@pytest.mark.postgresql_protection(FOR_UPDATE)
def test_many_sessions_at_once_never_share_a_number(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    key = shop_key(session_factory, settings)
    clock = SharedClock()
    answers = run_wave(database_url, settings, key, clock, SESSIONS)

    leased = [a.number for a in answers if a.number != OVERFLOW]
    assert sorted(leased) == sorted(POOL), "each pool number leased exactly once"
    assert sum(a.number == OVERFLOW for a in answers) == SESSIONS - len(POOL)
    assert all(a.session for a in answers) and len({a.session for a in answers}) == SESSIONS
    assert counts(session_factory) == (len(POOL), SESSIONS - len(POOL), len(POOL))
    with session_factory() as s:
        assert find_double_leases(s) == []
        assert s.scalar(select(func.count()).select_from(VisitorSession)) == SESSIONS
        status = pool_status(s, "Shop", clock=clock)[0]
    assert (status["size"], status["live"], status["peak"]) == (5, 5, 5)
    assert status["overflow_count"] == SESSIONS - len(POOL)
    assert status["suggested_size"] == SESSIONS  # every visit wanted a number at the same moment
    assert status["advice"] == f"pool too small: add {SESSIONS - len(POOL)}"


def test_numbers_released_by_time_are_leased_again_under_concurrency(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    key = shop_key(session_factory, settings)
    clock = SharedClock()
    first = run_wave(database_url, settings, key, clock, 20)
    holders = [a for a in first if a.number != OVERFLOW]
    assert len(holders) == len(POOL)

    # 29 minutes on, two holders send heartbeats while a new wave arrives after the others' leases end
    clock.now += dt.timedelta(minutes=29)
    own = make_engine(database_url)
    factory = sessionmaker(bind=own, expire_on_commit=False)
    d = Dni(settings, own, clock, write_lock=None)
    info = AccountCache(factory).get(key)
    assert info is not None
    for keeper in holders[:2]:
        assert d.heartbeat(info, keeper.session or "").number == keeper.number
    clock.now += dt.timedelta(minutes=2)
    second = run_wave(database_url, settings, key, clock, 20)
    new_numbers = sorted(a.number or "" for a in second if a.number != OVERFLOW)
    assert new_numbers == sorted(h.number or "" for h in holders[2:])
    for ended in holders[2:]:
        try:
            d.heartbeat(info, ended.session or "")
        except SessionEnded:
            pass
        else:
            raise AssertionError("a heartbeat revived a lease whose number went to someone else")
    own.dispose()

    with session_factory() as s:
        assert find_double_leases(s) == []
    leases, overflows, peak = counts(session_factory)
    assert leases == len(POOL) + 3
    assert overflows == (20 - len(POOL)) + (20 - 3)
    assert peak == len(POOL)


@pytest.mark.postgresql_protection(FOR_UPDATE)
def test_a_heartbeat_and_a_new_visit_racing_for_one_number_never_share_it(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """The heartbeat reads its lease before it writes, so only the lock taken at its start
    (BEGIN IMMEDIATE on SQLite, FOR UPDATE of its number's row on PostgreSQL) keeps a new visit
    from leasing the number in between.

    The interleaving is forced, not hoped for: the heartbeat's clock is read after its reads,
    and there the test lets a new visit run on another connection, waiting until that visit
    has finished or has asked for the lock the heartbeat holds.
    """
    with session_factory.begin() as s:
        account = add_account(s, "Solo")
        add_source(s, "Solo", "Ads")
        create_pool(s, settings, "one", "Solo", 30, source="Ads", overflow=OVERFLOW)
        add_numbers(s, settings, "one", "Solo", POOL[:1], "PJSIP/1")
        add_site(s, "Solo", SITE)
        add_rule(s, "Solo", "default", "", "Ads")
        key = account.public_key
    start = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    info = AccountCache(session_factory).get(key)
    assert info is not None

    holder_engine, visitor_engine = make_engine(database_url), make_engine(database_url)
    visitor_locks = threading.Event()  # the visit asked for the lock (and waits for it, if the heartbeat has it)
    visitor_done = threading.Event()
    answers: dict[str, Answer | BaseException] = {}

    @event.listens_for(visitor_engine, "before_cursor_execute")
    def _asks_for_the_lock(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "BEGIN IMMEDIATE" in statement or "FOR UPDATE" in statement:
            visitor_locks.set()

    def visit() -> None:
        # two minutes later by the visitor's clock, the holder's lease has ended unless the heartbeat extended it
        visitor = Dni(settings, visitor_engine, lambda: start + dt.timedelta(minutes=31), write_lock=None)
        try:
            answers["visitor"] = visitor.start(info, PageView(key, None, f"{SITE}/?new=1", ""))
        except BaseException as exc:  # reported by the assertions below
            answers["visitor"] = exc
        finally:
            visitor_done.set()

    racer = threading.Thread(target=visit)
    holder_now = start

    def holder_clock() -> dt.datetime:
        if holder_now > start and racer.ident is None:
            racer.start()  # the heartbeat has read its lease; the new visit runs now
            deadline = time.monotonic() + 30
            while not (visitor_locks.wait(0.01) or visitor_done.is_set()):
                assert time.monotonic() < deadline, "the new visit neither finished nor waited for the lock"
        return holder_now

    try:
        holder = Dni(settings, holder_engine, holder_clock, write_lock=None)
        first = holder.start(info, PageView(key, None, f"{SITE}/?n=1", ""))
        assert first.number == POOL[0]
        holder_now = start + dt.timedelta(minutes=29)  # one minute before the lease ends
        try:
            kept = holder.heartbeat(info, first.session or "")
        finally:
            racer.join(30)
    finally:
        holder_engine.dispose()
        visitor_engine.dispose()
    assert visitor_done.is_set()
    newcomer = answers["visitor"]
    assert not isinstance(newcomer, BaseException), f"the new visit failed: {newcomer!r}"
    assert kept.number == POOL[0]
    assert newcomer.number == OVERFLOW, "the new visit got the number the heartbeat kept"
    with session_factory() as s:
        assert find_double_leases(s) == []


def one_number_site(session_factory: sessionmaker[Session], settings: Settings) -> str:
    with session_factory.begin() as s:
        account = add_account(s, "Solo")
        add_source(s, "Solo", "Ads")
        create_pool(s, settings, "one", "Solo", 30, source="Ads", overflow=OVERFLOW)
        add_numbers(s, settings, "one", "Solo", POOL[:1], "PJSIP/1")
        add_site(s, "Solo", SITE)
        add_rule(s, "Solo", "default", "", "Ads")
        return account.public_key


def test_a_heartbeat_from_a_clock_behind_never_extends_a_lease_whose_number_was_leased_since(
    engine: Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """Two web workers whose clocks disagree by two minutes: the one ahead sees the holder's lease
    ended and leases the number to a new visit; the holder's heartbeat, by the clock behind, still
    thinks its lease is live.  It must end, not extend, the holder's lease."""
    key = one_number_site(session_factory, settings)
    info = AccountCache(session_factory).get(key)
    assert info is not None
    start = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    behind = Dni(settings, engine, lambda: start + dt.timedelta(minutes=29), write_lock=None)
    ahead = Dni(settings, engine, lambda: start + dt.timedelta(minutes=31), write_lock=None)
    holder = Dni(settings, engine, lambda: start, write_lock=None).start(info, PageView(key, None, f"{SITE}/", ""))
    assert holder.number == POOL[0]
    newcomer = ahead.start(info, PageView(key, None, f"{SITE}/?new=1", ""))
    assert newcomer.number == POOL[0]  # the holder's lease ended at 12:30 by this clock
    with pytest.raises(SessionEnded):
        behind.heartbeat(info, holder.session or "")
    assert ahead.heartbeat(info, newcomer.session or "").number == POOL[0]
    with session_factory() as s:
        assert find_double_leases(s) == []


def test_a_request_on_a_dead_database_connection_runs_again_on_a_new_one(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """The DNI API's engine checks no connection on checkout (no round trip per request); when the
    server has dropped a pooled connection, the request runs once more and the visitor gets a number."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server to drop a connection")
    key = one_number_site(session_factory, settings)
    info = AccountCache(session_factory).get(key)
    assert info is not None
    dni_engine = make_engine(database_url, pre_ping=False)
    try:
        dni = Dni(settings, dni_engine, write_lock=None)
        first = dni.start(info, PageView(key, None, f"{SITE}/", ""))
        assert first.number == POOL[0]
        with session_factory() as s:  # the server ends every other connection to this database
            s.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
        assert dni.heartbeat(info, first.session or "").number == POOL[0]
        second = dni.start(info, PageView(key, None, f"{SITE}/?again=1", ""))
        assert second.number == OVERFLOW and second.session
    finally:
        dni_engine.dispose()
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(VisitorSession)) == 2


@pytest.mark.postgresql_protection(
    "a new visit on PostgreSQL is one statement in autocommit (tracking/leases.py start_session)"
)
def test_a_new_visit_on_postgresql_is_one_statement_also_when_the_pool_is_full(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new visitor costs the DNI API one round trip: the session, the lease (or the counted
    overflow) and the pool's peak in one statement, run as its own transaction (autocommit)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs a visit as one BEGIN IMMEDIATE transaction on the writer's connection")
    key = one_number_site(session_factory, settings)
    info = AccountCache(session_factory).get(key)
    assert info is not None
    dni_engine = make_engine(database_url, pre_ping=False)
    statements = sent_statements(monkeypatch)
    try:
        dni = Dni(settings, dni_engine, write_lock=None)
        first = dni.start(info, PageView(key, None, f"{SITE}/", ""))
        assert first.number == POOL[0] and len(statements) == 1
        with session_factory() as s:  # committed: another connection sees the lease at once
            assert s.scalar(select(func.count()).select_from(PoolLease)) == 1
        statements.clear()
        second = dni.start(info, PageView(key, None, f"{SITE}/?again=1", ""))
        assert second.number == OVERFLOW and second.session and len(statements) == 1
    finally:
        dni.close()
        dni_engine.dispose()
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(VisitorSession)) == 2
        assert counts(session_factory) == (1, 1, 1)


@pytest.mark.postgresql_protection(
    "a full pool's overflow is counted in pool_overflow_counts, not under the pool row's lock"
)
def test_visitors_of_a_full_pool_do_not_wait_for_the_pool_row(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """While another transaction holds the pool row's lock, a new visitor of the full pool still gets
    the overflow number, counted (PostgreSQL: in its connection's slot, not in the pool row)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time anyway")
    key = one_number_site(session_factory, settings)
    info = AccountCache(session_factory).get(key)
    assert info is not None
    dni_engine, holder_engine = make_engine(database_url, pre_ping=False), make_engine(database_url)
    answers: list[Answer | BaseException] = []
    try:
        dni = Dni(settings, dni_engine, write_lock=None)
        assert dni.start(info, PageView(key, None, f"{SITE}/", "")).number == POOL[0]  # the pool is full now

        def visit() -> None:
            try:
                answers.append(dni.start(info, PageView(key, None, f"{SITE}/?second=1", "")))
            except BaseException as exc:  # reported below
                answers.append(exc)

        with holder_engine.connect() as holder:
            # as a transaction writing the pool row would (an overflow counted there, a peak raised)
            holder.execute(text("UPDATE number_pools SET peak_leases = peak_leases"))
            racer = threading.Thread(target=visit)
            racer.start()
            waiting = 0
            deadline = time.monotonic() + 30
            while racer.is_alive() and time.monotonic() < deadline:
                waiting = holder.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
                if waiting:
                    break
                racer.join(0.01)
            holder.rollback()  # the lock is let go (a waiting visit then finishes, and the test fails)
        racer.join(30)
    finally:
        dni_engine.dispose()
        holder_engine.dispose()
    assert not waiting, "the full pool's visitor waited for the pool row's lock"
    assert len(answers) == 1 and not isinstance(answers[0], BaseException), answers
    assert answers[0].number == OVERFLOW
    assert counts(session_factory) == (1, 1, 1)


def test_a_full_pools_peak_counts_a_number_another_transaction_is_leasing(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """A visit back on a full pool (its own lease over) gets the overflow number while another
    transaction is leasing the pool's last number: the pool was full, so its peak is its size,
    though the lease in flight is not committed yet (and is rolled back here: no lease stays)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time: no lease is in flight while another visit looks")
    from schema.models import NumberPool
    from tracking.leases import lease_number

    one_number_site(session_factory, settings)
    with session_factory.begin() as s:
        pool = s.scalars(select(NumberPool)).one()
        pool_id, account_id, source_id = pool.id, pool.account_id, pool.source_id
        visit = VisitorSession(key="back-again", account_id=account_id, source_id=source_id)
        s.add(visit)
        s.flush()
        visit_id = visit.id
    engine = make_engine(database_url)
    try:
        with engine.connect() as leasing, engine.connect() as turned_away:
            # the pool's one number as a lease statement holds it midway: locked and taken, not committed
            taken = leasing.execute(
                text("UPDATE tracking_numbers SET last_leased_at = :until WHERE pool_id = :pool_id RETURNING number"),
                {"until": dt.datetime(2099, 1, 1), "pool_id": pool_id},
            ).scalar_one()
            assert taken == POOL[0]
            assert lease_number(turned_away, pool_id, visit_id).overflow  # passed over (SKIP LOCKED), not waited for
            turned_away.commit()
            leasing.rollback()
    finally:
        engine.dispose()
    assert counts(session_factory) == (0, 1, 1)  # no lease, one overflow, the peak the pool's size


@pytest.mark.postgresql_protection("a heartbeat on PostgreSQL: its lease locked by the session key, then one update")
def test_a_heartbeat_on_postgresql_is_two_statements_and_keeps_the_number(
    database_url: str, session_factory: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session is found by its key with its lease, the number's row locked, in one statement; the
    lease's end, the number's and the session's last visit are written in the next."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite runs heartbeats in the group commit's transactions")
    key = one_number_site(session_factory, settings)
    info = AccountCache(session_factory).get(key)
    assert info is not None
    start = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    now = [start]
    dni_engine = make_engine(database_url, pre_ping=False)
    statements = sent_statements(monkeypatch)
    try:
        dni = Dni(settings, dni_engine, lambda: now[0], write_lock=None)
        first = dni.start(info, PageView(key, None, f"{SITE}/", ""))
        now[0] = start + dt.timedelta(minutes=20)
        statements.clear()
        kept = dni.heartbeat(info, first.session or "")
        assert len(statements) == 2
        assert kept.number == POOL[0] and kept.expires_at == start + dt.timedelta(minutes=50)
        now[0] = start + dt.timedelta(minutes=49)  # still within the extended hold: the number is not free
        assert dni.start(info, PageView(key, None, f"{SITE}/?other=1", "")).number == OVERFLOW
        now[0] = start + dt.timedelta(minutes=51)
        with pytest.raises(SessionEnded):
            dni.heartbeat(info, first.session or "")
    finally:
        dni.close()
        dni_engine.dispose()
    with session_factory() as s:
        seen = s.scalars(select(VisitorSession.last_seen_at).order_by(VisitorSession.id)).first()
        assert seen == start + dt.timedelta(minutes=20)
        assert find_double_leases(s) == []


def test_a_large_pool_is_leased_least_recently_used_first_from_its_index(
    database_url: str, engine: Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    """A pool of 400 numbers, some never leased, some leased at different times, some live, some
    released: new visitors get the never-leased numbers first (in the pool's order), then the least
    recently used, never a live or a released one; and the database finds them through the index
    ix_tracking_numbers_pool_free (the pool in lease order), not by reading and sorting the pool."""
    now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    numbers = [f"+1404556{n:04d}" for n in range(400)]
    with session_factory.begin() as s:
        account = add_account(s, "Big")
        add_source(s, "Big", "Ads")
        pool = create_pool(s, settings, "big", "Big", 30, source="Ads", overflow=OVERFLOW)
        members = add_numbers(s, settings, "big", "Big", numbers, "PJSIP/1")
        s.flush()
        key, pool_id = account.public_key, pool.id
        for i, number in enumerate(m.number for m in members):
            if i % 4 == 1:  # ended, the later in the list the earlier
                number.last_leased_at = now - dt.timedelta(minutes=1000 - i)
            elif i % 4 == 2:  # live
                number.last_leased_at = now + dt.timedelta(minutes=5)
            elif i % 4 == 3:  # released long ago, or ended last
                number.last_leased_at = now - dt.timedelta(minutes=2000 if i % 8 == 3 else 1)
                number.status = "released" if i % 8 == 3 else "active"
        add_site(s, "Big", SITE)
        add_rule(s, "Big", "default", "", "Ads")
    never = [n for i, n in enumerate(numbers) if i % 4 == 0]
    ended = [n for i, n in enumerate(numbers) if i % 4 == 1] + [n for i, n in enumerate(numbers) if i % 8 == 7]
    info = AccountCache(session_factory).get(key)
    assert info is not None
    dni = Dni(settings, engine, lambda: now, write_lock=None)
    try:
        got = [dni.start(info, PageView(key, None, f"{SITE}/?v={i}", "")).number for i in range(len(never) + 60)]
    finally:
        dni.close()
    assert got == never + ended[:60]
    with session_factory() as s:
        assert pool_status(s, "Big", clock=lambda: now)[0]["live"] == len(got)

    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            driver = conn.connection.driver_connection
            at = {"pool_id": pool_id, "now": "2026-05-01 12:00:00.000000"}
            for statement in (leases._SQ_FREE, leases._LIVE_IN_POOL):
                plan = " / ".join(r[3] for r in driver.execute("EXPLAIN QUERY PLAN " + statement, at))
                assert "USING INDEX ix_tracking_numbers_pool_free" in plan and "TEMP B-TREE" not in plan, plan
        else:
            conn.execute(text("ANALYZE tracking_numbers"))
            driver = conn.connection.driver_connection
            params = {
                "rows": "[]",
                "pool_id": pool_id,
                "now": now.replace(tzinfo=None),
                "wanted": 10,
                "count_peak": True,
            }
            plan = "\n".join(r[0] for r in driver.execute("EXPLAIN " + pg_sql(leases._PG_START), params))
            free = plan.split("CTE free")[1].split("  CTE ")[0]  # up to the next CTE
            assert "ix_tracking_numbers_pool_free" in free and "Sort" not in free, plan
