"""The FastAGI `route` end to end: a fake Asterisk (built from the recorded sessions) against the
real server and a real database, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from asterisk_agi.service import AgiService
from config import AgiSettings, DatabaseSettings, RecorderSettings, Settings
from schema.models import (
    Account,
    Call,
    CallerListEntry,
    NumberPool,
    PoolLease,
    Source,
    TrackingNumber,
    VisitorSession,
    utcnow,
)
from tests.fakes.fastagi_peer import FakeFastAGIPeer, PeerResult, environment_bytes

NOW = dt.datetime.now(dt.UTC)


@dataclass
class World:
    """Accounts, sources and numbers written straight through the models."""

    factory: sessionmaker[Session]

    def account(self, name: str = "Acme", tz: str = "America/New_York") -> int:
        with self.factory.begin() as s:
            acct = Account(name=name, timezone=tz, public_key=f"pk-{name}")
            s.add(acct)
            s.flush()
            return acct.id

    def source(self, account_id: int, name: str) -> int:
        with self.factory.begin() as s:
            src = Source(account_id=account_id, name=name)
            s.add(src)
            s.flush()
            return src.id

    def number(self, account_id: int, number: str, **values: Any) -> int:
        values.setdefault("forward_to", "PJSIP/100")
        values.setdefault("ring_timeout", 25)
        values.setdefault("record", True)
        with self.factory.begin() as s:
            tn = TrackingNumber(number=number, account_id=account_id, **values)
            s.add(tn)
            s.flush()
            return tn.id

    def pool(self, account_id: int, name: str, source_id: int | None) -> int:
        with self.factory.begin() as s:
            pool = NumberPool(account_id=account_id, name=name, source_id=source_id, hold_minutes=30)
            s.add(pool)
            s.flush()
            return pool.id

    def visit_with_lease(
        self, account_id: int, pool_id: int, number_id: int, source_id: int | None, start: dt.datetime, end: dt.datetime
    ) -> int:
        with self.factory.begin() as s:
            visit = VisitorSession(
                key=f"v{start.timestamp()}-{number_id}",
                account_id=account_id,
                source_id=source_id,
                landing_url="https://acme.example/plumbing?gclid=abc",
                referrer="https://www.google.com/",
                utm_source="google",
                utm_medium="cpc",
                utm_campaign="spring",
                gclid="abc",
                started_at=start,
                last_seen_at=start,
            )
            s.add(visit)
            s.flush()
            s.add(PoolLease(pool_id=pool_id, number_id=number_id, session_id=visit.id, leased_at=start, expires_at=end))
            return visit.id

    def block(self, number: str, account_id: int | None, kind: str = "blocked") -> None:
        with self.factory.begin() as s:
            s.add(CallerListEntry(account_id=account_id, number=number, kind=kind))

    def calls(self) -> list[Call]:
        with self.factory() as s:
            return list(s.scalars(select(Call).order_by(Call.id)))

    def update_number(self, number_id: int, **values: Any) -> None:
        with self.factory.begin() as s:
            tn = s.get(TrackingNumber, number_id)
            assert tn is not None
            for k, v in values.items():
                setattr(tn, k, v)


@pytest.fixture
def world(session_factory: sessionmaker[Session]) -> World:
    return World(session_factory)


@pytest.fixture
def agi_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(
        agi=AgiSettings(listen="127.0.0.1:0", fallback_dial="PJSIP/operator", fallback_timeout=40, read_timeout=2.0),
        recorder=RecorderSettings(spool_dir=tmp_path / "monitor"),
    )


@dataclass
class Running:
    service: AgiService
    host: str
    port: int

    def peer(self, **kwargs: Any) -> FakeFastAGIPeer:
        return FakeFastAGIPeer(self.host, self.port, **kwargs)

    async def call(self, **fields: Any) -> PeerResult:
        peer_kwargs = {k: fields.pop(k) for k in ("linkedid", "variables", "hangup_at") if k in fields}
        return await self.peer(**peer_kwargs).session(**fields)


StartServer = Callable[..., Any]


@pytest.fixture
async def start_server(agi_settings: Settings) -> AsyncIterator[StartServer]:
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(settings: Settings | None = None, **kwargs: Any) -> Running:
        service = AgiService(settings or agi_settings, stats_every=3600, **kwargs)
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        await asyncio.wait_for(service.started.wait(), 10)
        running.append((stop, task))
        assert service.address is not None
        return Running(service, service.address[0], service.address[1])

    yield start
    for stop, task in running:
        stop.set()
        await asyncio.wait_for(task, 30)


@pytest.fixture
async def server(start_server: StartServer) -> Running:
    return await start_server()


@pytest.fixture
def acme(world: World) -> dict[str, int]:
    account = world.account("Acme")
    google = world.source(account, "Google Ads")
    return {"account": account, "google": google}


# --- the happy paths --------------------------------------------------------------------


async def test_known_number_sets_the_contract_and_creates_the_call(
    server: Running, world: World, acme: dict[str, int], agi_settings: Settings
) -> None:
    number_id = world.number(
        acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100", whisper="calltrack/google"
    )
    result = await server.call(extension="8005550100", linkedid="1795915078.0", uniqueid="1795915078.1")

    assert result.closed_by_server
    got = result.side.set_vars
    [call] = world.calls()
    assert got["CALLTRACK_STATUS"] == "ok"
    assert got["CALLTRACK_CALL_ID"] == str(call.id)
    assert got["CALLTRACK_DIAL"] == "PJSIP/100"
    assert got["CALLTRACK_DIAL_TIMEOUT"] == "25"
    assert got["CALLTRACK_RECORD"] == "1"
    assert got["CALLTRACK_RECORDING_FILE"] == str(agi_settings.recorder.spool_dir / f"{call.id}.wav")
    assert got["CALLTRACK_SOURCE"] == "Google Ads"
    assert got["CALLTRACK_WHISPER"] == "calltrack/google"
    assert got["CALLTRACK_FIRST_TIME"] == "1"
    assert (call.system, call.linkedid, call.uniqueid) == ("asterisk", "1795915078.0", "1795915078.1")
    assert call.tracking_number == "+18005550100"
    assert call.tracking_number_id == number_id
    assert call.account_id == acme["account"]
    assert call.source_id == acme["google"]
    assert (call.caller_number, call.caller_name) == ("+14045551234", "Jane Doe")
    assert call.route_status == "ok"
    assert call.dial == "PJSIP/100"
    assert call.first_time is True
    assert call.recording_file == got["CALLTRACK_RECORDING_FILE"]
    # the session asked Asterisk for the linkedid, then set the variables; nothing else
    assert result.side.commands[0] == "GET VARIABLE CHANNEL(linkedid)"
    assert all(c.startswith("SET VARIABLE CALLTRACK_") for c in result.side.commands[1:])
