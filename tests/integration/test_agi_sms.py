"""The FastAGI `sms` handler end to end: Asterisk's Message channel played from the recorded PJSIP
sessions (tests/fixtures/asterisk/pjsip/fastagi-*-sms-*) against the real server and database,
on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from asterisk_agi.service import AgiService
from config import AgiSettings, RecorderSettings, Settings, SmsSettings
from schema.models import (
    Account,
    Call,
    CallerListEntry,
    NumberPool,
    OutboxEvent,
    PoolLease,
    SmsMessage,
    SmsOptOut,
    Source,
    TrackingNumber,
    VisitorSession,
    WebhookEndpoint,
)
from tests.fakes.fastagi_peer import FakeFastAGIPeer, PeerResult
from tests.fakes.message_channel import message_env, recorded_text, text_variables

NOW = dt.datetime.now(dt.UTC)
TRACKING = "+18005550100"
JANE = "+14045551234"


@dataclass
class World:
    factory: sessionmaker[Session]

    def account(self, name: str = "Acme", **values: Any) -> int:
        with self.factory.begin() as s:
            acct = Account(name=name, timezone="America/New_York", public_key=f"pk-{name}", **values)
            s.add(acct)
            s.flush()
            return acct.id

    def source(self, account_id: int, name: str) -> int:
        with self.factory.begin() as s:
            src = Source(account_id=account_id, name=name)
            s.add(src)
            s.flush()
            return src.id

    def number(self, account_id: int, number: str = TRACKING, **values: Any) -> int:
        values.setdefault("forward_to", "PJSIP/100")
        with self.factory.begin() as s:
            tn = TrackingNumber(number=number, account_id=account_id, **values)
            s.add(tn)
            s.flush()
            return tn.id

    def texts(self) -> list[SmsMessage]:
        with self.factory() as s:
            return list(s.scalars(select(SmsMessage).order_by(SmsMessage.id)))

    def opt_outs(self) -> list[tuple[int, str]]:
        with self.factory() as s:
            return [(o.account_id, o.number) for o in s.scalars(select(SmsOptOut).order_by(SmsOptOut.id))]


@pytest.fixture(name="world")
def world_fixture(session_factory: sessionmaker[Session]) -> World:
    return World(session_factory)


@pytest.fixture(name="sms_settings")
def sms_settings_fixture(settings: Settings, tmp_path: Path) -> Settings:
    return settings.replace(
        agi=AgiSettings(listen="127.0.0.1:0", fallback_dial="PJSIP/operator", read_timeout=5.0, db_deadline_ms=5000),
        recorder=RecorderSettings(spool_dir=tmp_path / "monitor"),
        sms=SmsSettings(trunk="carrier", domain="pbx.example.com", fallback_destination="pjsip:reception"),
    )


@dataclass
class Running:
    service: AgiService
    host: str
    port: int

    async def text(self, variables: dict[str, str], env: bytes | None = None, **kwargs: Any) -> PeerResult:
        peer = FakeFastAGIPeer(self.host, self.port, linkedid=None, variables=variables, **kwargs)
        return await peer.session(env if env is not None else message_env(), uniqueid="1796175659.12")

    async def recorded(self, scenario: str) -> PeerResult:
        rec = recorded_text(scenario)
        return await self.text(rec.variables, rec.env)


@pytest.fixture(name="start_server")
async def start_server_fixture(sms_settings: Settings) -> AsyncIterator[Callable[..., Any]]:
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(settings: Settings | None = None) -> Running:
        service = AgiService(settings or sms_settings, stats_every=3600)
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
async def server_fixture(start_server: Callable[..., Any]) -> Running:
    return await start_server()


@pytest.fixture(name="acme")
def acme_fixture(world: World) -> dict[str, int]:
    account = world.account("Acme")
    google = world.source(account, "Google Ads")
    number = world.number(account, source_id=google, sms_forward_to="pjsip:agent100")
    return {"account": account, "google": google, "number": number}


def reply_of(result: PeerResult) -> str:
    encoded = result.side.set_vars.get("CALLTRACK_SMS_REPLY", "")
    return base64.b64decode(encoded).decode("utf-8") if encoded else ""


# --- the recorded texts -----------------------------------------------------------------------


async def test_recorded_text_with_crlf_quotes_and_emoji_is_stored_attributed_and_forwarded(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    result = await server.recorded("sms-in")

    assert result.closed_by_server
    [text] = world.texts()
    assert text.body == 'Hi from Zoë – café 😀 "quoted", comma, semi;colon\r\nsecond line after newline'
    assert text.direction == "in"
    assert (text.from_number, text.to_number, text.sender_name) == (JANE, TRACKING, "Jane Doe")
    assert text.message_id == "1-23024@127.0.0.1"
    assert text.system == "asterisk"
    assert (text.account_id, text.tracking_number_id, text.source_id) == (
        acme["account"],
        acme["number"],
        acme["google"],
    )
    assert text.first_time is True and text.status == "received" and text.keyword is None
    assert text.content_length == 84 and not text.body_dropped
    got = result.side.set_vars
    assert got["CALLTRACK_SMS_STATUS"] == "ok"
    assert got["CALLTRACK_SMS_ID"] == str(text.id)
    assert got["CALLTRACK_SMS_DEST"] == "pjsip:agent100" == text.forwarded_to
    # built, never copied: the business sees the sender's name and number, nothing the dialplan misreads
    assert got["CALLTRACK_SMS_FROM"] == '"Jane Doe" <sip:+14045551234@pbx.example.com>'
    assert got["CALLTRACK_SMS_SOURCE"] == "Google Ads"
    assert got["CALLTRACK_SMS_REPLY"] == ""
    # one read before the answers: the body's reply spans two lines, its end is the session's marker
    reads = [c for c in result.side.commands if not c.startswith("SET VARIABLE ")]
    assert len(reads) == 1 and reads[0].startswith('GET FULL VARIABLE "calltrack-sync-')
    assert reads[0].endswith('-end"') and "${MESSAGE(body)}" in reads[0]


@pytest.mark.parametrize(
    "body",
    [
        "Thanks :) see you at 5: bye",  # ${BASE64_ENCODE(${MESSAGE(body)})} cuts this at "5" (pbx_variables.c)
        "a\nb\r\nc\n",
        "line one)\n200 result=1 (x)\n",
        "",
    ],
)
async def test_any_body_is_stored_exactly(server: Running, world: World, acme: dict[str, int], body: str) -> None:
    await server.text(text_variables(body, call_id="exact-1"))

    [text] = world.texts()
    assert text.body == body


async def test_a_header_looking_second_line_stays_in_the_body(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    result = await server.recorded("sms-in-newline")

    [text] = world.texts()
    assert text.body == "Zeile eins äöü 😀 no commas here\r\nInjected: header-looking second line"
    assert result.side.set_vars["CALLTRACK_SMS_STATUS"] == "ok"
    assert "Injected" not in result.side.set_vars  # no variable of the text's making
    assert set(result.side.set_vars) == {
        "CALLTRACK_SMS_STATUS",
        "CALLTRACK_SMS_ID",
        "CALLTRACK_SMS_DEST",
        "CALLTRACK_SMS_FROM",
        "CALLTRACK_SMS_SOURCE",
        "CALLTRACK_SMS_REPLY",
        "CALLTRACK_SMS_REPLY_TO",
        "CALLTRACK_SMS_REPLY_FROM",
    }


async def test_a_1023_byte_body_arrives_whole(server: Running, world: World, acme: dict[str, int]) -> None:
    await server.recorded("sms-in-1023bytes")

    [text] = world.texts()
    assert len(text.body.encode()) == 1021 and text.body.startswith("B1021-")
    assert text.content_length == 1023 and not text.body_dropped


async def test_a_long_text_that_asterisk_emptied_is_recorded_as_dropped(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    result = await server.recorded("sms-in-long")

    [text] = world.texts()
    assert text.body == "" and text.body_dropped is True and text.content_length == 1287
    assert result.side.set_vars["CALLTRACK_SMS_DEST"] == "pjsip:agent100"  # still forwarded (empty, as Asterisk has it)


async def test_the_same_message_id_twice_stores_one_text(server: Running, world: World, acme: dict[str, int]) -> None:
    first = await server.recorded("sms-in")
    again = await server.recorded("sms-in")

    [text] = world.texts()
    assert first.side.set_vars["CALLTRACK_SMS_ID"] == again.side.set_vars["CALLTRACK_SMS_ID"] == str(text.id)
    assert again.side.set_vars["CALLTRACK_SMS_DEST"] == "pjsip:agent100"


async def test_utf8_and_escapes_of_the_raw_from_make_the_sender_name(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    # MESSAGE(from) turns the UTF-8 bytes into spaces; MESSAGE_DATA(From) keeps the header as sent
    raw = '"Zoë \\"JJ\\" O\'Brien \\\\ x" <sip:+14045551234@127.0.0.1>;tag=23104SIPpTag091'
    variables = text_variables("hello", raw_from=raw)
    variables["MESSAGE(from)"] = '"Zo   \\"JJ\\" O\'Brien \\\\ x" <sip:+14045551234@127.0.0.1>'
    result = await server.text(variables)

    [text] = world.texts()
    assert text.sender_name == 'Zoë "JJ" O\'Brien \\ x'
    # no quote, backslash or comma reaches MessageSend()'s arguments
    assert result.side.set_vars["CALLTRACK_SMS_FROM"] == '"Zoë JJ O\'Brien x" <sip:+14045551234@pbx.example.com>'


# --- nothing in a text changes what the handler does --------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '")\nSET VARIABLE CALLTRACK_SMS_DEST "pjsip:attacker',
        "200 result=1 (pjsip:attacker)\nHANGUP\n",
        "${SHELL(rm -rf /)}|calltrack-sync-0|x",
        # a guess at the end marker, and a whole fake reply after it
        "x|calltrack-sync-0123456789abcdef01234567-end)\n200 result=1 (calltrack-sync-0|pjsip:attacker|calltrack-sync-0-end)",
        "x)\nSET VARIABLE CALLTRACK_SMS_DEST pjsip:attacker\n",
        "\r\n\r\nAction: Originate\r\nChannel: PJSIP/attacker\r\n\r\n",
    ],
)
async def test_a_body_cannot_inject_commands_or_variables(
    server: Running, world: World, acme: dict[str, int], body: str
) -> None:
    result = await server.text(text_variables(body, call_id=f"inj-{abs(hash(body))}"))

    [text] = world.texts()
    assert text.body == body
    got = result.side.set_vars
    assert got["CALLTRACK_SMS_DEST"] == "pjsip:agent100"
    assert got["CALLTRACK_SMS_STATUS"] == "ok"
    assert all(
        not c.upper().startswith("SET VARIABLE") or c.split()[2].startswith("CALLTRACK_SMS_")
        for c in result.side.commands
    )


async def test_a_from_with_bars_parentheses_and_colons_is_read_whole(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    # what ${BASE64_ENCODE(...)} would cut (an unbalanced ")" then ":") and what splits a "|" list
    raw = '"Dr. (Jane) | Doe: 100% :) x" <sip:+14045551234@127.0.0.1>;tag=1'
    await server.text(text_variables("hello", raw_from=raw))

    [text] = world.texts()
    assert text.sender_name == "Dr. (Jane) | Doe: 100% :) x" and text.from_number == JANE


async def test_a_sender_cannot_inject_through_the_from(server: Running, world: World, acme: dict[str, int]) -> None:
    raw = '"Eve,pjsip:attacker\\"\\\\" <sip:+14045551234,pjsip:x@127.0.0.1>;tag=1'
    result = await server.text(text_variables("hi", raw_from=raw))

    got = result.side.set_vars["CALLTRACK_SMS_FROM"]
    assert "," not in got and "\\" not in got and got.count('"') == 2
    assert got.endswith("<sip:+14045551234@pbx.example.com>")


# --- attribution like a call ----------------------------------------------------------------------


async def test_a_text_to_a_pool_number_gets_the_visit_whose_lease_covers_it(
    server: Running, world: World, session_factory: sessionmaker[Session]
) -> None:
    account = world.account("Acme")
    ads = world.source(account, "Google Ads")
    organic = world.source(account, "Organic")
    with session_factory.begin() as s:
        pool = NumberPool(account_id=account, name="site", source_id=organic, hold_minutes=30)
        s.add(pool)
        s.flush()
        tn = TrackingNumber(number=TRACKING, account_id=account, pool_id=pool.id, forward_to="PJSIP/100")
        s.add(tn)
        s.flush()
        old = VisitorSession(key="old", account_id=account, source_id=organic, started_at=NOW - dt.timedelta(hours=3))
        live = VisitorSession(key="live", account_id=account, source_id=ads, started_at=NOW - dt.timedelta(minutes=5))
        s.add_all([old, live])
        s.flush()
        s.add(
            PoolLease(
                pool_id=pool.id,
                number_id=tn.id,
                session_id=old.id,
                leased_at=NOW - dt.timedelta(hours=3),
                expires_at=NOW - dt.timedelta(hours=2),
            )
        )
        s.add(
            PoolLease(
                pool_id=pool.id,
                number_id=tn.id,
                session_id=live.id,
                leased_at=NOW - dt.timedelta(minutes=5),
                expires_at=NOW + dt.timedelta(minutes=25),
            )
        )
        live_id, pool_id = live.id, pool.id

    result = await server.recorded("sms-in")

    [text] = world.texts()
    assert text.visitor_session_id == live_id and text.source_id == ads
    assert result.side.set_vars["CALLTRACK_SMS_SOURCE"] == "Google Ads"
    # a pool number without a text destination: the one endpoint its calls ring
    assert result.side.set_vars["CALLTRACK_SMS_DEST"] == "pjsip:100"
    assert pool_id


async def test_first_time_contact_counts_calls_and_texts(
    server: Running, world: World, acme: dict[str, int], session_factory: sessionmaker[Session]
) -> None:
    await server.text(text_variables("one", call_id="a-1"))
    await server.text(text_variables("two", call_id="a-2"))
    await server.text(text_variables("three", call_id="a-3", sender="+14045550000"))
    with session_factory.begin() as s:
        s.add(Call(system="asterisk", linkedid="x.1", account_id=acme["account"], caller_number="+14045559999"))
    await server.text(text_variables("after a call", call_id="a-4", sender="+14045559999"))

    assert [t.first_time for t in world.texts()] == [True, False, True, False]


async def test_a_blocked_sender_is_stored_as_blocked_and_not_forwarded(
    server: Running, world: World, acme: dict[str, int], session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as s:
        s.add(CallerListEntry(account_id=acme["account"], number=JANE, kind="blocked"))
    result = await server.recorded("sms-in")

    [text] = world.texts()
    assert text.status == "blocked" and text.forwarded_to is None and text.first_time is None
    assert result.side.set_vars["CALLTRACK_SMS_STATUS"] == "blocked"
    assert result.side.set_vars["CALLTRACK_SMS_DEST"] == ""


async def test_a_do_not_track_sender_is_forwarded_but_nothing_about_them_is_kept(
    server: Running, world: World, acme: dict[str, int], session_factory: sessionmaker[Session]
) -> None:
    with session_factory.begin() as s:
        s.add(CallerListEntry(account_id=None, number=JANE, kind="do-not-track"))
        s.add(
            WebhookEndpoint(
                account_id=acme["account"], url="https://hooks.example/x", events=",sms.received,", secret="s" * 32
            )
        )
    result = await server.recorded("sms-in")

    [text] = world.texts()
    assert text.from_number is None and text.sender_name is None and text.body == "" and text.do_not_track
    assert text.source_id == acme["google"]
    assert result.side.set_vars["CALLTRACK_SMS_DEST"] == "pjsip:agent100"
    assert result.side.set_vars["CALLTRACK_SMS_FROM"] == '"+14045551234" <sip:+14045551234@pbx.example.com>'
    with session_factory() as s:
        assert list(s.scalars(select(OutboxEvent))) == []


async def test_a_received_text_is_announced_once_to_a_subscribed_endpoint(
    server: Running,
    world: World,
    acme: dict[str, int],
    session_factory: sessionmaker[Session],
    sms_settings: Settings,
) -> None:
    with session_factory.begin() as s:
        s.add(
            WebhookEndpoint(
                account_id=acme["account"], url="https://hooks.example/x", events=",sms.received,", secret="s" * 32
            )
        )
    await server.recorded("sms-in")
    await server.recorded("sms-in")

    [text] = world.texts()
    with session_factory() as s:
        [event] = list(s.scalars(select(OutboxEvent)))
    assert (event.type, event.sms_id, event.account_id) == ("sms.received", text.id, acme["account"])
    # rendered as receivers get it, valid against the published schema
    from tests.fakes.webhook_receiver import validator
    from tracking import outbox

    with session_factory.begin() as s:
        assert outbox.dispatch(s, sms_settings.webhooks) == 1
    with session_factory() as s:
        body = s.scalars(select(OutboxEvent.body)).one()
    assert body is not None
    payload = json.loads(body)
    validator().validate(payload)
    assert payload["type"] == "sms.received"
    got = payload["data"]["text"]
    assert got["body"] == text.body and got["from_number"] == JANE and got["first_time"] is True
    assert got["source"]["name"] == "Google Ads" and got["tracking_number"] == TRACKING


# --- fail open --------------------------------------------------------------------------------------


async def test_an_unknown_number_is_stored_and_forwarded_to_the_fallback(server: Running, world: World) -> None:
    result = await server.text(text_variables("hello", to="+18005550999"), message_env("+18005550999"))

    [text] = world.texts()
    assert text.account_id is None and text.to_number == "+18005550999"
    assert result.side.set_vars["CALLTRACK_SMS_STATUS"] == "unknown-number"
    assert result.side.set_vars["CALLTRACK_SMS_DEST"] == "pjsip:reception"


async def test_a_text_destination_that_is_a_number_goes_through_the_trunk(server: Running, world: World) -> None:
    account = world.account()
    world.number(account, source_id=world.source(account, "Ads"), sms_forward_to="+14045550199")
    result = await server.recorded("sms-in")

    assert result.side.set_vars["CALLTRACK_SMS_DEST"] == "pjsip:PJSIP/+14045550199@carrier"


async def test_when_the_database_is_away_the_text_is_forwarded_and_kept_for_later(
    start_server: Callable[..., Any], world: World, acme: dict[str, int], sms_settings: Settings, tmp_path: Path
) -> None:
    server = await start_server()
    # the threads' connections and, on SQLite, the event loop's own (texts are tried there first)
    stores = [s for s in (server.service.text_router.texts.store, server.service.inline) if s is not None]
    real_url = stores[0].url
    for broken in stores:
        broken.close()
        broken.url = "sqlite:///" + str(tmp_path / "missing" / "db.sqlite3")
        if broken.dialect == "postgresql":
            broken.url = "postgresql://nobody@127.0.0.1:1/none"
    result = await server.recorded("sms-in")

    assert result.side.set_vars["CALLTRACK_SMS_STATUS"] == "fallback"
    assert result.side.set_vars["CALLTRACK_SMS_DEST"] == "pjsip:reception"
    assert result.side.set_vars["CALLTRACK_SMS_FROM"] == '"Jane Doe" <sip:+14045551234@pbx.example.com>'
    assert world.texts() == []
    assert server.service.text_router.spool_.pending() == 1

    for broken in stores:
        broken.url = real_url
        broken.close()
    # A replay after the database is back stores it. The service's own replays (at start, which on a
    # loaded machine can still be running, and every 10 s) may store it first: once, all the same.
    await server.service.replay_spool()
    assert server.service.text_router.spool_.pending() == 0
    [text] = world.texts()
    assert text.body.startswith("Hi from Zoë") and text.message_id == "1-23024@127.0.0.1" and text.from_number == JANE


# --- STOP, START, HELP ----------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["STOP", "stop", " Stop. ", "STOPALL", "unsubscribe", "CANCEL", "End", "QUIT!"])
async def test_stop_and_its_variants_opt_the_sender_out_and_are_confirmed(
    server: Running, world: World, acme: dict[str, int], sms_settings: Settings, word: str
) -> None:
    result = await server.text(text_variables(word, call_id="stop-1"))

    assert world.opt_outs() == [(acme["account"], JANE)]
    [text] = world.texts()
    assert text.keyword == "stop" and text.body == word
    got = result.side.set_vars
    assert reply_of(result) == sms_settings.sms.stop_reply
    assert got["CALLTRACK_SMS_REPLY_TO"] == "pjsip:PJSIP/+14045551234@carrier"
    assert got["CALLTRACK_SMS_REPLY_FROM"] == '"+18005550100" <sip:+18005550100@pbx.example.com>'
    assert got["CALLTRACK_SMS_DEST"] == "pjsip:agent100"  # the business still sees it


async def test_start_opts_back_in_and_a_sentence_with_stop_is_no_keyword(
    server: Running, world: World, acme: dict[str, int], sms_settings: Settings
) -> None:
    await server.text(text_variables("STOP", call_id="s-1"))
    await server.text(text_variables("please stop calling me", call_id="s-2"))
    assert world.opt_outs() == [(acme["account"], JANE)]
    result = await server.text(text_variables("start", call_id="s-3"))

    assert world.opt_outs() == []
    assert reply_of(result) == sms_settings.sms.start_reply
    assert [t.keyword for t in world.texts()] == ["stop", None, "start"]


async def test_help_gets_the_accounts_help_text_else_the_default(
    server: Running, world: World, acme: dict[str, int], sms_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    first = await server.text(text_variables("HELP", call_id="h-1"))
    assert reply_of(first) == sms_settings.sms.help_text
    with session_factory.begin() as s:
        acct = s.get(Account, acme["account"])
        assert acct is not None
        acct.sms_help_text = "Acme Plumbing, 800-555-0100. Reply STOP to opt out."
    second = await server.text(text_variables("help", call_id="h-2"))
    assert reply_of(second) == "Acme Plumbing, 800-555-0100. Reply STOP to opt out."
    assert world.opt_outs() == []


async def test_a_repeated_stop_from_a_retried_agi_is_applied_once(
    server: Running, world: World, acme: dict[str, int]
) -> None:
    await server.text(text_variables("STOP", call_id="r-1"))
    await server.text(text_variables("START", call_id="r-2"))
    await server.text(text_variables("STOP", call_id="r-1"))  # the same message again: changes nothing

    assert world.opt_outs() == []
    assert len(world.texts()) == 2


# --- the classic script -----------------------------------------------------------------------------


def test_the_classic_script_stores_and_routes_a_recorded_text_like_the_fastagi_handler(
    world: World, acme: dict[str, int], database_url: str, tmp_path: Path
) -> None:
    import os
    import sys
    import textwrap

    from tests.fakes.fastagi_peer import AsteriskSide, run_classic

    config = tmp_path / "calltrack.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [general]
            data_dir = "{tmp_path / "data"}"
            [agi]
            # a new process opening the database on a loaded machine: its deadline is not under test here
            db_deadline_ms = 5000
            [sms]
            trunk = "carrier"
            domain = "pbx.example.com"
            """
        )
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLTRACK_")}
    environ.update({"CALLTRACK_CONFIG": str(config), "CALLTRACK_DATABASE_URL": database_url})
    rec = recorded_text("sms-in-newline")
    # Asterisk's classic environment: no agi_network lines, the script's path, the argument as argv
    lines = [line for line in rec.env.decode().split("\n") if line and not line.startswith(("agi_network", "agi_arg_"))]
    lines = [
        ("agi_request: /var/lib/asterisk/agi-bin/calltrack-agi" if x.startswith("agi_request") else x) for x in lines
    ]
    argv = ["sms?number=+18005550100"]
    env = ("\n".join([*lines, f"agi_arg_1: {argv[0]}"]) + "\n\n").encode()
    entry = Path(sys.executable).parent / "calltrack-agi"
    cmd = [str(entry)] if entry.exists() else [sys.executable, "-m", "asterisk_agi.classic"]
    side = AsteriskSide(dict(rec.variables))
    code, stderr = run_classic([*cmd, *argv], env, side, environ=environ)

    assert code == 0, stderr
    [text] = world.texts()
    assert text.body == "Zeile eins äöü 😀 no commas here\r\nInjected: header-looking second line"
    assert (text.from_number, text.source_id, text.system) == (JANE, acme["google"], "asterisk")
    assert side.set_vars["CALLTRACK_SMS_STATUS"] == "ok"
    assert side.set_vars["CALLTRACK_SMS_DEST"] == "pjsip:agent100"
    assert side.set_vars["CALLTRACK_SMS_FROM"] == '"Jane Doe" <sip:+14045551234@pbx.example.com>'
