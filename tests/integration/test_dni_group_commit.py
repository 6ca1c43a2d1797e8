"""SQLite group commit (web/group_commit.py): the DNI requests waiting for the writer share one transaction.

Run on the event loop (``calltrack web serve``) and on a worker thread (``calltrack serve``):
every request gets its answer after the commit, no number is leased twice, and a request
that fails costs the others a retry, never their answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from config import Settings
from schema.db import make_engine
from schema.models import PoolLease, VisitorSession
from tests.integration.dni_helpers import OVERFLOW, POOL, SITE, shop
from tracking.leases import find_double_leases
from tracking.pools import overflow_counts
from web.dni import AccountInfo, Answer, Dni, PageView, SessionEnded
from web.group_commit import GroupCommit

VISITS = 20
NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def sqlite_url(database_url: str) -> str:
    if not database_url.startswith("sqlite"):
        pytest.skip("group commit is SQLite's (PostgreSQL runs each new session as one statement of its own)")
    return database_url


@pytest.fixture
def site(sqlite_url: str, session_factory: sessionmaker[Session], settings: Settings) -> AccountInfo:
    return shop(session_factory, settings)


@pytest.fixture
def dni_engine(sqlite_url: str) -> Iterator[Engine]:
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


def statements(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def _seen(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        seen.append(statement)

    return seen


def visit(dni: Dni, info: AccountInfo, i: int) -> Any:
    def job(conn: Connection) -> Answer:
        return dni.start_in(conn, info, PageView("Shop", None, f"{SITE}/?n={i}", ""))

    return job


@pytest.mark.parametrize("on", ["loop", "thread"])
async def test_sessions_arriving_together_are_one_transaction_and_never_share_a_number(
    site: AccountInfo, dni_engine: Engine, session_factory: sessionmaker[Session], settings: Settings, on: str
) -> None:
    lock = threading.Lock()
    dni = Dni(settings, dni_engine, lambda: NOW, lock)
    executor = concurrent.futures.ThreadPoolExecutor(1) if on == "thread" else None
    group = GroupCommit(dni_engine, executor, lock)
    seen = statements(dni_engine)
    try:
        answers = await asyncio.gather(*(group.run(visit(dni, site, i)) for i in range(VISITS)))
    finally:
        if executor is not None:
            executor.shutdown()
    assert sum("BEGIN IMMEDIATE" in s for s in seen) == 1, "the waiting requests shared one write transaction"
    assert (group.batches, group.jobs) == (1, VISITS)
    assert sorted(a.number for a in answers if a.number != OVERFLOW) == sorted(POOL)  # in order of arrival
    assert [a.number for a in answers[: len(POOL)]] == POOL
    assert all(a.number == OVERFLOW for a in answers[len(POOL) :])
    with session_factory() as s:  # committed before the answers were given
        assert s.scalar(select(func.count()).select_from(VisitorSession)) == VISITS
        assert s.scalar(select(func.count()).select_from(PoolLease)) == len(POOL)
        assert find_double_leases(s) == []
        assert list(overflow_counts(s).values()) == [VISITS - len(POOL)]


async def test_a_request_that_fails_in_a_batch_costs_the_others_nothing(
    site: AccountInfo, dni_engine: Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    lock = threading.Lock()
    dni = Dni(settings, dni_engine, lambda: NOW, lock)
    group = GroupCommit(dni_engine, None, lock)
    seen = statements(dni_engine)
    # the database itself refuses request 3's session (its statements go to SQLite's driver directly)
    with dni_engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER break_one BEFORE INSERT ON visitor_sessions"
            f" WHEN NEW.landing_url = '{SITE}/?n=3' BEGIN SELECT RAISE(ABORT, 'this request''s insert fails'); END"
        )
    seen.clear()

    outcomes = await asyncio.gather(*(group.run(visit(dni, site, i)) for i in range(8)), return_exceptions=True)
    # SQLite's error reaches the caller as SQLAlchemy's, as every other database error does
    assert isinstance(outcomes[3], IntegrityError) and "this request's insert fails" in str(outcomes[3].orig)
    answers = [o for i, o in enumerate(outcomes) if i != 3]
    assert all(isinstance(a, Answer) for a in answers)
    # the batch was rolled back, then each request ran alone: the numbers go in order of arrival
    assert [a.number for a in answers if isinstance(a, Answer)] == [*POOL, OVERFLOW, OVERFLOW]
    assert sum("BEGIN IMMEDIATE" in s for s in seen) == 1 + 8
    with session_factory() as s:
        assert s.scalar(select(func.count()).select_from(VisitorSession)) == 7
        assert find_double_leases(s) == []


async def test_an_ended_session_in_a_batch_is_its_answer_alone(
    site: AccountInfo, dni_engine: Engine, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    lock = threading.Lock()
    dni = Dni(settings, dni_engine, lambda: NOW, lock)
    group = GroupCommit(dni_engine, None, lock)
    seen = statements(dni_engine)
    first = await group.run(visit(dni, site, 0))
    seen.clear()
    outcomes = await asyncio.gather(
        group.run(lambda conn: dni.heartbeat_in(conn, site, first.session or "")),
        group.run(lambda conn: dni.heartbeat_in(conn, site, "no-such-session")),
        group.run(visit(dni, site, 1)),
        return_exceptions=True,
    )
    kept, unknown, second = outcomes
    assert isinstance(kept, Answer) and kept.number == POOL[0]
    assert isinstance(unknown, SessionEnded)
    assert isinstance(second, Answer) and second.number == POOL[1]
    assert sum("BEGIN IMMEDIATE" in s for s in seen) == 1


async def test_on_the_event_loop_the_log_is_copied_back_by_the_checkpoint_thread(
    site: AccountInfo, sqlite_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`calltrack web serve` runs SQLite on its event loop, where a checkpoint (20-40 ms with fsync)
    would stall every request: the batches leave them to a thread that runs one every second."""
    import sqlite3

    import httpx

    from schema.db import sqlite_path
    from web import app as web_app

    monkeypatch.setattr(web_app, "CHECKPOINT_EVERY", 0.05)
    engine = make_engine(sqlite_url)
    app = web_app.create_app(settings, engine, clock=lambda: NOW, sqlite_inline=True)
    path = sqlite_path(sqlite_url)
    assert path is not None

    def in_the_file() -> int:
        # immutable: the database file alone, without the write-ahead log
        with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as conn:
            return int(conn.execute("SELECT count(*) FROM visitor_sessions").fetchone()[0])

    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://dni.test") as client:
                for i in range(30):
                    body = {"account": site_key(site, engine), "url": f"{SITE}/?n={i}"}
                    response = await client.post("/dni/v1/session", json=body, headers={"Origin": SITE})
                    assert response.status_code == 200, response.text
            deadline = asyncio.get_running_loop().time() + 10
            while in_the_file() < 30:
                assert asyncio.get_running_loop().time() < deadline, "no checkpoint copied the log back"
                await asyncio.sleep(0.05)
    finally:
        engine.dispose()


def site_key(info: AccountInfo, engine: Engine) -> str:
    from schema.models import Account

    with Session(engine) as s:
        key = s.scalar(select(Account.public_key).where(Account.id == info.id))
    assert key is not None
    return key
