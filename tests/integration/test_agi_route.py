"""The FastAGI `route` end to end: a fake Asterisk (built from the recorded sessions) against the
real server and a real database, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from asterisk_agi.handlers.route import RouteHandler
from asterisk_agi.service import AgiService
from config import AgiSettings, DatabaseSettings, RecorderSettings, Settings, TrackingSettings
from schema.models import (
    Account,
    Call,
    CallerListEntry,
    NumberPool,
    PoolLease,
    Source,
    TrackingNumber,
    VisitorSession,
)
from tests.fakes.fastagi_peer import FakeFastAGIPeer, PeerResult, environment_bytes
from tracking.routing import CallSpool, RouteStore, spool_folder

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


@pytest.fixture(name="world")
def world_fixture(session_factory: sessionmaker[Session]) -> World:
    return World(session_factory)


@pytest.fixture(name="agi_settings")
def agi_settings_fixture(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(
        agi=AgiSettings(
            listen="127.0.0.1:0",
            fallback_dial="PJSIP/operator",
            fallback_timeout=40,
            read_timeout=5.0,
            db_deadline_ms=5000,  # generous: these tests are not about the deadline (the slow-database ones are)
        ),
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


@pytest.fixture(name="start_server")
async def start_server_fixture(agi_settings: Settings) -> AsyncIterator[StartServer]:
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


@pytest.fixture(name="server")
async def server_fixture(start_server: StartServer) -> Running:
    return await start_server()


@pytest.fixture(name="acme")
def acme_fixture(world: World) -> dict[str, int]:
    account = world.account("Acme")
    google = world.source(account, "Google Ads")
    return {"account": account, "google": google}


# --- the happy paths --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Smith) Jr: CEO", "Dr. (Jane) Doe: 100% :)"])
async def test_a_caller_name_with_a_colon_is_stored_whole(
    server: Running, world: World, acme: dict[str, int], name: str
) -> None:
    """${BASE64_ENCODE(${CALLERID(name)})} cuts "Smith) Jr: CEO" to "Smith" (a colon after an unbalanced
    ")"): the sample dialplan leaves such a name to the route, which reads it saved, in one command."""
    world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100")
    result = await server.peer().dialplan(exten="8005550100", calleridname=name)

    assert result.side.set_vars["CALLTRACK_STATUS"] == "ok"
    [call] = world.calls()
    assert call.caller_name == name
    assert len([c for c in result.side.commands if c.startswith("GET")]) == 1


async def test_known_number_sets_the_contract_and_creates_the_call(
    server: Running, world: World, acme: dict[str, int], agi_settings: Settings
) -> None:
    number_id = world.number(
        acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100", whisper="calltrack/google"
    )
    result = await server.peer().dialplan(exten="8005550100", linkedid="1795915078.0", uniqueid="1795915078.1")

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
    # the sample dialplan's address carried everything: the variables are set, nothing is asked
    assert len(result.side.commands) == 10
    assert all(c.startswith("SET VARIABLE CALLTRACK_") for c in result.side.commands)


async def test_a_dialplan_passing_arguments_costs_one_round_trip(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    """AGI(agi://.../route,${EXTEN},${CHANNEL(linkedid)}) (the older sample): one synchronisation reads the rest."""
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    result = await server.call(linkedid="1795915078.0", args=("8005550100", "1795915078.0"))
    assert result.status == "ok"
    assert result.side.commands[0].startswith("GET FULL VARIABLE") and len(result.side.commands) == 11
    [call] = world.calls()
    assert (call.linkedid, call.uniqueid, call.caller_name) == ("1795915078.0", "1795915078.1", "Jane Doe")


async def test_several_destinations_ring_at_once(server: Running, world: World, acme: dict[str, int]) -> None:
    world.number(
        acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100&PJSIP/101&Local/200@agents"
    )
    result = await server.call()
    assert result.side.set_vars["CALLTRACK_DIAL"] == "PJSIP/100&PJSIP/101&Local/200@agents"


async def test_dialled_number_from_argument_extension_or_dnid(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/1")
    world.number(acme["account"], "+18005550200", source_id=acme["google"], forward_to="PJSIP/2")
    by_arg = await server.call(linkedid="a", extension="s", args=("+1 800 555 0200",))
    by_exten = await server.call(linkedid="b", extension="8005550100")
    by_dnid = await server.call(linkedid="c", extension="s", dnid="18005550200")
    assert [r.side.set_vars["CALLTRACK_DIAL"] for r in (by_arg, by_exten, by_dnid)] == ["PJSIP/2", "PJSIP/1", "PJSIP/2"]


async def test_pool_number_with_a_live_lease_gets_the_visit(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    website = world.source(acme["account"], "Website")
    facebook = world.source(acme["account"], "Facebook")
    pool = world.pool(acme["account"], "site", website)
    number_id = world.number(acme["account"], "+18005550300", pool_id=pool, forward_to="PJSIP/300")
    now = dt.datetime.now(dt.UTC)
    # an older lease that ended long ago, and the live one
    world.visit_with_lease(
        acme["account"], pool, number_id, acme["google"], now - dt.timedelta(hours=5), now - dt.timedelta(hours=4)
    )
    visit_id = world.visit_with_lease(
        acme["account"], pool, number_id, facebook, now - dt.timedelta(minutes=3), now + dt.timedelta(minutes=27)
    )

    result = await server.call(extension="8005550300")
    assert result.side.set_vars["CALLTRACK_STATUS"] == "ok"
    assert result.side.set_vars["CALLTRACK_SOURCE"] == "Facebook"
    [call] = world.calls()
    assert (call.visitor_session_id, call.source_id) == (visit_id, facebook)
    with world.factory() as s:
        visit = s.get(VisitorSession, call.visitor_session_id)
        assert visit is not None
        assert (visit.landing_url, visit.utm_campaign, visit.gclid) == (
            "https://acme.example/plumbing?gclid=abc",
            "spring",
            "abc",
        )


async def test_pool_number_lease_within_and_beyond_the_grace_window(
    start_server: StartServer, world: World, acme: dict[str, int], agi_settings: Settings
) -> None:
    website = world.source(acme["account"], "Website")
    pool = world.pool(acme["account"], "site", website)
    recent = world.number(acme["account"], "+18005550300", pool_id=pool)
    stale = world.number(acme["account"], "+18005550400", pool_id=pool)
    now = dt.datetime.now(dt.UTC)
    recent_visit = world.visit_with_lease(
        acme["account"], pool, recent, acme["google"], now - dt.timedelta(minutes=40), now - dt.timedelta(minutes=2)
    )
    world.visit_with_lease(
        acme["account"], pool, stale, acme["google"], now - dt.timedelta(hours=2), now - dt.timedelta(minutes=20)
    )
    running = await start_server(agi_settings.replace(tracking=TrackingSettings(attribution_grace_seconds=300)))

    within = await running.call(extension="8005550300", linkedid="w")
    beyond = await running.call(extension="8005550400", linkedid="b")
    assert within.side.set_vars["CALLTRACK_SOURCE"] == "Google Ads"
    assert beyond.side.set_vars["CALLTRACK_SOURCE"] == "Website"  # no live lease: the pool's source
    calls = {c.linkedid: c for c in world.calls()}
    assert calls["w"].visitor_session_id == recent_visit
    assert calls["b"].visitor_session_id is None
    assert calls["b"].source_id == website


async def test_routing_attribution_agrees_with_tracking_attribution(
    server: Running, world: World, acme: dict[str, int], agi_settings: Settings
) -> None:
    """The route's plain-SQL lease choice is tracking.attribution.attribute's, case by case."""
    from tracking.attribution import attribute

    website = world.source(acme["account"], "Website")
    pool = world.pool(acme["account"], "site", website)
    now = dt.datetime.now(dt.UTC)
    cases = {
        "+18005550301": [(-60, -30)],  # ended 30 min ago: beyond grace
        "+18005550302": [(-60, -2), (-1, 20)],  # overlapping: the newest wins
        "+18005550303": [(-10, 20)],
        "+18005550304": [(5, 60)],  # starts after the call
        "+18005550305": [],
    }
    for n, (e164, leases) in enumerate(cases.items()):
        number_id = world.number(acme["account"], e164, pool_id=pool)
        for a, b in leases:
            src = acme["google"] if n % 2 else None
            world.visit_with_lease(
                acme["account"], pool, number_id, src, now + dt.timedelta(minutes=a), now + dt.timedelta(minutes=b)
            )
    for e164 in cases:
        await server.call(extension=e164[2:], linkedid=e164)
    grace = dt.timedelta(seconds=agi_settings.tracking.attribution_grace_seconds)
    with world.factory() as s:
        for call in world.calls():
            tn = s.scalar(select(TrackingNumber).where(TrackingNumber.number == call.linkedid))
            assert tn is not None and call.started_at is not None
            expected = attribute(s, tn, call.started_at, grace)
            assert (call.source_id, call.visitor_session_id) == (
                expected.source_id,
                expected.session.id if expected.session else None,
            ), call.linkedid


async def test_unknown_number_goes_to_the_fallback_destination(
    server: Running, world: World, acme: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="asterisk_agi"):
        result = await server.call(extension="8005559999", linkedid="L-unknown")
    [line] = [r.getMessage() for r in caplog.records if "L-unknown" in r.getMessage()]
    assert line == "call asterisk/L-unknown to 8005559999: unknown-number ('8005559999' is not a tracking number)"
    got = result.side.set_vars
    assert got["CALLTRACK_STATUS"] == "unknown-number"
    assert (got["CALLTRACK_DIAL"], got["CALLTRACK_DIAL_TIMEOUT"], got["CALLTRACK_RECORD"]) == (
        "PJSIP/operator",
        "40",
        "0",
    )
    [call] = world.calls()
    assert got["CALLTRACK_CALL_ID"] == str(call.id)
    assert (call.route_status, call.tracking_number, call.account_id) == ("unknown-number", "+18005559999", None)


async def test_not_a_number_is_unknown_too(server: Running, world: World) -> None:
    result = await server.call(extension="s", dnid="unknown")
    assert result.side.set_vars["CALLTRACK_STATUS"] == "unknown-number"
    assert world.calls()[0].tracking_number == "s"


async def test_released_number_stops_routing(server: Running, world: World, acme: dict[str, int]) -> None:
    number_id = world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100")
    first = await server.call(linkedid="before")
    world.update_number(number_id, status="released", released_at=dt.datetime.now(dt.UTC))
    second = await server.call(linkedid="after")
    assert first.status == "ok"
    assert second.status == "unknown-number"
    assert second.side.set_vars["CALLTRACK_DIAL"] == "PJSIP/operator"
    after = {c.linkedid: c for c in world.calls()}["after"]
    assert (after.route_status, after.tracking_number_id) == ("unknown-number", number_id)


@pytest.mark.parametrize("scope", ["account", "everywhere"])
async def test_blocked_caller(server: Running, world: World, acme: dict[str, int], scope: str) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    world.block("+14045551234", acme["account"] if scope == "account" else None)
    blocked = await server.call(callerid="+14045551234", linkedid="x")
    other = await server.call(callerid="+14045550000", linkedid="y")
    assert blocked.status == "blocked"
    assert (blocked.side.set_vars["CALLTRACK_DIAL"], blocked.side.set_vars["CALLTRACK_RECORD"]) == ("", "0")
    assert other.status == "ok"
    assert {c.linkedid: c.route_status for c in world.calls()} == {"x": "blocked", "y": "ok"}


async def test_blocked_in_another_account_is_not_blocked_here(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    other = world.account("Other Co")
    world.block("+14045551234", other)
    assert (await server.call()).status == "ok"


async def test_blocked_caller_written_as_national_number(server: Running, world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    world.block("+14045551234", acme["account"])
    assert (await server.call(callerid="4045551234")).status == "blocked"


async def test_do_not_track_caller_is_routed_but_not_stored(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])  # a number that records
    world.block("+14045551234", None, kind="do-not-track")
    result = await server.call()
    assert result.status == "ok"
    [call] = world.calls()
    assert (call.caller_number, call.caller_name, call.first_time) == (None, None, None)
    # nor recorded (issue 9, item 12)
    assert (result.side.set_vars["CALLTRACK_RECORD"], result.side.set_vars["CALLTRACK_RECORDING_FILE"]) == ("0", "")
    assert call.recording_file is None


async def test_do_not_track_caller_routed_by_fallback_is_not_recorded_either(
    server: Running, world: World, acme: dict[str, int], database_url: str, tmp_path: Path
) -> None:
    """The do-not-track list is cached with the numbers: a fallback still honours it."""
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    world.block("+14045551234", acme["account"], kind="do-not-track")
    server.service.reload()  # the caches, loaded again with the list
    assert await wait_for(lambda: bool(server.service.call_router._not_tracked))
    await point_stores_at(server.service, unreachable(database_url, tmp_path))
    tracked = await server.call(linkedid="t", callerid="+14045559999")
    untracked = await server.call(linkedid="u")
    assert [r.status for r in (tracked, untracked)] == ["fallback", "fallback"]
    assert tracked.side.set_vars["CALLTRACK_RECORD"] == "1"
    assert (untracked.side.set_vars["CALLTRACK_RECORD"], untracked.side.set_vars["CALLTRACK_RECORDING_FILE"]) == (
        "0",
        "",
    )
    assert untracked.side.set_vars["CALLTRACK_DIAL"] == "PJSIP/100"  # still the number's own destination


async def test_after_hours_destination_in_the_accounts_timezone(server: Running, world: World) -> None:
    from zoneinfo import ZoneInfo

    # An account whose business hours, read in its own timezone, are open for the hours around "now"
    # (an hour before to two after) and closed otherwise: a test that runs across an hour's end (or
    # a clock near hh:59) still sees each number as meant; a UTC reading would be 9 hours off.
    tz = "Asia/Tokyo"
    account = world.account("Tokyo Plumbing", tz=tz)
    source = world.source(account, "Flyer")
    hour = dt.datetime.now(ZoneInfo(tz)).hour

    def hours(wanted: set[int]) -> dict[str, list[list[str]]]:
        spans = [[f"{h:02d}:00", f"{h + 1:02d}:00"] for h in sorted(wanted)]
        return {d: spans for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}

    near = {(hour + k) % 24 for k in (-1, 0, 1, 2)}
    open_now = hours(near)
    closed_now = hours({h for h in range(24) if h not in near and (h - hour) % 24 not in (3, 22)})
    world.number(
        account, "+18005550100", source_id=source, schedule=closed_now, after_hours_forward_to="PJSIP/voicemail"
    )
    world.number(account, "+18005550200", source_id=source, schedule=open_now, after_hours_forward_to="PJSIP/voicemail")
    closed = await server.call(extension="8005550100", linkedid="c")
    opened = await server.call(extension="8005550200", linkedid="o")
    assert (closed.side.set_vars["CALLTRACK_DIAL"], closed.side.set_vars["CALLTRACK_AFTER_HOURS"]) == (
        "PJSIP/voicemail",
        "1",
    )
    assert (opened.side.set_vars["CALLTRACK_DIAL"], opened.side.set_vars["CALLTRACK_AFTER_HOURS"]) == ("PJSIP/100", "0")


async def test_first_time_caller_flag(server: Running, world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    first = await server.call(linkedid="1")
    again = await server.call(linkedid="2")
    stranger = await server.call(linkedid="3", callerid="+14045550000")
    withheld = await server.call(linkedid="4", callerid="anonymous")
    assert [r.side.set_vars["CALLTRACK_FIRST_TIME"] for r in (first, again, stranger, withheld)] == ["1", "0", "1", ""]
    assert [c.first_time for c in world.calls()] == [True, False, True, None]


@pytest.mark.postgresql_protection(
    "the route's one-statement call upsert on PostgreSQL (ON CONFLICT ... COALESCE): what was written first is kept, "
    "two AGI runs for one linkedid are one call (tracking/routing.py PG_UPSERT_SQL)"
)
async def test_two_agi_runs_for_one_linkedid_make_one_call(server: Running, world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    first = await server.call(linkedid="1795915078.0", uniqueid="1795915078.1")
    second = await server.call(linkedid="1795915078.0", uniqueid="1795915078.3")
    assert first.side.set_vars["CALLTRACK_CALL_ID"] == second.side.set_vars["CALLTRACK_CALL_ID"]
    [call] = world.calls()
    assert call.uniqueid == "1795915078.1"  # the first run's decision stays
    assert call.first_time is True
    assert second.side.set_vars["CALLTRACK_FIRST_TIME"] == "1"  # the call itself is not "a previous call"


@pytest.mark.postgresql_protection(
    "the route on PostgreSQL sends its statements from the event loop, and a connection found dead is replaced "
    "and the statement sent again (tracking/route_async.py)"
)
async def test_postgresql_routes_from_the_event_loop_also_after_its_connections_were_cut(
    server: Running, world: World, acme: dict[str, int], database_url: str
) -> None:
    """Every database thread busy (a long replay, say): calls on PostgreSQL still route, the database
    work going from the event loop. Then PostgreSQL ends the route's idle connections (a restart,
    a network cut): the next call is routed on new ones, not by fallback."""
    import threading

    import psycopg

    from asterisk_agi.service import db_threads

    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite routes on the event loop's own connection or on the database thread")
    world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100")
    service = server.service
    assert service.on_loop is not None
    gate = threading.Event()
    busy = [service.executor.submit(gate.wait, 30) for _ in range(db_threads(service.settings))]
    try:
        first = await server.call(linkedid="on-loop")
        assert first.side.set_vars["CALLTRACK_STATUS"] == "ok"
        pids = [conn.info.backend_pid for conn in service.on_loop._idle]
        assert pids
        with psycopg.connect("postgresql" + database_url[database_url.index(":") :], autocommit=True) as admin:
            for pid in pids:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        again = await server.call(linkedid="after-cut")
        assert again.side.set_vars["CALLTRACK_STATUS"] == "ok"
        assert service.on_loop.reconnects == 1
    finally:
        gate.set()
        for job in busy:
            job.result(10)
    assert sorted((c.linkedid, c.route_status) for c in world.calls()) == [("after-cut", "ok"), ("on-loop", "ok")]


async def test_ami_listener_row_first_then_route(server: Running, world: World, acme: dict[str, int]) -> None:
    """The AMI listener may create the call before the route: the route fills it, without a second row."""
    from tracking.calls import upsert_call

    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    with world.factory.begin() as s:
        ami_id = upsert_call(s, "asterisk", "L1", {"caller_number": "+14045551234", "hangup_cause": 16})
    result = await server.call(linkedid="L1")
    assert result.side.set_vars["CALLTRACK_CALL_ID"] == str(ami_id)
    [call] = world.calls()
    assert (call.hangup_cause, call.route_status, call.source_id) == (16, "ok", acme["google"])
    assert call.recording_file == result.side.set_vars["CALLTRACK_RECORDING_FILE"] != ""
    # and the listener's later update keeps the route's columns
    with world.factory.begin() as s:
        upsert_call(s, "asterisk", "L1", {"disposition": "answered"}, keep_existing={"caller_number"})
    [call] = world.calls()
    assert (call.disposition, call.route_status) == ("answered", "ok")


async def test_caller_names_with_quotes_backslashes_and_utf8(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    names = ['Jane "JD" Doe', "C:\\Users\\x", "Zoë Ñúñez 北京", 'a\\"b', "x" * 300]
    for n, name in enumerate(names):
        result = await server.call(calleridname=name, linkedid=f"n{n}")
        assert result.status == "ok"
    stored = [c.caller_name for c in world.calls()]
    assert stored == names[:4] + ["x" * 200]  # clipped to the column


async def test_source_names_cannot_inject_commands(server: Running, world: World, acme: dict[str, int]) -> None:
    # written straight to the database, past the CLI's checks
    odd = world.source(acme["account"], 'Ads "Q4"\nSET VARIABLE CALLTRACK_DIAL "PJSIP/evil\\')
    world.number(acme["account"], "+18005550100", source_id=odd, forward_to="PJSIP/100")
    result = await server.call()
    got = result.side.set_vars
    assert got["CALLTRACK_DIAL"] == "PJSIP/100"
    assert got["CALLTRACK_SOURCE"] == 'Ads "Q4" SET VARIABLE CALLTRACK_DIAL "PJSIP/evil\\'
    assert len(result.side.commands) == 11  # the synchronisation + 10 SET VARIABLE, nothing injected


async def test_caller_hangs_up_while_the_variables_are_set(server: Running, world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    result = await server.call(hangup_at=2)  # HANGUP before the reply to the second SET VARIABLE
    assert result.closed_by_server
    # SET VARIABLE works on a dead channel, and a HANGUP line may be caller text: every variable is set
    assert len(result.side.commands) == 11
    [call] = world.calls()  # the call still counts (an abandoned call for the reports)
    assert call.route_status == "ok"
    assert server.service.stats.counts["hangups"] == 1


async def test_caller_hangs_up_before_the_linkedid_is_read(server: Running, world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    result = await server.call(hangup_at=0)
    assert result.closed_by_server
    assert result.side.commands[0].startswith("GET FULL VARIABLE")
    assert server.service.stats.counts["hangups"] == 1
    assert server.service.stats.counts["out_of_step"] == 0  # Asterisk's HANGUP is not caller text


async def test_linkedid_not_set_falls_back_to_uniqueid(server: Running, world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    result = await server.call(linkedid=None, uniqueid="1795915093.5")
    assert result.status == "ok"
    assert world.calls()[0].linkedid == "1795915093.5"


async def test_peer_closes_mid_environment_writes_nothing(server: Running, world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    env = environment_bytes()
    await server.peer().raw(env[:200], then_wait=0)
    result = await server.call()  # the next caller is served
    assert result.status == "ok"
    assert len(world.calls()) == 1


async def test_sighup_reload_takes_new_settings(server: Running, world: World, agi_settings: Settings) -> None:
    new = agi_settings.replace(agi=dataclasses.replace(agi_settings.agi, fallback_dial="PJSIP/night"))
    server.service.reload_settings = lambda: new
    server.service.reload()
    result = await server.call(extension="8005559999")
    assert result.side.set_vars["CALLTRACK_DIAL"] == "PJSIP/night"


# --- the database away or slow: fail open -------------------------------------------------------


async def point_stores_at(service: AgiService, url: str) -> None:
    """Every connection of the route's stores closed, and the new ones opened to *url*."""
    for store in [s for s in (service.store, service.inline) if s is not None]:
        store.url = url
        store.close()
    if service.on_loop is not None:
        service.on_loop.url = url
        await service.on_loop.reset()


def unreachable(database_url: str, tmp_path: Path) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'gone' / 'calltrack.sqlite3'}"
    return "postgresql://postgres@127.0.0.1:1/test"


async def wait_for(predicate: Callable[[], bool], seconds: float = 15.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


async def test_database_unavailable_routes_by_fallback_and_spools_the_call(
    start_server: StartServer,
    world: World,
    agi_settings: Settings,
    database_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    away = agi_settings.replace(database=DatabaseSettings(url=unreachable(database_url, tmp_path), connect_timeout=1))
    running = await start_server(away)
    before = fallback_metrics()
    with caplog.at_level(logging.WARNING):
        result = await running.call(linkedid="L-away")
    got = result.side.set_vars
    assert got["CALLTRACK_STATUS"] == "fallback"
    assert grown(before, fallback_metrics()) == (1, 1, 0)  # /metrics: a fallback for an error
    assert (got["CALLTRACK_DIAL"], got["CALLTRACK_DIAL_TIMEOUT"]) == ("PJSIP/operator", "40")
    assert (got["CALLTRACK_CALL_ID"], got["CALLTRACK_RECORD"]) == ("", "0")
    # the administrator's log names the call, the number dialled, where it went and why
    [warning] = [r for r in caplog.records if "routed by fallback" in r.getMessage()]
    assert warning.levelno == logging.WARNING
    assert warning.getMessage().startswith(f"call {agi_settings.general.system_name}/L-away to 8005550100 ")
    assert "routed by fallback to 'PJSIP/operator': database error" in warning.getMessage()
    assert running.service.stats.statuses["fallback"] == 1

    # the call row waits in the spool, and reaches the database once it is back
    spool = CallSpool(spool_folder(away))
    assert spool.pending() == 1
    store = RouteStore(database_url)
    try:
        assert spool.replay(store) == 1
    finally:
        store.close()
    [call] = world.calls()
    assert (call.linkedid, call.route_status, call.dial, call.caller_number) == (
        "L-away",
        "fallback",
        "PJSIP/operator",
        "+14045551234",
    )
    assert spool.pending() == 0


async def test_database_lost_after_start_routes_known_numbers_to_their_destination(
    server: Running, world: World, acme: dict[str, int], database_url: str, tmp_path: Path
) -> None:
    world.number(
        acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100&PJSIP/101", ring_timeout=21
    )
    assert (await server.call(linkedid="ok")).status == "ok"  # the number is now cached
    await point_stores_at(server.service, unreachable(database_url, tmp_path))
    for n in range(2):
        result = await server.call(linkedid=f"away{n}")
        assert result.status == "fallback"
        assert (result.side.set_vars["CALLTRACK_DIAL"], result.side.set_vars["CALLTRACK_DIAL_TIMEOUT"]) == (
            "PJSIP/100&PJSIP/101",
            "21",
        )
        assert result.side.set_vars["CALLTRACK_SOURCE"] == "Google Ads"
        # the number records: so does the fallback, to a file named by the call's key
        assert result.side.set_vars["CALLTRACK_RECORD"] == "1"
        assert result.side.set_vars["CALLTRACK_RECORDING_FILE"].endswith(f"/ct~asterisk~away{n}.wav")
    unknown = await server.call(linkedid="away-unknown", extension="8005559999")
    assert (unknown.status, unknown.side.set_vars["CALLTRACK_DIAL"]) == ("fallback", "PJSIP/operator")
    # back again: the server writes the spooled rows itself
    await point_stores_at(server.service, database_url)
    # a replay after the database is back writes them (the service's own, every 10 s, may come first: once all the same)
    await server.service.replay_spool()
    assert server.service.call_router.spool_.pending() == 0
    calls = {c.linkedid: c for c in world.calls()}
    assert set(calls) == {"ok", "away0", "away1", "away-unknown"}
    assert calls["away0"].route_status == "fallback"
    assert calls["away0"].source_id == acme["google"]
    assert (calls["away0"].recording_file or "").endswith("/ct~asterisk~away0.wav")  # the recorder links by it
    assert calls["away-unknown"].recording_file is None


def fallback_metrics() -> tuple[float, float, float]:
    """(fallback routes, fallbacks for an error, fallbacks for the deadline) counted for /metrics in this process."""
    from tracking.metrics import REGISTRY

    def value(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    return (
        value("calltrack_routes_total", {"status": "fallback"}),
        value("calltrack_route_fallbacks_total", {"cause": "error"}),
        value("calltrack_route_fallbacks_total", {"cause": "deadline"}),
    )


def grown(before: tuple[float, ...], after: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(b - a for a, b in zip(before, after, strict=True))


class Lock:
    """Holds the calls table's write lock from another connection: the route's write waits."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.conn: Any = None

    def take(self) -> None:
        if self.url.startswith("sqlite"):
            import sqlite3

            self.conn = sqlite3.connect(self.url.split(":///", 1)[1], isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            self.conn = psycopg.connect(self.url.replace("+psycopg", ""))
            self.conn.execute("LOCK TABLE calls IN EXCLUSIVE MODE")

    def release(self) -> None:
        self.conn.rollback() if not self.url.startswith("sqlite") else self.conn.execute("ROLLBACK")
        self.conn.close()


async def test_slow_database_falls_back_within_the_deadline_and_the_row_follows(
    start_server: StartServer, world: World, acme: dict[str, int], agi_settings: Settings, database_url: str
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100", ring_timeout=22)
    slow = agi_settings.replace(
        agi=dataclasses.replace(agi_settings.agi, db_deadline_ms=1000),  # the lookup fits; the write waits for the lock
        database=DatabaseSettings(url=database_url, connect_timeout=30),
    )
    running = await start_server(slow)
    lock = Lock(database_url)
    lock.take()
    before = fallback_metrics()
    try:
        result = await running.call(linkedid="slow")
    finally:
        lock.release()
    got = result.side.set_vars
    assert got["CALLTRACK_STATUS"] == "fallback"
    assert grown(before, fallback_metrics()) == (1, 0, 1)  # /metrics: a fallback for the deadline
    assert (got["CALLTRACK_DIAL"], got["CALLTRACK_DIAL_TIMEOUT"]) == ("PJSIP/100", "22")  # the number's own
    assert got["CALLTRACK_CALL_ID"] == ""
    # the number records: without a call id the file is named by the call's key (issue 9, items 14 and 15)
    file = str(agi_settings.recorder.spool_dir / "ct~asterisk~slow.wav")
    assert (got["CALLTRACK_RECORD"], got["CALLTRACK_RECORDING_FILE"]) == ("1", file)
    # the write went on after the answer; the row says what Asterisk was told
    assert await wait_for(lambda: [c.route_status for c in world.calls()] == ["fallback"])
    [call] = world.calls()
    assert (call.linkedid, call.dial, call.recording_file) == ("slow", "PJSIP/100", file)


@pytest.mark.parametrize(
    ("values", "problem"),
    [({"forward_to": "PJSIP/100,tT"}, "Asterisk would misread"), ({"whisper": "../../etc/passwd"}, "whisper")],
)
async def test_an_unsafe_destination_in_the_database_is_never_dialled(
    server: Running,
    world: World,
    acme: dict[str, int],
    values: dict[str, str],
    problem: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # written straight to the database, past the CLI's checks
    world.number(acme["account"], "+18005550100", source_id=acme["google"], **values)
    with caplog.at_level(logging.WARNING):
        result = await server.call()
    got = result.side.set_vars
    assert (got["CALLTRACK_STATUS"], got["CALLTRACK_DIAL"], got["CALLTRACK_WHISPER"]) == (
        "fallback",
        "PJSIP/operator",
        "",
    )
    assert problem in caplog.text
    assert world.calls()[0].route_status == "fallback"


async def test_an_asterisk_without_channel_linkedid_keys_the_call_by_uniqueid(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    peer = server.peer(linkedid=None)
    peer.side.variables["CHANNEL(linkedid)"] = ""
    # an old Asterisk answers the function with a usage error
    original = peer.side.respond

    def respond(line: str) -> bytes:
        if line.startswith("GET VARIABLE CHANNEL"):
            peer.side.commands.append(line)
            return b"520-Invalid command syntax.  Proper usage follows:\n520 End of proper usage.\n"
        return original(line)

    peer.side.respond = respond  # type: ignore[method-assign]
    result = await peer.session(uniqueid="1795915131.13")
    assert result.status == "ok"
    assert world.calls()[0].linkedid == "1795915131.13"


async def test_a_slow_inline_sqlite_hands_the_calls_to_the_thread(
    start_server: StartServer,
    world: World,
    acme: dict[str, int],
    agi_settings: Settings,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    running = await start_server()
    handler = running.service.router.get("route")
    assert isinstance(handler, RouteHandler)
    if not database_url.startswith("sqlite"):
        # PostgreSQL is a network round trip: never on the event loop
        assert handler.inline is None
        assert (await running.call()).status == "ok"
        return
    assert handler.inline is not None
    handler.inline_slow = 0.0  # every inline call counts as slow
    used: list[object] = []
    original = handler.router.try_inline
    handler.router.try_inline = lambda *a: used.append(a) or original(*a)  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING):
        first = [await running.call(linkedid=f"a{n}") for n in range(2)]
        assert "routing on the database thread" not in caplog.text  # two slow calls are not enough
        third = await running.call(linkedid="a2")
        assert "routing on the database thread" in caplog.text
        after = await running.call(linkedid="b")
    assert [r.status for r in (*first, third, after)] == ["ok"] * 4
    assert len(used) == 3  # the call after the third slow one went to the thread
    assert {c.linkedid for c in world.calls()} == {"a0", "a1", "a2", "b"}


def test_spool_appends_from_many_processes_while_replaying_lose_nothing(
    database_url: str, tmp_path: Path, world: World
) -> None:
    """Classic AGI processes append while the server replays: every row reaches the database once."""
    import multiprocessing

    folder = tmp_path / "spool"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_spool_writer, args=(str(folder), w, 40)) for w in range(3)]
    for proc in procs:
        proc.start()
    spool = CallSpool(folder)
    store = RouteStore(database_url)
    written = 0
    try:
        while any(p.is_alive() for p in procs):
            written += spool.replay(store)
        for proc in procs:
            proc.join()
        written += spool.replay(store)
    finally:
        store.close()
    assert written == 120
    assert len(world.calls()) == 120
    assert spool.pending() == 0


def test_two_replays_at_once_write_each_row_once_and_neither_fails(
    database_url: str, tmp_path: Path, world: World
) -> None:
    """The server's replay and `calltrack agi replay` (another process: its own CallSpool) at the same moment.

    The first replay is held inside its first database write until the second has had every chance
    to run (up to 2 s): the second must wait for the first, not write the rows moved aside a
    second time and then fail to delete their file.
    """
    import threading

    folder = tmp_path / "spool"
    server_side, cli_side = CallSpool(folder), CallSpool(folder)
    for n in range(3):
        server_side.append("asterisk", f"r{n}", {"route_status": "fallback", "dial": "PJSIP/operator"})
    inside, second_done = threading.Event(), threading.Event()
    held, free = RouteStore(database_url), RouteStore(database_url)
    save = held.save_call

    def slow_save(*args: Any, **kwargs: Any) -> Any:
        if not inside.is_set():
            inside.set()
            second_done.wait(2.0)
        return save(*args, **kwargs)

    held.save_call = slow_save  # type: ignore[method-assign]
    results: dict[str, object] = {}

    def run(name: str, spool: CallSpool, store: RouteStore, after: threading.Event | None) -> None:
        if after is not None:
            after.wait(10)
        try:
            results[name] = spool.replay(store)
        except Exception as exc:  # the failure is what this test looks for
            results[name] = exc
        if name == "cli":
            second_done.set()

    threads = [
        threading.Thread(target=run, args=("server", server_side, held, None)),
        threading.Thread(target=run, args=("cli", cli_side, free, inside)),
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        held.close()
        free.close()
    assert results == {"server": 3, "cli": 0}
    assert sorted(c.linkedid for c in world.calls()) == ["r0", "r1", "r2"]
    assert server_side.pending() == 0


def _spool_writer(folder: str, worker: int, count: int) -> None:
    spool = CallSpool(Path(folder))
    for n in range(count):
        spool.append("asterisk", f"w{worker}-{n}", {"route_status": "fallback", "dial": "PJSIP/operator"})


async def test_withheld_callers_can_be_blocked(server: Running, world: World, acme: dict[str, int]) -> None:
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    world.block("anonymous", acme["account"])  # as `tracking.caller_lists` stores it
    assert (await server.call(callerid="Anonymous", linkedid="a")).status == "blocked"
    assert (await server.call(callerid="+14045551234", linkedid="b")).status == "ok"


@pytest.mark.parametrize("linkedid", ["pbx1-1795915078.0", "my call, #1", "a" * 149 + ";2", 'q"\\|x=&y'])
async def test_any_linkedid_asterisk_can_make_is_the_call_key_without_asking_again(
    server: Running, world: World, acme: dict[str, int], linkedid: str
) -> None:
    """Originate ChannelId=... allows any text up to 149 characters (manager.c), ";2" added for a Local channel."""
    world.number(acme["account"], "+18005550100", source_id=acme["google"])
    result = await server.peer().dialplan(linkedid=linkedid)
    assert result.status == "ok"
    assert not any(c.startswith("GET") for c in result.side.commands)
    assert world.calls()[0].linkedid == linkedid  # whole: the column is as long as Asterisk's (migration 0004)


async def test_the_server_warms_up_before_it_accepts_calls(
    agi_settings: Settings, world: World, acme: dict[str, int], database_url: str, tmp_path: Path
) -> None:
    """Issue 9, item 14: a burst right after a start finds the cache, connections and imports ready."""
    import threading

    from asterisk_agi.service import db_threads

    world.number(acme["account"], "+18005550100", source_id=acme["google"], forward_to="PJSIP/100", record=True)
    service = AgiService(agi_settings, stats_every=3600)
    entered, gate = threading.Event(), threading.Event()
    warm = service.call_router.warm

    def held_warm() -> int:
        entered.set()
        gate.wait(10)
        return warm()

    service.call_router.warm = held_warm  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        assert await wait_for(entered.is_set)
        assert not service.started.is_set() and service.address is None  # not accepting while cold
        gate.set()
        await asyncio.wait_for(service.started.wait(), 10)
        assert service.call_router._numbers
        assert len(service.store._all) == db_threads(agi_settings)  # a connection in every database thread
        # the database goes away at once: the first call still rings the number and records
        await point_stores_at(service, unreachable(database_url, tmp_path))
        assert service.address is not None
        result = await FakeFastAGIPeer(*service.address).dialplan(linkedid="first")
        got = result.side.set_vars
        assert (got["CALLTRACK_STATUS"], got["CALLTRACK_DIAL"], got["CALLTRACK_RECORD"]) == (
            "fallback",
            "PJSIP/100",
            "1",
        )
        assert got["CALLTRACK_RECORDING_FILE"] == str(agi_settings.recorder.spool_dir / "ct~asterisk~first.wav")
    finally:
        gate.set()
        stop.set()
        await asyncio.wait_for(task, 30)
